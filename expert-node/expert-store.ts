// The experts one node holds: only its (layer, expert) pairs' w1/w2/w3, read
// from the model folder and uploaded into native experts. A request runs as one
// native `moe` call (through core/run-moe.ts, the same code path as the
// in-process backend), so a node computes exactly what `--experts local` does.
import type { ExpertBatch } from '../core/expert-backend';
import { type ExpertPair, formatExpertSpec, pairKey } from '../core/expert-spec';
import { names } from '../core/model-folder';
import { type FfnMode, type HostMatrix, type NativeBackend, type NativeExpert, type StoreDType, storeFor } from '../core/native';
import { runMoe } from '../core/run-moe';

/** Where weights come from (a ModelFolder satisfies it). */
export interface ExpertWeightSource {
  readMatrix(name: string, rows: number, cols: number): Promise<HostMatrix> | HostMatrix;
}

export interface ExpertStoreDims {
  hiddenSize: number;
  intermediateSize: number;
  numLayers: number;
  numExperts: number;
}

export interface ExpertStoreOptions {
  source: ExpertWeightSource;
  dims: ExpertStoreDims;
  pairs: ExpertPair[];
  backend: NativeBackend;
  /** Weight storage; 'auto' keeps the checkpoint's dtype (as `--weights auto` does locally). */
  weights: StoreDType | 'auto';
  mode?: FfnMode;
  /** After each pair is loaded (for a progress line). */
  onLoaded?: (done: number, total: number, pair: ExpertPair, bytesRead: number) => void;
}

/** One (token row, expert) to run: the node-side form of a wire Route. */
export interface StoreRoute {
  row: number;
  expert: number;
  weight: number;
}

export interface StoreResult {
  /** [nRows, hidden]: per row, sum over its routes of weight * expert(x). */
  out: Float32Array;
  /** Neurons computed per route, in route order. */
  active: Int32Array;
}

export class ExpertStore {
  readonly pairs: readonly ExpertPair[];
  readonly spec: string;
  /** The dtype weights are stored in ("bf16"; "f32/bf16" if the checkpoint mixes them under 'auto'). */
  readonly dtype: string;
  private readonly experts: Map<string, NativeExpert>;
  /** Experts held per layer. */
  private readonly layers: Map<number, number>;

  private constructor(
    readonly backend: NativeBackend,
    readonly dims: ExpertStoreDims,
    readonly mode: FfnMode,
    experts: Map<string, NativeExpert>,
    pairs: ExpertPair[],
    dtype: string,
  ) {
    this.experts = experts;
    this.pairs = pairs;
    this.spec = formatExpertSpec(pairs);
    this.dtype = dtype;
    this.layers = new Map();
    for (const p of pairs) this.layers.set(p.layer, (this.layers.get(p.layer) ?? 0) + 1);
  }

  /** Reads and uploads each pair in turn (one expert's host copy in memory at a time). */
  static async load(opts: ExpertStoreOptions): Promise<ExpertStore> {
    const { source, dims, backend } = opts;
    const H = dims.hiddenSize;
    const I = dims.intermediateSize;
    const experts = new Map<string, NativeExpert>();
    const dtypes = new Set<string>();
    try {
      let done = 0;
      for (const p of opts.pairs) {
        const w1 = await source.readMatrix(names.w1(p.layer, p.expert), I, H);
        const w3 = await source.readMatrix(names.w3(p.layer, p.expert), I, H);
        const w2 = await source.readMatrix(names.w2(p.layer, p.expert), H, I);
        const store = storeFor(opts.weights, [w1, w3, w2]);
        dtypes.add(store);
        experts.set(pairKey(p.layer, p.expert), await backend.createExpert(w1, w3, w2, store));
        opts.onLoaded?.(++done, opts.pairs.length, p, w1.data.byteLength + w2.data.byteLength + w3.data.byteLength);
      }
    } catch (e) {
      for (const x of experts.values()) x.free();
      throw e;
    }
    return new ExpertStore(backend, dims, opts.mode ?? 'sparse', experts, [...opts.pairs], [...dtypes].join('/'));
  }

  holdsLayer(layer: number): boolean {
    return this.layers.has(layer);
  }

  /** How many experts of `layer` this node holds. */
  expertsInLayer(layer: number): number {
    return this.layers.get(layer) ?? 0;
  }

  has(layer: number, expert: number): boolean {
    return this.experts.has(pairKey(layer, expert));
  }

  /**
   * Runs `routes` over `hidden` ([nRows, hidden]) in one native moe call.
   * `masks` holds one in-memory mask row (maskBytes(I)) per route, in route order.
   * Every route's (layer, expert) must be held (the server checks first).
   */
  async run(layer: number, nRows: number, hidden: Float32Array, routes: StoreRoute[], masks: Uint8Array,
    maskRowBytes: number): Promise<StoreResult> {
    // Lay routes out as an ExpertBatch: slot (row, j) for the j-th route of a row; unused slots are -1.
    const perRow = new Int32Array(nRows);
    for (const r of routes) perRow[r.row]++;
    let topK = 0;
    for (const c of perRow) topK = Math.max(topK, c);
    const experts = new Int32Array(nRows * topK).fill(-1);
    const weights = new Float32Array(nRows * topK);
    const batchMasks = new Uint8Array(nRows * topK * maskRowBytes);
    const slotOf = new Int32Array(routes.length);
    perRow.fill(0);
    routes.forEach((r, i) => {
      const slot = r.row * topK + perRow[r.row]++;
      slotOf[i] = slot;
      experts[slot] = r.expert;
      weights[slot] = r.weight;
      batchMasks.set(masks.subarray(i * maskRowBytes, (i + 1) * maskRowBytes), slot * maskRowBytes);
    });
    const batch: ExpertBatch = { layer, nRows, hidden, topK, experts, weights, masks: batchMasks, maskRowBytes };
    const { out, active } = await runMoe(this.backend, this.mode, this.dims.hiddenSize, batch,
      (L, E) => this.experts.get(pairKey(L, E)));
    return { out, active: Int32Array.from(slotOf, (s) => active[s]) };
  }

  close(): void {
    for (const e of this.experts.values()) e.free();
    this.experts.clear();
  }
}
