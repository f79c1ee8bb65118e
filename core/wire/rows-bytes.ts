// A Rows message written straight into a message buffer (protobuf-bytes.ts): the same bytes per value as
// encodeRows (rows.ts) computes, without its intermediate arrays.
import { f32ToBf16, type WireEncoding } from './rows';
import { lenFieldSize, varintFieldSize, type Writer } from './protobuf-bytes';

const ENCODING_NUMBER: Record<WireEncoding, number> = { f32: 0, bf16: 1, int8: 2 };

/** Payload bytes of a Rows message of `count` rows of `width` values (the field's key and length not included). */
export function rowsMessageSize(encoding: WireEncoding, count: number, width: number): number {
  const values = count * width;
  const data = encoding === 'f32' ? values * 4 : encoding === 'bf16' ? values * 2 : values;
  return varintFieldSize(ENCODING_NUMBER[encoding]) + varintFieldSize(count) + varintFieldSize(width) +
    lenFieldSize(data) + (encoding === 'int8' ? lenFieldSize(count * 4) : 0);
}

/**
 * Writes field `field` = Rows of `src` ([*, width] row-major): `rows` picks which rows in what order (null:
 * all `count`). `size` is rowsMessageSize(encoding, count, width).
 */
export function writeRowsField(w: Writer, field: number, size: number, src: Float32Array, width: number,
  rows: ArrayLike<number> | null, count: number, encoding: WireEncoding): void {
  w.lenHeader(field, size);
  w.varintField(1, ENCODING_NUMBER[encoding]);
  w.varintField(2, count);
  w.varintField(3, width);
  const buf = w.buf;
  switch (encoding) {
    case 'f32': {
      w.lenHeader(4, count * width * 4);
      const bytes = new Uint8Array(src.buffer, src.byteOffset, src.byteLength);
      const rowBytes = width * 4;
      if (!rows) {
        buf.set(bytes.subarray(0, count * rowBytes), w.pos);
        w.pos += count * rowBytes;
      } else {
        for (let i = 0; i < count; i++) {
          const s = rows[i] * rowBytes;
          buf.set(bytes.subarray(s, s + rowBytes), w.pos);
          w.pos += rowBytes;
        }
      }
      return;
    }
    case 'bf16': {
      w.lenHeader(4, count * width * 2);
      let p = w.pos;
      for (let i = 0; i < count; i++) {
        const s = (rows ? rows[i] : i) * width;
        for (let j = 0; j < width; j++) {
          const h = f32ToBf16(src[s + j]);
          buf[p++] = h & 0xff;
          buf[p++] = h >>> 8;
        }
      }
      w.pos = p;
      return;
    }
    case 'int8': {
      // Data first, scales after it: each row's scale is written into the scales field as the row is encoded.
      w.lenHeader(4, count * width);
      const dataAt = w.pos;
      w.pos += count * width;
      w.lenHeader(5, count * 4);
      const scalesAt = w.pos;
      w.pos += count * 4;
      for (let i = 0; i < count; i++) {
        const s = (rows ? rows[i] : i) * width;
        const o = dataAt + i * width;
        let max = 0;
        for (let j = 0; j < width; j++) max = Math.max(max, Math.abs(src[s + j]));
        const scale = Math.fround(max / 127);
        buf.writeFloatLE(scale, scalesAt + i * 4);
        if (scale === 0) {
          buf.fill(0, o, o + width);
          continue;
        }
        const inv = 1 / scale;
        for (let j = 0; j < width; j++) {
          const q = Math.round(src[s + j] * inv);
          buf[o + j] = (q > 127 ? 127 : q < -127 ? -127 : q) & 0xff;
        }
      }
      return;
    }
  }
}
