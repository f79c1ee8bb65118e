// The predictor box: where each token's active-neuron mask is made.
// For every routed (row, expert), fc2(relu(fc1 n)) > 0 gives the mask bits;
// rows are grouped by expert so each predictor runs once over its rows.
import { maskBytes, type NativeBackend, type NativePredictor, type PredictCall } from '../core/native';
import type { Routes } from './router';

export interface Masks {
  /** [n, topK, rowBytes] bitsets (little-endian uint64 words). */
  bytes: Uint8Array;
  rowBytes: number;
  /** [n, topK] predicted-active neuron counts. */
  counts: Int32Array;
}

export async function predictMasks(
  backend: NativeBackend,
  predictors: NativePredictor[],
  n: number,
  hidden: number,
  intermediate: number,
  x: Float32Array,
  routes: Routes,
): Promise<Masks> {
  const rowBytes = maskBytes(intermediate);
  const K = routes.topK;
  // Group (row, k) slots by expert, in expert order.
  const slotsByExpert = new Map<number, number[]>();
  for (let s = 0; s < n * K; s++) {
    const e = routes.experts[s];
    let list = slotsByExpert.get(e);
    if (!list) slotsByExpert.set(e, (list = []));
    list.push(s);
  }
  const calls: (PredictCall & { slots: number[] })[] = [];
  for (const e of [...slotsByExpert.keys()].sort((a, b) => a - b)) {
    const slots = slotsByExpert.get(e)!;
    calls.push({
      predictor: predictors[e],
      rows: Int32Array.from(slots, (s) => Math.floor(s / K)),
      masks: new Uint8Array(slots.length * rowBytes),
      counts: new Int32Array(slots.length),
      slots,
    });
  }
  await backend.predictMany(n, hidden, x, calls);
  const bytes = new Uint8Array(n * K * rowBytes);
  const counts = new Int32Array(n * K);
  for (const c of calls) {
    c.slots.forEach((s, j) => {
      bytes.set(c.masks.subarray(j * rowBytes, (j + 1) * rowBytes), s * rowBytes);
      counts[s] = c.counts![j];
    });
  }
  return { bytes, rowBytes, counts };
}
