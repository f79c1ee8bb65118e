// The experts one node holds: only its (layer, expert) pairs' w1/w2/w3, read
// from the model folder and uploaded into native experts. A request runs as one
// native `moe` call (through core/run-moe.ts, the same code path as the
// in-process backend), so a node computes exactly what `--experts local` does.
//
// The set changes at run time (LoadExperts / UnloadExperts, server.ts): add()
// uploads pairs and makes them held in one step; retire() stops holding pairs at
// once (requests decoded after it are refused) but keeps their native memory
// until free(), which the server calls once the requests already queued have run.
import type { ExpertBatch, ExpertOutput } from '../core/expert-backend';
import { type ExpertPair, formatExpertSpec, uniquePairs } from '../core/expert-spec';
import { names } from '../core/model-folder';
import { type FfnMode, type HostMatrix, type NativeBackend, type NativeExpert, type StoreDType, storeFor } from '../core/native';
import { runMoe } from '../core/run-moe';
import { expertBytes } from '../core/shard-map';

/** Where weights come from (a ModelFolder satisfies it). */
export interface ExpertWeightSource {
  readMatrix(name: string, rows: number, cols: number): Promise<HostMatrix> | HostMatrix;
  /** A tensor's dtype without reading it (for the bytes a pair will take before loading it). */
  info?(name: string): { dtype: string } | undefined;
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
  /**
   * Mixed-speed emulation (`--slowdown F`, benchmarks only): after each compute, wait (F - 1) x its time,
   * so the node answers as a node F times slower would. Default 1.
   */
  slowdown?: number;
  /** After each pair is loaded (for a progress line). */
  onLoaded?: (done: number, total: number, pair: ExpertPair, bytesRead: number) => void;
}

const STORE_DTYPES: readonly string[] = ['f32', 'f16', 'bf16', 'i8'] satisfies StoreDType[];

export class ExpertStore {
  readonly mode: FfnMode;
  readonly slowdown: number;
  /** Every native expert not yet freed: the held ones and retired ones still in use by queued requests. */
  private readonly experts = new Map<number, NativeExpert>();
  /** The pairs served: what requests are checked against and Info lists. */
  private readonly held = new Map<number, ExpertPair>();
  /** Experts held per layer. */
  private readonly layers = new Map<number, number>();
  private readonly dtypes = new Set<string>();
  private sortedPairs: ExpertPair[] = [];
  /** --slowdown: wait time owed to computes so far (negative: overslept). */
  private owedMs = 0;

  private constructor(
    readonly backend: NativeBackend,
    readonly dims: ExpertStoreDims,
    private readonly source: ExpertWeightSource,
    private readonly weights: StoreDType | 'auto',
    mode: FfnMode,
    slowdown: number,
  ) {
    this.mode = mode;
    this.slowdown = slowdown;
  }

  /** Reads and uploads each pair in turn (one expert's host copy in memory at a time). */
  static async load(opts: ExpertStoreOptions): Promise<ExpertStore> {
    const store = new ExpertStore(opts.backend, opts.dims, opts.source, opts.weights, opts.mode ?? 'sparse', opts.slowdown ?? 1);
    const loaded = await store.upload(uniquePairs(opts.pairs), opts.onLoaded);
    store.commit(loaded);
    return store;
  }

  /** The pairs held, sorted by (layer, expert). */
  get pairs(): readonly ExpertPair[] {
    return this.sortedPairs;
  }

  /** The held pairs as an --experts SPEC. */
  get spec(): string {
    return formatExpertSpec(this.sortedPairs);
  }

  /** The dtype weights are stored in ("bf16"; "f32/bf16" if the checkpoint mixes them under 'auto'). */
  get dtype(): string {
    return [...this.dtypes].join('/');
  }

  /** Native bytes of every expert not yet freed. */
  get weightBytes(): number {
    return this.backend.weightBytes();
  }

  holdsLayer(layer: number): boolean {
    return this.layers.has(layer);
  }

  /** A pair's key in the maps: a number, not an "L:E" string (requests look pairs up per route); -1 outside the model. */
  private slot(layer: number, expert: number): number {
    const { numLayers, numExperts } = this.dims;
    return layer >= 0 && layer < numLayers && expert >= 0 && expert < numExperts ? layer * numExperts + expert : -1;
  }

  /** How many experts of `layer` this node holds. */
  expertsInLayer(layer: number): number {
    return this.layers.get(layer) ?? 0;
  }

  has(layer: number, expert: number): boolean {
    return this.held.has(this.slot(layer, expert));
  }

  /** The stored bytes `pair` takes once loaded (its dtype read from the source's header when it can tell). */
  pairBytes(pair: ExpertPair): number {
    return pairStoredBytes(this.source, this.dims, this.weights, pair);
  }

  /**
   * Uploads the pairs not held yet and then holds all of them at once (a request
   * decoded before sees none of them, one decoded after sees all). `cancelled` is
   * asked between pairs: when it says so, or a read fails, whatever was uploaded is
   * freed and nothing changes. Returns the pairs newly held.
   */
  async add(pairs: readonly ExpertPair[], cancelled: () => boolean = () => false): Promise<ExpertPair[]> {
    const fresh = uniquePairs(pairs).filter((p) => !this.has(p.layer, p.expert));
    // A retired pair whose memory is not freed yet is held again as it is.
    const loaded = await this.upload(fresh.filter((p) => !this.experts.has(this.slot(p.layer, p.expert))), undefined, cancelled);
    for (const p of fresh) {
      const key = this.slot(p.layer, p.expert);
      const kept = this.experts.get(key);
      if (kept && !loaded.has(key)) loaded.set(key, { pair: p, expert: kept, dtype: '' });
    }
    this.commit(loaded);
    return fresh;
  }

