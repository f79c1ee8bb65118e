// The node's FFN speed, measured once at start (Info's ffn_bytes_per_s, which
// placement divides a layer's active weight bytes by): a few of the node's own
// experts run through ExpertStore.run (the path requests take, --slowdown
// included) on one token each with ~15% of the neurons masked on, repeated
// for ~150 ms. Speed = weight bytes the sparse FFN read per second: gate and up
// rows of every masked neuron, down rows of those whose relus came out on
// (moe.cc skips the others).
import type { ExpertPair } from '../core/expert-spec';
import { maskBytes } from '../core/native';
import type { RoutedBatch } from '../core/routed-batch';
import type { ExpertStore } from './expert-store';
import { mulberry32 } from '../core/mulberry32';

export interface SelfBenchmarkOptions {
  /** Keep calling until this much time has passed (default 150 ms; at least one timed call). */
  budgetMs?: number;
  /** Experts of one layer run together, one token each (default 4: a few rows per call). */
  experts?: number;
  /** Fraction of neurons each mask has on (default 0.15, a typical predictor's). */
  activeFraction?: number;
  seed?: number;
}

export interface SelfBenchmarkResult {
  ffnBytesPerS: number;
  /** Timed calls (after one untimed warm-up call). */
  calls: number;
  /** Rows (tokens) per call. */
  rows: number;
  layer: number;
  /** Weight bytes read over all timed calls. */
  bytesRead: number;
  ms: number;
}

/** Measures the store's sparse FFN speed; a store that holds nothing measures 0. */
export async function selfBenchmark(store: ExpertStore, opts: SelfBenchmarkOptions = {}): Promise<SelfBenchmarkResult> {
  const budgetMs = opts.budgetMs ?? 150;
  const fraction = opts.activeFraction ?? 0.15;
  const chosen = pickExperts(store.pairs, opts.experts ?? 4);
  if (chosen.length === 0) return { ffnBytesPerS: 0, calls: 0, rows: 0, layer: -1, bytesRead: 0, ms: 0 };
  const { hiddenSize: H, intermediateSize: I } = store.dims;
  const layer = chosen[0].layer;
  const rand = mulberry32(opts.seed ?? 1);
  const R = maskBytes(I);
  const n = chosen.length;
  const hidden = Float32Array.from({ length: n * H }, () => rand() * 2 - 1);
  const groups = chosen.map((p, row) => {
    const masks = new Uint8Array(R);
    for (let i = 0; i < I; i++) if (rand() < fraction) masks[i >> 3] |= 1 << (i & 7);
    return { expert: p.expert, rows: Int32Array.of(row), weights: Float32Array.of(1), masks };
  });
  const batch: RoutedBatch = { layer, nRows: n, hidden, maskRowBytes: R, groups };
  // Bytes of one neuron's row in one of w1/w3/w2 as stored (i8's per-row scales included).
  const rowBytes = chosen.map((p) => store.pairBytes(p) / (3 * I));
  const masked = groups.map((g) => g.masks.reduce((s, b) => s + popcount8(b), 0));
  // --dense reads every row of the expert whatever the mask.
  const bytesOf = (active: Int32Array) => groups.reduce((s, _, j) =>
    s + (store.mode === 'dense' ? 3 * I : 2 * masked[j] + active[j]) * rowBytes[j], 0);

  await store.run(batch); // warm-up: scratch buffers, thread pool, caches
  let calls = 0;
  let bytesRead = 0;
  const t0 = process.hrtime.bigint();
  let ms = 0;
  do {
    const r = await store.run(batch);
    bytesRead += bytesOf(r.active);
    calls++;
    ms = Number(process.hrtime.bigint() - t0) / 1e6;
  } while (ms < budgetMs && calls < 10_000);
  return { ffnBytesPerS: ms > 0 ? bytesRead / (ms / 1000) : 0, calls, rows: n, layer, bytesRead, ms };
}

/** Up to `k` experts of the layer holding the most (ties: the lowest layer). */
function pickExperts(pairs: readonly ExpertPair[], k: number): ExpertPair[] {
  const byLayer = new Map<number, ExpertPair[]>();
  for (const p of pairs) {
    const list = byLayer.get(p.layer);
    if (list) list.push(p);
    else byLayer.set(p.layer, [p]);
  }
  let best: ExpertPair[] = [];
  for (const list of byLayer.values()) if (list.length > best.length) best = list;
  return best.slice(0, Math.max(1, k));
}

function popcount8(b: number): number {
  let n = 0;
  for (let x = b; x; x &= x - 1) n++;
  return n;
}

