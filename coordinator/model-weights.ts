// The weights the coordinator holds: embeddings, attention, router, predictors,
// final norm and lm_head (experts live behind the ExpertBackend seam).
// Each tensor is read lazily from the checkpoint and handed to the native
// backend, so the JS heap never holds more than one tensor at a time.
import type { ModelFolder } from '../core/model-folder';
import { names } from '../core/model-folder';
import { type HostMatrix, type NativeBackend, type NativePredictor, type NativeWeight, type StoreDType, sameDtype, storeFor } from '../core/native';
import type { ModelConfig } from '../core/config';
import { toF32 } from '../core/dtype';

export interface LayerWeights {
  inputNorm: NativeWeight;
  /** q, k and v projections stacked into one [q+k+v rows, hidden] matrix: one call instead of three. */
  qkv: NativeWeight;
  o: NativeWeight;
  postNorm: NativeWeight;
  gate: NativeWeight;
  predictors: NativePredictor[];
}

export interface CoordinatorWeights {
  /** Embedding table as stored in the checkpoint (rows are converted on lookup). */
  embed: HostMatrix;
  layers: LayerWeights[];
  finalNorm: NativeWeight;
  lmHead: NativeWeight;
}

export interface LoadOptions {
  /** Storage dtype for projections and predictors ('auto': as in the checkpoint); norms always f32. */
  store: StoreDType | 'auto';
  /** Called after each tensor with the bytes just read. */
  onTensor?: (name: string, bytes: number) => void;
}

/** Concatenates matrices with equal columns and dtype along rows. */
function stackRows(parts: HostMatrix[]): HostMatrix {
  const total = parts.reduce((s, p) => s + p.data.byteLength, 0);
  const data = new Uint8Array(total);
  let at = 0;
  for (const p of parts) {
    data.set(p.data, at);
    at += p.data.byteLength;
  }
  return { dtype: parts[0].dtype, rows: parts.reduce((s, p) => s + p.rows, 0), cols: parts[0].cols, data };
}

/** The same matrix as f32 (exact for f16 and bf16). */
function widen(m: HostMatrix): HostMatrix {
  if (m.dtype === 'f32') return m;
  const f = toF32(m.dtype.toUpperCase(), m.data);
  return { dtype: 'f32', rows: m.rows, cols: m.cols, data: new Uint8Array(f.buffer, f.byteOffset, f.byteLength) };
}

export async function loadCoordinatorWeights(
  folder: ModelFolder,
  backend: NativeBackend,
  opts: LoadOptions,
): Promise<CoordinatorWeights> {
  const c: ModelConfig = folder.config;
  const H = c.hiddenSize;
  const read = async (name: string, rows: number, cols: number): Promise<HostMatrix> => {
    const m = await folder.readMatrix(name, rows, cols);
    opts.onTensor?.(name, m.data.byteLength);
    return m;
  };
  const store = (m: HostMatrix): StoreDType => (opts.store === 'auto' ? m.dtype : opts.store);
  const vector = async (name: string, n: number): Promise<NativeWeight> =>
    backend.createWeight(await read(name, 1, n), 'f32');

  const matrix = async (name: string, rows: number, cols: number): Promise<NativeWeight> => {
    const m = await read(name, rows, cols);
    return backend.createWeight(m, store(m));
  };

  const embed = await read(names.embed, c.vocabSize, H);
  const layers: LayerWeights[] = [];
  for (let L = 0; L < c.numLayers; L++) {
    const qDim = c.numHeads * c.headDim;
    const kvDim = c.numKvHeads * c.headDim;
    const q = await read(names.q(L), qDim, H);
    const k = await read(names.k(L), kvDim, H);
    const v = await read(names.v(L), kvDim, H);
    // Stacked rows share one dtype: q/k/v stored in different dtypes are stacked as f32.
    const parts = sameDtype([q, k, v]) ? [q, k, v] : [q, k, v].map(widen);
    const qkv = await backend.createWeight(stackRows(parts), storeFor(opts.store, [q, k, v]));
    const predictors: NativePredictor[] = [];
    const rank = folder.predictorRanks[L];
    for (let E = 0; E < c.numExperts; E++) {
      const fc1 = await read(names.fc1(L, E), rank, H);
      const fc2 = await read(names.fc2(L, E), c.intermediateSize, rank);
      predictors.push(await backend.createPredictor(fc1, fc2, storeFor(opts.store, [fc1, fc2])));
    }
    layers.push({
      inputNorm: await vector(names.inputNorm(L), H),
      qkv,
      o: await matrix(names.o(L), H, qDim),
      postNorm: await vector(names.postNorm(L), H),
      // The router decides discrete top-2 choices: keep it in f32 so bf16 storage cannot flip them.
      gate: await backend.createWeight(await read(names.gate(L), c.numExperts, H), 'f32'),
      predictors,
    });
  }
  const finalNorm = await vector(names.finalNorm, H);
  const lmHead = await matrix(names.lmHead, c.vocabSize, H);
  return { embed, layers, finalNorm, lmHead };
}