  /**
   * Stops holding the pairs (requests decoded from now on are refused) and
   * returns the retired ones; their memory stays until free(). Pairs not held are ignored.
   */
  retire(pairs: readonly ExpertPair[]): ExpertPair[] {
    const gone = uniquePairs(pairs).filter((p) => this.has(p.layer, p.expert));
    for (const p of gone) {
      this.held.delete(this.slot(p.layer, p.expert));
      const n = (this.layers.get(p.layer) ?? 0) - 1;
      if (n > 0) this.layers.set(p.layer, n);
      else this.layers.delete(p.layer);
    }
    if (gone.length > 0) this.sortedPairs = uniquePairs([...this.held.values()]);
    return gone;
  }

  /** Frees retired pairs' native memory (no request that could use them may still be queued). */
  free(pairs: readonly ExpertPair[]): void {
    for (const p of pairs) {
      const key = this.slot(p.layer, p.expert);
      if (this.held.has(key)) continue; // held again since: still in use
      this.experts.get(key)?.free();
      this.experts.delete(key);
    }
  }

  /**
   * Runs a decoded request (every group's expert held: the codec checked) in one
   * native moe call. `active` is per route in group order.
   */
  async run(batch: ExpertBatch): Promise<ExpertOutput> {
    const t0 = process.hrtime.bigint();
    const r = await runMoe(this.backend, this.mode, this.dims.hiddenSize, batch, (L, E) => this.experts.get(this.slot(L, E)));
    if (this.slowdown > 1) {
      // Timers wait at least ~1 ms, more than a small model's compute: the wait is owed and paid once it
      // reaches a millisecond, what a timer overslept is taken off the next, so the average is F x.
      this.owedMs += (Number(process.hrtime.bigint() - t0) / 1e6) * (this.slowdown - 1);
      if (this.owedMs >= 1) {
        const t1 = process.hrtime.bigint();
        await new Promise((resolve) => setTimeout(resolve, this.owedMs));
        this.owedMs -= Number(process.hrtime.bigint() - t1) / 1e6;
      }
    }
    return r;
  }

  close(): void {
    for (const e of this.experts.values()) e.free();
    this.experts.clear();
    this.held.clear();
    this.layers.clear();
    this.sortedPairs = [];
  }

  private async upload(pairs: readonly ExpertPair[], onLoaded?: ExpertStoreOptions['onLoaded'],
    cancelled: () => boolean = () => false): Promise<Map<number, { pair: ExpertPair; expert: NativeExpert; dtype: string }>> {
    const H = this.dims.hiddenSize;
    const I = this.dims.intermediateSize;
    const out = new Map<number, { pair: ExpertPair; expert: NativeExpert; dtype: string }>();
    try {
      let done = 0;
      for (const p of pairs) {
        if (cancelled()) throw new Error('cancelled');
        const w1 = await this.source.readMatrix(names.w1(p.layer, p.expert), I, H);
        const w3 = await this.source.readMatrix(names.w3(p.layer, p.expert), I, H);
        const w2 = await this.source.readMatrix(names.w2(p.layer, p.expert), H, I);
        const dtype = storeFor(this.weights, [w1, w3, w2]);
        out.set(this.slot(p.layer, p.expert), { pair: p, expert: await this.backend.createExpert(w1, w3, w2, dtype), dtype });
        onLoaded?.(++done, pairs.length, p, w1.data.byteLength + w2.data.byteLength + w3.data.byteLength);
      }
    } catch (e) {
      for (const x of out.values()) x.expert.free();
      throw e;
    }
    return out;
  }

  private commit(loaded: Map<number, { pair: ExpertPair; expert: NativeExpert; dtype: string }>): void {
    for (const [key, { pair, expert, dtype }] of loaded) {
      this.experts.set(key, expert);
      this.held.set(key, pair);
      this.layers.set(pair.layer, (this.layers.get(pair.layer) ?? 0) + 1);
      if (dtype) this.dtypes.add(dtype);
    }
    this.sortedPairs = uniquePairs([...this.held.values()]);
  }
}

/**
 * The stored bytes of one pair as ExpertStore will upload it: --weights, or under 'auto' the
 * checkpoint's dtype when w1/w3/w2 share one (f32 otherwise, as storeFor does).
 */
export function pairStoredBytes(source: ExpertWeightSource, dims: ExpertStoreDims, weights: StoreDType | 'auto', p: ExpertPair): number {
  let dtype: string = weights;
  if (weights === 'auto') {
    const found = [names.w1(p.layer, p.expert), names.w3(p.layer, p.expert), names.w2(p.layer, p.expert)]
      .map((n) => source.info?.(n)?.dtype.toLowerCase());
    dtype = found[0] !== undefined && found.every((d) => d === found[0]) && STORE_DTYPES.includes(found[0]) ? found[0] : 'f32';
  }
  return expertBytes(dims.hiddenSize, dims.intermediateSize, dtype as StoreDType);
}
