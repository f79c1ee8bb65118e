// ExpertBackend on in-process native kernels: `--experts local` (every pair),
// and the coordinator's own `local` node of a shard map (RemoteExperts runs the
// pairs planned there through one of these; rebalancing adds and removes pairs).
import type { ExpertBackend, ExpertBatch, ExpertOutput } from '../core/expert-backend';
import { type ExpertPair, allPairs, comparePairs } from '../core/expert-spec';
import { type FfnMode, type NativeBackend, type NativeExpert, type StoreDType, type HostMatrix, storeFor } from '../core/native';
import type { ModelFolder } from '../core/model-folder';
import { names } from '../core/model-folder';
import { runMoe } from '../core/run-moe';

export interface LocalExpertsOptions {
  store: StoreDType | 'auto';
  mode: FfnMode;
  onTensor?: (name: string, bytes: number) => void;
}

interface Held {
  expert: NativeExpert;
  bytes: number;
  /** moe calls running on it now: it is freed only once this is 0. */
  running: number;
  /** Set by remove() while calls run: the last one to finish calls it. */
  onIdle?: () => void;
}

export class LocalExperts implements ExpertBackend {
  readonly name = 'local';
  /** By slot(layer, expert): numbers, not "L:E" strings, since runExperts looks them up per layer. */
  private readonly held = new Map<number, Held>();
  private closed = false;

  private constructor(
    private readonly folder: ModelFolder,
    private readonly backend: NativeBackend,
    private readonly hidden: number,
    private mode: FfnMode,
    private readonly store: StoreDType | 'auto',
  ) {}

  /** Switches between the sparse FFN and the dense-with-mask baseline (benches compare both on one load). */
  setMode(mode: FfnMode): void {
    this.mode = mode;
  }

  /** Loads every (layer, expert) of the model into `backend`. */
  static load(folder: ModelFolder, backend: NativeBackend, opts: LocalExpertsOptions): Promise<LocalExperts> {
    return LocalExperts.loadPairs(folder, backend, allPairs(folder.config), opts);
  }

  /** Loads the given pairs only (the coordinator's `local` node of a shard map). */
  static async loadPairs(folder: ModelFolder, backend: NativeBackend, pairs: ExpertPair[], opts: LocalExpertsOptions): Promise<LocalExperts> {
    const le = new LocalExperts(folder, backend, folder.config.hiddenSize, opts.mode, opts.store);
    try {
      await le.add(pairs, opts.onTensor);
    } catch (e) {
      await le.close();
      throw e;
    }
    return le;
  }

  private slot(layer: number, expert: number): number {
    return layer * this.folder.config.numExperts + expert;
  }

  /** The pairs held, by layer then expert. */
  pairs(): ExpertPair[] {
    const E = this.folder.config.numExperts;
    return [...this.held.keys()].map((k) => ({ layer: Math.floor(k / E), expert: k % E })).sort(comparePairs);
  }

  /** Expert weight bytes held. */
  bytes(): number {
    let n = 0;
    for (const h of this.held.values()) n += h.bytes;
    return n;
  }

  /** Reads the pairs' weights from the model folder (pairs already held are kept as they are). */
  async add(pairs: ExpertPair[], onTensor?: (name: string, bytes: number) => void): Promise<void> {
    const c = this.folder.config;
    for (const { layer: L, expert: E } of pairs) {
      if (this.closed) throw new Error('local experts: closed');
      if (L < 0 || L >= c.numLayers || E < 0 || E >= c.numExperts) throw new Error(`local experts: layer ${L} expert ${E} is outside the model`);
      const key = this.slot(L, E);
      if (this.held.has(key)) continue;
      let bytes = 0;
      const read = async (name: string, rows: number, cols: number): Promise<HostMatrix> => {
        const m = await this.folder.readMatrix(name, rows, cols);
        onTensor?.(name, m.data.byteLength);
        bytes += m.data.byteLength;
        return m;
      };
      const w1 = await read(names.w1(L, E), c.intermediateSize, c.hiddenSize);
      const w3 = await read(names.w3(L, E), c.intermediateSize, c.hiddenSize);
      const w2 = await read(names.w2(L, E), c.hiddenSize, c.intermediateSize);
      const expert = await this.backend.createExpert(w1, w3, w2, storeFor(this.store, [w1, w3, w2]));
      // Another add() of the same pair may have finished while this one read.
      if (this.held.has(key) || this.closed) expert.free();
      else this.held.set(key, { expert, bytes, running: 0 });
    }
  }

  /** Stops holding the pairs: each is freed once the calls running on it have finished. */
  async remove(pairs: ExpertPair[]): Promise<void> {
    await Promise.all(pairs.map(async ({ layer, expert }) => {
      const key = this.slot(layer, expert);
      const h = this.held.get(key);
      if (!h) return;
      this.held.delete(key); // no new call finds it
      if (h.running > 0) await new Promise<void>((resolve) => (h.onIdle = resolve));
      h.expert.free();
    }));
  }

  async runExperts(batch: ExpertBatch): Promise<ExpertOutput> {
    // The experts counted here, not a fresh lookup in the moe call: a pair removed meanwhile is still this call's.
    const byExpert: (Held | undefined)[] = [];
    for (const g of batch.groups) byExpert[g.expert] = this.held.get(this.slot(batch.layer, g.expert));
    const using = batch.groups.map((g) => byExpert[g.expert]);
    for (const h of using) if (h) h.running++;
    try {
      return await runMoe(this.backend, this.mode, this.hidden, batch, (_, E) => byExpert[E]?.expert);
    } finally {
      for (const h of using) if (h && --h.running === 0) h.onIdle?.();
    }
  }

  async close(): Promise<void> {
    this.closed = true;
    for (const h of this.held.values()) h.expert.free();
    this.held.clear();
  }
}
