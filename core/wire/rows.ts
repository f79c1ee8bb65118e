// Hidden and output rows on the wire: raw little-endian bytes in one of three
// encodings, chosen by the coordinator per connection.
//   f32  — 4 bytes per value, bit-exact.
//   bf16 — 2 bytes per value, the upper half of the f32 rounded to nearest even.
//   int8 — 1 byte per value plus one f32 scale per row (symmetric, scale = max|x| / 127).
import { UserError } from '../errors';
import type { Rows, Rows__Output, RowEncoding } from './expert-proto';

export type WireEncoding = 'f32' | 'bf16' | 'int8';
export const WIRE_ENCODINGS: readonly WireEncoding[] = ['f32', 'bf16', 'int8'];

const TO_PROTO: Record<WireEncoding, RowEncoding> = { f32: 'ROW_F32', bf16: 'ROW_BF16', int8: 'ROW_INT8' };

export function toProtoEncoding(e: WireEncoding): RowEncoding {
  return TO_PROTO[e];
}

export function fromProtoEncoding(e: string | number): WireEncoding {
  switch (e) {
    case 'ROW_F32': case 0: return 'f32';
    case 'ROW_BF16': case 1: return 'bf16';
    case 'ROW_INT8': case 2: return 'int8';
    default: throw new UserError(`unknown row encoding ${String(e)} (expected ROW_F32, ROW_BF16 or ROW_INT8)`);
  }
}

export function parseWireEncoding(s: string): WireEncoding {
  if ((WIRE_ENCODINGS as readonly string[]).includes(s)) return s as WireEncoding;
  throw new UserError(`--wire: unknown encoding "${s}" (use f32, bf16 or int8)`);
}

/** Bytes one row of `width` values takes on the wire (int8 includes its scale). */
export function rowWireBytes(encoding: WireEncoding, width: number): number {
  switch (encoding) {
    case 'f32': return width * 4;
    case 'bf16': return width * 2;
    case 'int8': return width + 4;
  }
}

const f32Scratch = new Float32Array(1);
const u32Scratch = new Uint32Array(f32Scratch.buffer);

/** f32 -> bf16 bits, round to nearest even; NaN stays a (quiet) NaN. */
export function f32ToBf16(x: number): number {
  f32Scratch[0] = x;
  const u = u32Scratch[0];
  if ((u & 0x7fffffff) > 0x7f800000) return ((u >>> 16) | 0x40) & 0xffff;
  return ((u + 0x7fff + ((u >>> 16) & 1)) >>> 16) & 0xffff;
}

export function bf16ToF32(b: number): number {
  u32Scratch[0] = (b & 0xffff) << 16;
  return f32Scratch[0];
}

/**
 * Encodes rows of `src` ([*, width] row-major). `rows` picks which rows and in
 * what order (null = all of them). The result owns fresh buffers.
 */
export function encodeRows(src: Float32Array, width: number, rows: ArrayLike<number> | null, encoding: WireEncoding): Rows {
  const count = rows ? rows.length : src.length / width;
  if (!Number.isInteger(count)) throw new Error(`encodeRows: ${src.length} values are not whole rows of ${width}`);
  const rowAt = (i: number) => (rows ? rows[i] : i) * width;
  switch (encoding) {
    case 'f32': {
      const out = new Float32Array(count * width);
      for (let i = 0; i < count; i++) out.set(src.subarray(rowAt(i), rowAt(i) + width), i * width);
      return { encoding: 'ROW_F32', count, width, data: bytesOf(out) };
    }
    case 'bf16': {
      const out = new Uint16Array(count * width);
      for (let i = 0; i < count; i++) {
        const s = rowAt(i);
        const o = i * width;
        for (let j = 0; j < width; j++) out[o + j] = f32ToBf16(src[s + j]);
      }
      return { encoding: 'ROW_BF16', count, width, data: bytesOf(out) };
    }
    case 'int8': {
      const out = new Int8Array(count * width);
      const scales = new Float32Array(count);
      for (let i = 0; i < count; i++) {
        const s = rowAt(i);
        const o = i * width;
        let max = 0;
        for (let j = 0; j < width; j++) max = Math.max(max, Math.abs(src[s + j]));
        const scale = Math.fround(max / 127);
        scales[i] = scale;
        if (scale === 0) continue;
        const inv = 1 / scale;
        for (let j = 0; j < width; j++) {
          const q = Math.round(src[s + j] * inv);
          out[o + j] = q > 127 ? 127 : q < -127 ? -127 : q;
        }
      }
      return { encoding: 'ROW_INT8', count, width, data: bytesOf(out), scales: bytesOf(scales) };
    }
  }
}

