// ExpertBackend on in-process native kernels (`--experts local`).
import type { ExpertBackend, ExpertBatch, ExpertOutput } from '../core/expert-backend';
import { type FfnMode, type NativeBackend, type NativeExpert, type StoreDType, type HostMatrix, storeFor } from '../core/native';
import type { ModelFolder } from '../core/model-folder';
import { names } from '../core/model-folder';
import { runMoe } from '../core/run-moe';

export class LocalExperts implements ExpertBackend {
  readonly name = 'local';
  private constructor(
    private readonly backend: NativeBackend,
    private readonly experts: NativeExpert[][],
    private readonly hidden: number,
    private mode: FfnMode,
  ) {}

  /** Switches between the sparse FFN and the dense-with-mask baseline (benches compare both on one load). */
  setMode(mode: FfnMode): void {
    this.mode = mode;
  }

  /** Loads every (layer, expert) of the model into `backend`. */
  static async load(
    folder: ModelFolder,
    backend: NativeBackend,
    opts: { store: StoreDType | 'auto'; mode: FfnMode; onTensor?: (name: string, bytes: number) => void },
  ): Promise<LocalExperts> {
    const c = folder.config;
    const read = async (name: string, rows: number, cols: number): Promise<HostMatrix> => {
      const m = await folder.readMatrix(name, rows, cols);
      opts.onTensor?.(name, m.data.byteLength);
      return m;
    };
    const experts: NativeExpert[][] = [];
    for (let L = 0; L < c.numLayers; L++) {
      const layer: NativeExpert[] = [];
      for (let E = 0; E < c.numExperts; E++) {
        const w1 = await read(names.w1(L, E), c.intermediateSize, c.hiddenSize);
        const w3 = await read(names.w3(L, E), c.intermediateSize, c.hiddenSize);
        const w2 = await read(names.w2(L, E), c.hiddenSize, c.intermediateSize);
        layer.push(await backend.createExpert(w1, w3, w2, storeFor(opts.store, [w1, w3, w2])));
      }
      experts.push(layer);
    }
    return new LocalExperts(backend, experts, c.hiddenSize, opts.mode);
  }

  runExperts(batch: ExpertBatch): Promise<ExpertOutput> {
    return runMoe(this.backend, this.mode, this.hidden, batch, (L, E) => this.experts[L]?.[E]);
  }

  async close(): Promise<void> {
    for (const layer of this.experts) for (const e of layer) e.free();
  }
}
