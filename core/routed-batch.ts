// The routed batch: one layer's token rows as the experts see them, grouped by
// expert. The predictor produces it (its masks are written straight into the
// groups), the local backend hands the groups to the native `moe` call as they
// are, the remote plan gives each node whole groups, the wire carries them in
// group order and the expert node decodes back into the same shape. One shape
// end to end: no regrouping, no mask copies between the predictor and a kernel.
//
// Per-route results (neurons computed) are in "group order": group 0's rows,
// then group 1's, ... — the order of ts_moe's `active` and of the wire's routes.

/** One expert's share of a layer. */
export interface ExpertGroup {
  /** Expert id within the layer. */
  expert: number;
  /** Token rows (indices into RoutedBatch.hidden) routed to this expert, ascending, each once. */
  rows: Int32Array;
  /** Renormalised routing weight of each row. */
  weights: Float32Array;
  /** Predictor mask of each row: [rows.length, maskRowBytes] bitsets of little-endian uint64 words. */
  masks: Uint8Array;
}

export interface RoutedBatch {
  layer: number;
  nRows: number;
  /** Post-attention-norm hidden rows, [nRows, hidden]. */
  hidden: Float32Array;
  /** Bytes per mask row (maskBytes(intermediate)). */
  maskRowBytes: number;
  /** Ascending expert id, each expert at most once. */
  groups: ExpertGroup[];
}

/** Routes in the batch: the length of a per-route result. */
export function routeCount(groups: readonly ExpertGroup[]): number {
  let n = 0;
  for (const g of groups) n += g.rows.length;
  return n;
}

/** Where each group's routes start in a per-route result (group order), plus the total at the end. */
export function routeOffsets(groups: readonly ExpertGroup[]): Int32Array {
  const off = new Int32Array(groups.length + 1);
  for (let i = 0; i < groups.length; i++) off[i + 1] = off[i] + groups[i].rows.length;
  return off;
}

/** Distinct token rows that some group routes (rows routed nowhere are not counted). */
export function routedRowCount(groups: readonly ExpertGroup[], nRows: number): number {
  const seen = new Uint8Array(nRows);
  let n = 0;
  for (const g of groups) for (const r of g.rows) if (!seen[r]) (seen[r] = 1), n++;
  return n;
}

/**
 * The one group-by-expert loop: the slots (row * topK + k) of [n, topK] expert
 * ids grouped by expert, ascending expert id, slots ascending (so rows ascend).
 * Negative ids (routed nowhere) are skipped.
 */
export function groupSlotsByExpert(experts: Int32Array): { expert: number; slots: Int32Array }[] {
  const counts = new Map<number, number>();
  for (const e of experts) if (e >= 0) counts.set(e, (counts.get(e) ?? 0) + 1);
  const ids = [...counts.keys()].sort((a, b) => a - b);
  const groups = ids.map((expert) => ({ expert, slots: new Int32Array(counts.get(expert)!) }));
  const at = new Map(ids.map((e, i) => [e, i]));
  const fill = new Int32Array(ids.length);
  for (let s = 0; s < experts.length; s++) {
    const e = experts[s];
    if (e < 0) continue;
    const i = at.get(e)!;
    groups[i].slots[fill[i]++] = s;
  }
  return groups;
}

/**
 * A RoutedBatch from slot-form routing ([nRows, topK] expert ids, weights and
 * mask rows), copying the masks: for tests and benches that draw random routing.
 * The forward pass never builds one this way (the predictor writes groups).
 */
export function routedBatchFromSlots(b: {
  layer: number; nRows: number; hidden: Float32Array; topK: number; experts: Int32Array; weights: Float32Array;
  masks: Uint8Array; maskRowBytes: number;
}): RoutedBatch {
  const { topK, maskRowBytes: R } = b;
  const groups = groupSlotsByExpert(b.experts).map(({ expert, slots }) => {
    const masks = new Uint8Array(slots.length * R);
    slots.forEach((s, j) => masks.set(b.masks.subarray(s * R, (s + 1) * R), j * R));
    return {
      expert,
      rows: Int32Array.from(slots, (s) => Math.floor(s / topK)),
      weights: Float32Array.from(slots, (s) => b.weights[s]),
      masks,
    };
  });
  return { layer: b.layer, nRows: b.nRows, hidden: b.hidden, maskRowBytes: R, groups };
}

/** Per-route values (group order) back in [n, topK] slot order, given each group's slots. */
export function scatterToSlots(perRoute: Int32Array, groupSlots: readonly Int32Array[], nSlots: number): Int32Array {
  const out = new Int32Array(nSlots);
  let j = 0;
  for (const slots of groupSlots) for (const s of slots) out[s] = perRoute[j++];
  return out;
}
