// Predictor masks on the wire, in whichever form is smaller:
//   bits      — ceil(I/8) bytes, neuron i = bit (i % 8) of byte (i / 8)
//   indices16 — the active neurons as little-endian uint16 (I <= 65536), strictly ascending
//   indices32 — the same as uint32 (wider models)
// In memory (ExpertBatch.masks, the native ABI) a mask row is whole
// little-endian uint64 words: maskBytes(I) bytes, the same bit order, so the
// `bits` form is simply the first ceil(I/8) bytes of the row.
import { UserError } from '../errors';
import type { Mask, Mask__Output } from './expert-proto';

const POPCOUNT = new Uint8Array(256);
for (let i = 1; i < 256; i++) POPCOUNT[i] = (i & 1) + POPCOUNT[i >> 1];

export type MaskForm = 'bits' | 'indices16' | 'indices32';

/** Bytes each form would take for a mask with `active` neurons set out of `intermediate`. */
export function maskWireBytes(intermediate: number, active: number): { form: MaskForm; bytes: number } {
  const bitsBytes = Math.ceil(intermediate / 8);
  const idxBytes = active * (intermediate <= 65536 ? 2 : 4);
  if (idxBytes < bitsBytes) return { form: intermediate <= 65536 ? 'indices16' : 'indices32', bytes: idxBytes };
  return { form: 'bits', bytes: bitsBytes };
}

/**
 * Encodes one in-memory mask row (`row`, at least ceil(I/8) bytes; bits >= I
 * are ignored) in its smaller wire form. The result owns fresh buffers.
 */
export function encodeMask(row: Uint8Array, intermediate: number): Mask {
  const fullBytes = intermediate >> 3;
  const tailBits = intermediate & 7;
  const bitsBytes = Math.ceil(intermediate / 8);
  if (row.length < bitsBytes) throw new Error(`encodeMask: row of ${row.length} bytes, need ${bitsBytes} for ${intermediate} neurons`);
  const tailMask = (1 << tailBits) - 1;
  const active = maskPopcount(row, intermediate);

  const { form } = maskWireBytes(intermediate, active);
  if (form === 'bits') {
    const bits = new Uint8Array(bitsBytes);
    bits.set(row.subarray(0, bitsBytes));
    if (tailBits) bits[fullBytes] &= tailMask;
    return { bits };
  }
  const idx = form === 'indices16' ? new Uint16Array(active) : new Uint32Array(active);
  let k = 0;
  for (let i = 0; i < bitsBytes; i++) {
    let b = row[i];
    if (i === fullBytes) b &= tailMask;
    while (b) {
      const low = b & -b;
      idx[k++] = (i << 3) + (31 - Math.clz32(low));
      b ^= low;
    }
  }
  const bytes = new Uint8Array(idx.buffer, idx.byteOffset, idx.byteLength);
  return form === 'indices16' ? { indices16: bytes } : { indices32: bytes };
}

/**
 * Decodes a wire mask into an in-memory row `out[offset .. offset + rowBytes)`
 * (which must be zero on entry). Throws UserError naming `what` when the mask
 * is missing, has the wrong length, names a neuron >= intermediate, or lists
 * indices that are not strictly ascending.
 */
export function decodeMaskInto(mask: Mask__Output | null | undefined, intermediate: number, out: Uint8Array,
  offset: number, what: string): number {
  if (!mask || !mask.kind) throw new UserError(`${what}: missing mask (set bits, indices16 or indices32)`);
  const bitsBytes = Math.ceil(intermediate / 8);
  switch (mask.kind) {
    case 'bits': {
      const bits = mask.bits ?? Buffer.alloc(0);
      if (bits.length !== bitsBytes) {
        throw new UserError(`${what}: bit mask of ${bits.length} bytes, expected ${bitsBytes} for ${intermediate} neurons`);
      }
      const tailBits = intermediate & 7;
      if (tailBits && bits[bitsBytes - 1] >> tailBits) {
        const high = bits[bitsBytes - 1] >> tailBits;
        const bad = (bitsBytes - 1) * 8 + tailBits + (31 - Math.clz32(high & -high));
        throw new UserError(`${what}: mask index ${bad} out of range (intermediate size ${intermediate})`);
      }
      out.set(bits, offset);
      let active = 0;
      for (let i = 0; i < bitsBytes; i++) active += POPCOUNT[bits[i]];
      return active;
    }
    case 'indices16':
    case 'indices32': {
      const width = mask.kind === 'indices16' ? 2 : 4;
      const data = (mask.kind === 'indices16' ? mask.indices16 : mask.indices32) ?? Buffer.alloc(0);
      if (data.length % width !== 0) {
        throw new UserError(`${what}: ${mask.kind} mask of ${data.length} bytes is not a whole number of ${width}-byte indices`);
      }
      const n = data.length / width;
      // encodeMask writes indices strictly ascending; anything else is a broken or hostile sender.
      let prev = -1;
      for (let j = 0; j < n; j++) {
        const p = j * width;
        const i = width === 2 ? data[p] | (data[p + 1] << 8)
          : (data[p] | (data[p + 1] << 8) | (data[p + 2] << 16) | (data[p + 3] << 24)) >>> 0;
        if (i >= intermediate) throw new UserError(`${what}: mask index ${i} out of range (intermediate size ${intermediate})`);
        if (i <= prev) {
          throw new UserError(`${what}: mask index ${i} at position ${j} follows ${prev}; indices must be strictly ascending (no duplicates)`);
        }
        prev = i;
        out[offset + (i >> 3)] |= 1 << (i & 7);
      }
      return n;
    }
    default:
      throw new UserError(`${what}: unknown mask form ${String(mask.kind)}`);
  }
}

/** Neurons set in an in-memory mask row (bits >= intermediate ignored). */
export function maskPopcount(row: Uint8Array, intermediate: number): number {
  const fullBytes = intermediate >> 3;
  let n = 0;
  for (let i = 0; i < fullBytes; i++) n += POPCOUNT[row[i]];
  if (intermediate & 7) n += POPCOUNT[row[fullBytes] & ((1 << (intermediate & 7)) - 1)];
  return n;
}
