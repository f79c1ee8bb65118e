// Runs an ExpertBatch through native experts in one `moe` call. Shared by the
// in-process backend (coordinator/local-experts.ts) and the expert node.
import type { ExpertBatch, ExpertOutput } from './expert-backend';
import type { ExpertCall, FfnMode, NativeBackend, NativeExpert } from './native';

/**
 * Groups the batch's (row, k) slots by expert (ascending id) and runs them.
 * Slots whose expert `lookup` does not return are skipped (another node holds them):
 * the output then holds the weighted sum over the experts found here.
 */
export async function runMoe(
  backend: NativeBackend,
  mode: FfnMode,
  hiddenSize: number,
  batch: ExpertBatch,
  lookup: (layer: number, expert: number) => NativeExpert | undefined,
): Promise<ExpertOutput> {
  const { nRows, topK, maskRowBytes } = batch;
  const slotsByExpert = new Map<number, number[]>();
  for (let s = 0; s < nRows * topK; s++) {
    const e = batch.experts[s];
    if (e < 0) continue; // not routed here
    let list = slotsByExpert.get(e);
    if (!list) slotsByExpert.set(e, (list = []));
    list.push(s);
  }
  const calls: ExpertCall[] = [];
  const slotOrder: number[] = [];
  for (const e of [...slotsByExpert.keys()].sort((a, b) => a - b)) {
    const expert = lookup(batch.layer, e);
    if (!expert) continue;
    const slots = slotsByExpert.get(e)!;
    const masks = new Uint8Array(slots.length * maskRowBytes);
    slots.forEach((s, j) => masks.set(batch.masks.subarray(s * maskRowBytes, (s + 1) * maskRowBytes), j * maskRowBytes));
    calls.push({
      expert,
      rows: Int32Array.from(slots, (s) => Math.floor(s / topK)),
      weight: Float32Array.from(slots, (s) => batch.weights[s]),
      masks,
    });
    slotOrder.push(...slots);
  }
  const out = new Float32Array(nRows * hiddenSize);
  const activeFlat = new Int32Array(slotOrder.length);
  await backend.moe(mode, nRows, hiddenSize, batch.hidden, calls, out, activeFlat);
  const active = new Int32Array(nRows * topK);
  slotOrder.forEach((s, j) => (active[s] = activeFlat[j]));
  return { out, active };
}
