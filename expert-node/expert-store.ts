// The experts one node holds: only its (layer, expert) pairs' w1/w2/w3, read
// from the model folder and uploaded into native experts. A request runs as one
// native `moe` call (through core/run-moe.ts, the same code path as the
// in-process backend), so a node computes exactly what `--experts local` does.
import type { ExpertBatch, ExpertOutput } from '../core/expert-backend';
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
   * Runs a decoded request (every group's expert held: the codec checked) in one
   * native moe call. `active` is per route in group order.
   */
  run(batch: ExpertBatch): Promise<ExpertOutput> {
    return runMoe(this.backend, this.mode, this.dims.hiddenSize, batch, (L, E) => this.experts.get(pairKey(L, E)));
  }

  close(): void {
    for (const e of this.experts.values()) e.free();
    this.experts.clear();
  }
}
