// Runs a RoutedBatch through native experts in one `moe` call: its groups are
// the call list as they are (no regrouping, no mask copies). Shared by the
// in-process backend (coordinator/local-experts.ts) and the expert node.
import type { ExpertBatch, ExpertOutput } from './expert-backend';
import type { FfnMode, NativeBackend, NativeExpert } from './native';
import { routeCount } from './routed-batch';

/** Every group's expert must be found by `lookup` (a node checks what it holds before running). */
export async function runMoe(
  backend: NativeBackend,
  mode: FfnMode,
  hiddenSize: number,
  batch: ExpertBatch,
  lookup: (layer: number, expert: number) => NativeExpert | undefined,
): Promise<ExpertOutput> {
  const calls = batch.groups.map((g) => {
    const expert = lookup(batch.layer, g.expert);
    if (!expert) throw new Error(`runMoe: expert ${g.expert} of layer ${batch.layer} is not held here`);
    return { expert, rows: g.rows, weight: g.weights, masks: g.masks };
  });
  const out = new Float32Array(batch.nRows * hiddenSize);
  const active = new Int32Array(routeCount(batch.groups));
  await backend.moe(mode, batch.nRows, hiddenSize, batch.hidden, calls, out, active);
  return { out, active };
}
