// Conversions between the checkpoint element types (bfloat16, float16) and
// float32. Bytes are little-endian, as in safetensors; every machine we run on
// (x86-64, aarch64) is little-endian, which lets us use typed-array views.
import os from 'node:os';

if (os.endianness() !== 'LE') {
  throw new Error('turbosparse needs a little-endian host (safetensors data is little-endian)');
}

/** Bytes per element for the element types a checkpoint can hold. */
export function dtypeBytes(dtype: string): number {
  switch (dtype.toUpperCase()) {
    case 'F32':
      return 4;
    case 'F16':
    case 'BF16':
      return 2;
    default:
      throw new Error(`dtypeBytes: unknown dtype '${dtype}'`);
  }
}

/** A Uint16Array over `src`, copying only when `src` is not 2-byte aligned. */
function u16View(src: Uint8Array): Uint16Array {
  if (src.byteLength % 2 !== 0) throw new Error(`expected an even number of bytes, got ${src.byteLength}`);
  if (src.byteOffset % 2 === 0) return new Uint16Array(src.buffer, src.byteOffset, src.byteLength / 2);
  return new Uint16Array(src.slice().buffer);
}

function outF32(n: number, dst?: Float32Array): Float32Array {
  if (!dst) return new Float32Array(n);
  if (dst.length < n) throw new Error(`destination holds ${dst.length} floats, need ${n}`);
  return dst;
}

/** bfloat16 is the top half of a float32: widening is a 16-bit shift. */
export function bf16ToF32(src: Uint8Array, dst?: Float32Array): Float32Array {
  const h = u16View(src);
  const out = outF32(h.length, dst);
  const bits = new Uint32Array(out.buffer, out.byteOffset, h.length);
  for (let i = 0; i < h.length; i++) bits[i] = h[i] << 16;
  return out;
}

// f16 -> f32 through a 65536-entry table: exact, handles subnormals/inf/nan once.
let f16Table: Float32Array | undefined;
function halfToFloat(h: number): number {
  const sign = h & 0x8000 ? -1 : 1;
  const exp = (h >> 10) & 0x1f;
  const frac = h & 0x3ff;
  if (exp === 0) return sign * frac * 2 ** -24;
  if (exp === 31) return frac ? NaN : sign * Infinity;
  return sign * (1 + frac / 1024) * 2 ** (exp - 15);
}
function table(): Float32Array {
  if (!f16Table) {
    f16Table = new Float32Array(65536);
    for (let i = 0; i < 65536; i++) f16Table[i] = halfToFloat(i);
  }
  return f16Table;
}

export function f16ToF32(src: Uint8Array, dst?: Float32Array): Float32Array {
  const h = u16View(src);
  const out = outF32(h.length, dst);
  const t = table();
  for (let i = 0; i < h.length; i++) out[i] = t[h[i]];
  return out;
}

/** f32 -> bf16 with round-to-nearest-even (as torch does); NaN stays a quiet NaN. */
export function f32ToBf16(src: Float32Array, dst?: Uint8Array): Uint8Array {
  const n = src.length;
  const out = dst ?? new Uint8Array(new ArrayBuffer(n * 2));
  if (out.byteLength < n * 2) throw new Error(`destination holds ${out.byteLength} bytes, need ${n * 2}`);
  const bits = new Uint32Array(src.buffer, src.byteOffset, n);
  const h = u16View(out.subarray(0, n * 2));
  for (let i = 0; i < n; i++) {
    const b = bits[i];
    if ((b & 0x7fffffff) > 0x7f800000) {
      h[i] = (b >>> 16) | 0x40;
    } else {
      h[i] = (b + 0x7fff + ((b >>> 16) & 1)) >>> 16;
    }
  }
  if (h.buffer !== out.buffer) out.set(new Uint8Array(h.buffer));
  return out;
}

/** f32 -> IEEE half with round-to-nearest-even, subnormals, overflow to inf. */
export function f32ToF16(src: Float32Array, dst?: Uint8Array): Uint8Array {
  const n = src.length;
  const out = dst ?? new Uint8Array(new ArrayBuffer(n * 2));
  if (out.byteLength < n * 2) throw new Error(`destination holds ${out.byteLength} bytes, need ${n * 2}`);
  const bits = new Uint32Array(src.buffer, src.byteOffset, n);
  const h = u16View(out.subarray(0, n * 2));
  for (let i = 0; i < n; i++) h[i] = floatBitsToHalf(bits[i]);
  if (h.buffer !== out.buffer) out.set(new Uint8Array(h.buffer));
  return out;
}

function floatBitsToHalf(b: number): number {
  const sign = (b >>> 16) & 0x8000;
  const exp = (b >>> 23) & 0xff;
  let mant = b & 0x7fffff;
  if (exp === 0xff) return sign | 0x7c00 | (mant ? 0x200 | (mant >>> 13) : 0); // inf / nan
  const e = exp - 127 + 15;
  if (e >= 31) return sign | 0x7c00; // overflow
  if (e <= 0) {
    if (e < -10) return sign; // underflows to zero
    mant |= 0x800000; // implicit bit
    const shift = 14 - e; // 14..24
    const half = mant >>> shift;
    const rem = mant & ((1 << shift) - 1);
    const mid = 1 << (shift - 1);
    const round = rem > mid || (rem === mid && (half & 1)) ? 1 : 0;
    return sign | (half + round);
  }
  const half = (e << 10) | (mant >>> 13);
  const rem = mant & 0x1fff;
  const round = rem > 0x1000 || (rem === 0x1000 && (half & 1)) ? 1 : 0;
  return sign | (half + round); // a carry into the exponent is the correct rounding (up to inf)
}

/** Widens any checkpoint element type to float32 (a copy; F32 input is copied too). */
export function toF32(dtype: string, bytes: Uint8Array, dst?: Float32Array): Float32Array {
  switch (dtype.toUpperCase()) {
    case 'F32': {
      if (bytes.byteLength % 4 !== 0) throw new Error(`expected a multiple of 4 bytes, got ${bytes.byteLength}`);
      const out = outF32(bytes.byteLength / 4, dst);
      new Uint8Array(out.buffer, out.byteOffset, bytes.byteLength).set(bytes);
      return out;
    }
    case 'F16':
      return f16ToF32(bytes, dst);
    case 'BF16':
      return bf16ToF32(bytes, dst);
    default:
      throw new Error(`toF32: unknown dtype '${dtype}'`);
  }
}

/** Narrows float32 values to the bytes of `dtype` ('F32' copies). */
export function fromF32(dtype: string, src: Float32Array): Uint8Array {
  switch (dtype.toUpperCase()) {
    case 'F32':
      return new Uint8Array(src.slice().buffer);
    case 'F16':
      return f32ToF16(src);
    case 'BF16':
      return f32ToBf16(src);
    default:
      throw new Error(`fromF32: unknown dtype '${dtype}'`);
  }
}
