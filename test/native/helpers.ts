// Shared pieces of the addon tests: seeded random data, host matrices (bf16/f16
// through core/dtype), f64 reference ops, mask packing and a tiny safetensors reader.
import fs from 'node:fs';
import path from 'node:path';
import { bf16ToF32, f16ToF32, f32ToBf16, f32ToF16 } from '../../core/dtype';
import { maskBytes, type HostMatrix, type SourceDType } from '../../core/native';
import { Rng } from '../../coordinator/sampler';

/** Deterministic uniform floats in [-scale, scale) (the sampler's mulberry32). */
export function rng(seed: number): (scale?: number) => number {
  const r = new Rng(seed);
  return (scale = 1) => (2 * r.next() - 1) * scale;
}


/** n uniform floats in [-scale, scale) (xorshift32, inlined: big arrays are made quickly). */
export function randomF32(n: number, seed: number, scale = 1): Float32Array {
  const out = new Float32Array(n);
  let s = (seed * 2654435761) | 0 || 1;
  const k = (2 * scale) / 4294967296;
  for (let i = 0; i < n; i++) {
    s ^= s << 13;
    s ^= s >>> 17;
    s ^= s << 5;
    out[i] = (s >>> 0) * k - scale;
  }
  return out;
}

/** A host matrix in `dtype` holding `values` rounded to it, and those rounded values as f32. */
export function hostMatrix(
  values: Float32Array,
  rows: number,
  cols: number,
  dtype: SourceDType = 'f32',
): { m: HostMatrix; rounded: Float32Array } {
  if (values.length !== rows * cols) throw new Error('hostMatrix: size mismatch');
  if (dtype === 'f32') {
    return { m: { dtype, rows, cols, data: new Uint8Array(values.slice().buffer) }, rounded: values };
  }
  const data = dtype === 'bf16' ? f32ToBf16(values) : f32ToF16(values);
  const rounded = dtype === 'bf16' ? bf16ToF32(data) : f16ToF32(data);
  return { m: { dtype, rows, cols, data }, rounded };
}

/** A Uint8Array of `length` bytes whose address is NOT 8-aligned (byteOffset 3). */
export function unalignedBytes(length: number): Uint8Array {
  return new Uint8Array(new ArrayBuffer(length + 8), 3, length);
}

/** y[n, rows] = x[n, cols] . W^T in float64. */
export function refMatmul(W: Float32Array, rows: number, cols: number, n: number, x: Float32Array): Float64Array {
  const y = new Float64Array(n * rows);
  for (let i = 0; i < n; i++)
    for (let r = 0; r < rows; r++) {
      let s = 0;
      for (let c = 0; c < cols; c++) s += W[r * cols + c] * x[i * cols + c];
      y[i * rows + r] = s;
    }
  return y;
}

/** Packs 0/1 flags [n, I] into mask bytes [n, maskBytes(I)] (bit i%64 of word i/64, little-endian). */
export function packMask(flags: ArrayLike<number>, n: number, I: number, out?: Uint8Array): Uint8Array {
  const rb = maskBytes(I);
  const bytes = out ?? new Uint8Array(n * rb);
  bytes.fill(0);
  for (let t = 0; t < n; t++)
    for (let i = 0; i < I; i++) if (flags[t * I + i]) bytes[t * rb + (i >> 3)] |= 1 << (i & 7);
  return bytes;
}

export function maskBit(bytes: Uint8Array, row: number, I: number, i: number): boolean {
  return ((bytes[row * maskBytes(I) + (i >> 3)] >> (i & 7)) & 1) === 1;
}

/** One dReLU expert in float64: w2 . (mask * relu(w1 x) * relu(w3 x)), and the active-neuron count. */
export function refExpert(
  w1: Float32Array,
  w3: Float32Array,
  w2: Float32Array,
  H: number,
  I: number,
  x: Float32Array,
  xOff: number,
  mask: (i: number) => boolean,
): { y: Float64Array; active: number; ambiguous: number } {
  const y = new Float64Array(H);
  let active = 0;
  let ambiguous = 0;
  for (let i = 0; i < I; i++) {
    let g = 0;
    let u = 0;
    for (let c = 0; c < H; c++) {
      g += w1[i * H + c] * x[xOff + c];
      u += w3[i * H + c] * x[xOff + c];
    }
    if (!mask(i)) continue;
    if (Math.abs(g) < 1e-5 || Math.abs(u) < 1e-5) ambiguous++;
    if (g <= 0 || u <= 0) continue;
    active++;
    const a = g * u;
    for (let h = 0; h < H; h++) y[h] += w2[h * I + i] * a;
  }
  return { y, active, ambiguous };
}

/** Fails with the worst element when |got - want| exceeds atol + rtol * |want| anywhere. */
export function expectClose(got: ArrayLike<number>, want: ArrayLike<number>, atol: number, rtol = 0): void {
  expect(got.length).toBe(want.length);
  let worst = -1;
  let worstExcess = 0;
  for (let i = 0; i < want.length; i++) {
    const excess = Math.abs(got[i] - want[i]) - (atol + rtol * Math.abs(want[i]));
    if (!(excess <= worstExcess)) {
      worst = i;
      worstExcess = Number.isNaN(excess) ? Infinity : excess;
    }
  }
  if (worst >= 0) {
    throw new Error(`element ${worst}: got ${got[worst]}, want ${want[worst]} (atol ${atol}, rtol ${rtol})`);
  }
}

export function maxAbs(a: ArrayLike<number>): number {
  let m = 0;
  for (let i = 0; i < a.length; i++) m = Math.max(m, Math.abs(a[i]));
  return m;
}

// ---- a minimal safetensors reader (F32 only), enough for the golden files ----

export interface SafeTensor {
  shape: number[];
  /** A view into the file's bytes (not necessarily 4-byte aligned). */
  bytes: Uint8Array;
  /** The values, copied into an aligned Float32Array. */
  values: Float32Array;
}

export function readSafetensors(file: string): Map<string, SafeTensor> {
  const buf = fs.readFileSync(file);
  const headerLen = Number(buf.readBigUInt64LE(0));
  const header = JSON.parse(buf.subarray(8, 8 + headerLen).toString('utf8')) as Record<
    string,
    { dtype: string; shape: number[]; data_offsets: [number, number] }
  >;
  const start = 8 + headerLen;
  const out = new Map<string, SafeTensor>();
  for (const [name, t] of Object.entries(header)) {
    if (name === '__metadata__') continue;
    if (t.dtype !== 'F32') throw new Error(`${path.basename(file)}: ${name} is ${t.dtype}; this helper reads F32 only`);
    const bytes = new Uint8Array(buf.buffer, buf.byteOffset + start + t.data_offsets[0], t.data_offsets[1] - t.data_offsets[0]);
    const values = new Float32Array(bytes.slice().buffer);
    out.set(name, { shape: t.shape, bytes, values });
  }
  return out;
}
