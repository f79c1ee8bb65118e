// The predictor box: where each token's active-neuron mask is made.
// For every routed (row, expert), fc2(relu(fc1 n)) > 0 gives the mask bits.
// Rows are grouped by expert once, here; each predictor runs over its rows and
// writes its masks straight into the group the experts will run.
import { maskBytes, type NativeBackend, type NativePredictor } from '../core/native';
import { type ExpertGroup, groupSlotsByExpert } from '../core/routed-batch';
import type { Routes } from './router';

export interface PredictedGroups {
  /** Ascending expert id; rows ascending; masks filled by the predictors. */
  groups: ExpertGroup[];
  /** Each group's (row * topK + k) slots: per-route results back in router order (scatterToSlots). */
  slots: Int32Array[];
  rowBytes: number;
}

export async function predictGroups(
  backend: NativeBackend,
  predictors: NativePredictor[],
  n: number,
  hidden: number,
  intermediate: number,
  x: Float32Array,
  routes: Routes,
): Promise<PredictedGroups> {
  const rowBytes = maskBytes(intermediate);
  const K = routes.topK;
  const bySlots = groupSlotsByExpert(routes.experts);
  const groups = bySlots.map(({ expert, slots }) => ({
    expert,
    rows: Int32Array.from(slots, (s) => Math.floor(s / K)),
    weights: Float32Array.from(slots, (s) => routes.weights[s]),
    masks: new Uint8Array(slots.length * rowBytes),
  }));
  await backend.predictMany(n, hidden, x, groups.map((g) => ({ predictor: predictors[g.expert], rows: g.rows, masks: g.masks })));
  return { groups, slots: bySlots.map((g) => g.slots), rowBytes };
}
