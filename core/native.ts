// The whole native surface, typed in one place. The addon (native/addon) is
// built by cmake-js into native/build/Release/turbosparse_addon.node.
// Heavy calls return Promises (AsyncWorkers); typed arrays passed to a call
// must not be modified until its Promise settles.
import path from 'node:path';
import fs from 'node:fs';

export type StoreDType = 'f32' | 'f16' | 'bf16' | 'i8';
export type SourceDType = 'f32' | 'f16' | 'bf16';
/** How a KV cache stores K/V (16 bits halve its memory; attention math stays f32). */
export type KvDType = 'f32' | 'bf16' | 'f16';
export const KV_DTYPE_BYTES: Record<KvDType, number> = { f32: 4, bf16: 2, f16: 2 };
export type Device = 'cpu' | 'cuda';
export type FfnMode = 'sparse' | 'dense';

/** A row-major matrix in host memory, as read from a checkpoint. */
export interface HostMatrix {
  dtype: SourceDType;
  rows: number;
  cols: number;
  /** rows * cols elements in `dtype`, little-endian. */
  data: Uint8Array;
}

/** Whether the matrices share one dtype. */
export function sameDtype(parts: HostMatrix[]): boolean {
  return parts.every((p) => p.dtype === parts[0].dtype);
}

/**
 * The storage dtype for tensors that are uploaded together ('auto': as in the checkpoint).
 * Tensors of one object stored in different dtypes (a checkpoint may keep some in F32)
 * are stored as f32: converting f16 to bf16 or back would round the weights.
 */
export function storeFor(store: StoreDType | 'auto', parts: HostMatrix[]): StoreDType {
  if (store !== 'auto') return store;
  return sameDtype(parts) ? parts[0].dtype : 'f32';
}

export interface NativeHandle {
  /** Frees the native memory now (otherwise it is freed with the backend). */
  free(): void;
}
export interface NativeWeight extends NativeHandle {
  readonly rows: number;
  readonly cols: number;
}
export interface NativeExpert extends NativeHandle {
  readonly hidden: number;
  readonly intermediate: number;
}
export interface NativePredictor extends NativeHandle {
  readonly rank: number;
}
export interface NativeKvCache extends NativeHandle {
  readonly bytes: number;
  /** Positions it holds (0 <= position < maxTokens); growKvCache raises it. */
  readonly maxTokens: number;
}

/** One predictor over some rows of a batch. masks: [rows.length, maskWords*8] bytes. */
export interface PredictCall {
  predictor: NativePredictor;
  rows: Int32Array;
  masks: Uint8Array;
  counts?: Int32Array;
}
/** One expert over some rows of a batch; see ts_moe in native/include/turbosparse.h. */
export interface ExpertCall {
  expert: NativeExpert;
  rows: Int32Array;
  weight: Float32Array;
  masks: Uint8Array;
}

export interface NativeBackend {
  readonly device: Device;
  /** e.g. "cpu avx512 (2 threads)". */
  readonly description: string;
  weightBytes(): number;
  /** CPU only: "scalar" | "avx2" | "avx512" | "auto". */
  setVariant(variant: string): void;

  createWeight(m: HostMatrix, store: StoreDType): Promise<NativeWeight>;
  createExpert(w1: HostMatrix, w3: HostMatrix, w2: HostMatrix, store: StoreDType): Promise<NativeExpert>;
  createPredictor(fc1: HostMatrix, fc2: HostMatrix, store: StoreDType): Promise<NativePredictor>;
  createKvCache(layers: number, maxTokens: number, kvHeads: number, headDim: number, dtype?: KvDType): NativeKvCache;
  /** Grows a cache to maxTokens positions, keeping its contents (a smaller maxTokens is a no-op). */
  growKvCache(cache: NativeKvCache, maxTokens: number): Promise<void>;
  /** Copies positions [0, tokens) of every layer from src into dst (a shared prompt prefix). */
  copyKvCache(dst: NativeKvCache, src: NativeKvCache, tokens: number): Promise<void>;

  matmul(w: NativeWeight, n: number, x: Float32Array, y: Float32Array): Promise<void>;
  rmsnorm(w: NativeWeight, n: number, d: number, x: Float32Array, eps: number, y: Float32Array): Promise<void>;
  rope(n: number, heads: number, headDim: number, positions: Int32Array, theta: number, x: Float32Array): Promise<void>;
  routerTopk(n: number, experts: number, logits: Float32Array, k: number, idx: Int32Array, weight: Float32Array): Promise<void>;
  predictMany(nRows: number, hidden: number, x: Float32Array, calls: PredictCall[]): Promise<void>;
  attention(layer: number, n: number, caches: NativeKvCache[], positions: Int32Array, heads: number, kvHeads: number,
    headDim: number, q: Float32Array, k: Float32Array, v: Float32Array, out: Float32Array): Promise<void>;
  /** y [nRows, hidden] is overwritten; active (optional) gets one count per (call, row) in call order. */
  moe(mode: FfnMode, nRows: number, hidden: number, x: Float32Array, calls: ExpertCall[], y: Float32Array,
    active: Int32Array | null): Promise<void>;
  /**
   * moe calls of at most `rows` rows that find the backend idle run on the calling (JS) thread and are
   * settled when they return, skipping the libuv pool's two thread hand-offs; 0 (the default): never.
   * For a process whose JS thread has nothing to do meanwhile (an expert node), not for one that
   * overlaps other work with its native calls.
   */
  setInlineRows(rows: number): void;
  /** Frees every handle and the backend. */
  close(): void;
}

export interface NativeModule {
  version(): string;
  deviceAvailable(device: Device): boolean;
  /** device "auto": CUDA when a GPU and driver are present, else CPU. threads 0 = all cores. */
  createBackend(device: Device | 'auto', threads: number): NativeBackend;
}

/** Bytes of one token's mask row: whole uint64 words. */
export function maskBytes(intermediate: number): number {
  return Math.ceil(intermediate / 64) * 8;
}

let loaded: NativeModule | undefined;

/** Loads the addon once; a clear message when it was not built. */
export function native(): NativeModule {
  if (loaded) return loaded;
  // TURBOSPARSE_ADDON names an explicit build (a debug or scratch build outside native/build).
  const override = process.env.TURBOSPARSE_ADDON;
  const candidates = override
    ? [path.resolve(override)]
    : [
        path.resolve(__dirname, '..', 'native', 'build', 'Release', 'turbosparse_addon.node'),
        path.resolve(__dirname, '..', '..', 'native', 'build', 'Release', 'turbosparse_addon.node'),
      ];
  const file = candidates.find((f) => fs.existsSync(f));
  if (!file) {
    throw new Error(`native addon not built: run \`npm run build:native\` (looked in ${candidates.join(', ')})`);
  }
  // eslint-disable-next-line @typescript-eslint/no-require-imports
  loaded = require(file) as NativeModule;
  return loaded;
}