export interface DecodeRowsOptions {
  /** Reject NaN and +-Infinity (an expert node's input); checked while decoding, so it costs one pass. */
  finite?: boolean;
}

/**
 * Decodes rows, checking them against what the receiver expects. `what` names
 * the field in error messages ("hidden", "out"). Throws UserError on any mismatch.
 */
export function decodeRows(rows: Rows__Output | null | undefined, expectCount: number, expectWidth: number,
  what: string, opts: DecodeRowsOptions = {}): Float32Array {
  if (!rows) throw new UserError(`${what}: missing rows`);
  const encoding = fromProtoEncoding(rows.encoding);
  if (rows.width !== expectWidth) {
    throw new UserError(`${what}: rows are ${rows.width} values wide, expected ${expectWidth} (the model's hidden size)`);
  }
  if (rows.count !== expectCount) throw new UserError(`${what}: ${rows.count} rows, expected ${expectCount}`);
  const n = expectCount * expectWidth;
  const need = n * (encoding === 'f32' ? 4 : encoding === 'bf16' ? 2 : 1);
  const data = rows.data ?? Buffer.alloc(0);
  if (data.length !== need) {
    throw new UserError(`${what}: ${expectCount} rows x ${expectWidth} values in ${encoding} need ${need} bytes, got ${data.length}`);
  }
  const out = new Float32Array(n);
  switch (encoding) {
    case 'f32': {
      // Copy through bytes: a decoded Buffer may sit at an unaligned offset.
      new Uint8Array(out.buffer).set(data);
      if (opts.finite) {
        // All exponent bits set is NaN or +-Infinity; integer compares keep this pass cheap.
        const u = new Uint32Array(out.buffer);
        for (let i = 0; i < n; i++) if ((u[i] & 0x7f800000) === 0x7f800000) throw nonFinite(what, out, i, expectWidth);
      }
      break;
    }
    case 'bf16': {
      const u = new Uint32Array(out.buffer);
      let bad = -1;
      for (let i = 0; i < n; i++) {
        const h = data[2 * i] | (data[2 * i + 1] << 8);
        if ((h & 0x7f80) === 0x7f80 && bad < 0) bad = i;
        u[i] = h << 16;
      }
      if (opts.finite && bad >= 0) throw nonFinite(what, out, bad, expectWidth);
      break;
    }
    case 'int8': {
      const scaleBytes = rows.scales ?? Buffer.alloc(0);
      if (scaleBytes.length !== expectCount * 4) {
        throw new UserError(`${what}: int8 rows need ${expectCount} f32 scales (${expectCount * 4} bytes), got ${scaleBytes.length} bytes`);
      }
      const scales = new Float32Array(expectCount);
      new Uint8Array(scales.buffer).set(scaleBytes);
      for (let r = 0; r < expectCount; r++) {
        const scale = scales[r];
        if (!Number.isFinite(scale) || scale < 0) throw new UserError(`${what}: row ${r} has an invalid int8 scale ${scale}`);
        const o = r * expectWidth;
        for (let j = 0; j < expectWidth; j++) {
          const b = data[o + j];
          out[o + j] = (b > 127 ? b - 256 : b) * scale;
        }
      }
      break;
    }
  }
  return out;
}

function nonFinite(what: string, values: Float32Array, i: number, width: number): UserError {
  const row = Math.floor(i / width);
  return new UserError(`${what}: row ${row} holds ${values[i]} at column ${i % width}; rows must be finite (no NaN or Infinity)`);
}

function bytesOf(a: Float32Array | Uint16Array | Int8Array): Uint8Array {
  return new Uint8Array(a.buffer, a.byteOffset, a.byteLength);
}
