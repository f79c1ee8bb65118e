// Protobuf's wire format by hand, for the two messages of every layer call (ExpertRequest, ExpertResponse):
// sizes first, then one Buffer of exactly that size written front to back, and a reader that walks a
// received Buffer in place. protobufjs builds a JS object per route and per field on both sides; these
// write rows and masks straight into the message and read them straight into kernel inputs.
// Only what those two messages use: varints up to 2^53, fixed32 floats, length-delimited fields.

export const VARINT = 0;
export const I64 = 1;
export const LEN = 2;
export const I32 = 5;

/** Bytes a varint of `v` (an integer 0 <= v < 2^53) takes. */
export function varintSize(v: number): number {
  if (v < 0x80) return 1;
  if (v < 0x4000) return 2;
  if (v < 0x200000) return 3;
  if (v < 0x10000000) return 4;
  let n = 4;
  v = Math.floor(v / 0x10000000);
  while (v > 0) {
    n++;
    v = Math.floor(v / 128);
  }
  return n;
}

/** Bytes a length-delimited field of `len` payload bytes takes, with its one-byte key (fields 1-15). */
export function lenFieldSize(len: number): number {
  return 1 + varintSize(len) + len;
}

/** Bytes a varint field takes with its key, or 0 for proto3's default 0 (not written). */
export function varintFieldSize(v: number): number {
  return v === 0 ? 0 : 1 + varintSize(v);
}

/** Writes into one Buffer allocated at the exact size; `pos` must equal its length at the end. */
export class Writer {
  pos = 0;
  readonly buf: Buffer;

  constructor(size: number) {
    this.buf = Buffer.allocUnsafe(size);
  }

  varint(v: number): void {
    const buf = this.buf;
    while (v >= 0x80000000) {
      buf[this.pos++] = (v % 128) | 0x80;
      v = Math.floor(v / 128);
    }
    while (v >= 0x80) {
      buf[this.pos++] = (v & 0x7f) | 0x80;
      v >>>= 7;
    }
    buf[this.pos++] = v;
  }

  key(field: number, type: number): void {
    this.buf[this.pos++] = (field << 3) | type;
  }

  /** A varint field, skipped when 0 (proto3 default). */
  varintField(field: number, v: number): void {
    if (v === 0) return;
    this.key(field, VARINT);
    this.varint(v);
  }

  /** The key and length of a length-delimited field whose `len` payload bytes follow. */
  lenHeader(field: number, len: number): void {
    this.key(field, LEN);
    this.varint(len);
  }

  bytesField(field: number, bytes: Uint8Array): void {
    this.lenHeader(field, bytes.length);
    this.buf.set(bytes, this.pos);
    this.pos += bytes.length;
  }

  floatField(field: number, v: number): void {
    this.key(field, I32);
    this.buf.writeFloatLE(v, this.pos);
    this.pos += 4;
  }

  stringField(field: number, s: string, byteLength: number): void {
    this.lenHeader(field, byteLength);
    this.pos += this.buf.write(s, this.pos, byteLength, 'utf8');
  }

  /** The finished message; throws when the sizes computed up front were wrong (a bug here, not the caller's). */
  finish(): Buffer {
    if (this.pos !== this.buf.length) throw new Error(`protobuf writer: wrote ${this.pos} bytes of a ${this.buf.length}-byte message`);
    return this.buf;
  }
}

/** Thrown by Reader for bytes it does not accept; the caller decides what that means. */
export class NotCanonical extends Error {}

/** Walks `buf[start, end)`; every read checks the bounds. */
export class Reader {
  pos: number;

  constructor(readonly buf: Uint8Array, start = 0, public end = buf.length) {
    this.pos = start;
  }

  get done(): boolean {
    return this.pos >= this.end;
  }

  /** A varint as a number; values at or above 2^53 are refused. */
  varint(): number {
    const buf = this.buf;
    let b = this.pos < this.end ? buf[this.pos++] : this.fail('truncated varint');
    if (b < 0x80) return b;
    let value = b & 0x7f;
    let scale = 128;
    for (let i = 1; i < 8; i++) {
      b = this.pos < this.end ? buf[this.pos++] : this.fail('truncated varint');
      value += (b & 0x7f) * scale;
      if (b < 0x80) {
        if (value > Number.MAX_SAFE_INTEGER) this.fail('varint above 2^53 - 1');
        return value;
      }
      scale *= 128;
    }
    return this.fail('varint above 2^53 - 1');
  }

  /** A varint that must fit in 32 bits (a uint32 or enum field). */
  uint32(): number {
    const v = this.varint();
    if (v > 0xffffffff) this.fail('uint32 field above 2^32 - 1');
    return v;
  }

  /** The payload of a length-delimited field: returns its start, leaves pos at its end. */
  len(): number {
    const n = this.varint();
    if (n > this.end - this.pos) this.fail(`field of ${n} bytes at byte ${this.pos}, ${this.end - this.pos} remain`);
    const at = this.pos;
    this.pos += n;
    return at;
  }

  float(): number {
    if (this.end - this.pos < 4) this.fail('truncated fixed32');
    const buf = this.buf;
    const p = this.pos;
    this.pos += 4;
    F32_BYTES[0] = buf[p];
    F32_BYTES[1] = buf[p + 1];
    F32_BYTES[2] = buf[p + 2];
    F32_BYTES[3] = buf[p + 3];
    return F32[0];
  }

  /** Skips a field's value of wire `type` (unknown fields, which a reader must ignore). */
  skip(type: number): void {
    if (type === VARINT) this.varint();
    else if (type === LEN) this.len();
    else if (type === I32 || type === I64) {
      const n = type === I32 ? 4 : 8;
      if (this.end - this.pos < n) this.fail('truncated fixed field');
      this.pos += n;
    } else this.fail(`wire type ${type}`);
  }

  fail(why: string): never {
    throw new NotCanonical(why);
  }
}

const F32 = new Float32Array(1);
const F32_BYTES = new Uint8Array(F32.buffer);
