// A look at an encoded ExpertRequest's top-level fields before protobufjs
// decodes it: decoding materialises every route as objects (about 400 B each,
// and a gzip-compressed 256 MiB message of empty routes is a few hundred KiB),
// so an expert node checks the counts first. The walk also finds the id early,
// so a malformed request is answered under its own id, and it checks each
// known field's wire type (protobufjs would read a mistyped field as garbage).

/** What the walk found; `error` set when the bytes are not a well-formed message. */
export interface RequestScan {
  /** Field 1, when present and readable (0 is proto3's default when absent). */
  id?: number;
  /** True when field 1 holds a value above Number.MAX_SAFE_INTEGER (it cannot be echoed exactly). */
  idTooLarge?: boolean;
  /** Bytes of the `hidden` Rows message (0 when absent). */
  hiddenBytes: number;
  /** hidden.count as sent (a claim: the bytes may not hold that many rows). */
  hiddenCount: number;
  routes: number;
  traceEntries: number;
  error?: string;
}

const VARINT = 0;
const I64 = 1;
const LEN = 2;
const I32 = 5;
// ExpertRequest's fields and their wire types (proto/expert.proto).
const FIELD_TYPES: Record<number, number> = { 1: VARINT, 2: VARINT, 3: VARINT, 4: LEN, 5: LEN, 6: VARINT, 7: VARINT, 8: LEN };
const TYPE_NAMES = ['varint', 'fixed64', 'length-delimited', 'start-group', 'end-group', 'fixed32', 'wire type 6', 'wire type 7'];

class Malformed extends Error {}

/** Protobuf's framing over `buf`: keys, varints, skips; throws Malformed past the end. */
class Reader {
  pos = 0;
  constructor(readonly buf: Uint8Array) {}

  get done(): boolean {
    return this.pos >= this.buf.length;
  }

  /** A varint as a double: exact up to 2^53, which is all a length, count or id may be here. */
  varint(): number {
    let value = 0;
    let scale = 1;
    for (let i = 0; i < 10; i++) {
      if (this.pos >= this.buf.length) throw new Malformed(`truncated varint at byte ${this.pos}`);
      const b = this.buf[this.pos++];
      value += (b & 0x7f) * scale;
      if (b < 0x80) return value;
      scale *= 128;
    }
    throw new Malformed(`varint longer than 10 bytes at byte ${this.pos - 10}`);
  }

  /** Skips a field's value of wire `type`; returns its bytes for a length-delimited one. */
  skip(type: number, what: string): Uint8Array | null {
    const n = type === VARINT ? -1 : type === I64 ? 8 : type === I32 ? 4 : type === LEN ? this.varint() : NaN;
    if (n < 0) {
      this.varint();
      return null;
    }
    if (Number.isNaN(n)) throw new Malformed(`${what} uses ${TYPE_NAMES[type]}, which this protocol never sends`);
    if (n > this.buf.length - this.pos) {
      throw new Malformed(`${what} declares ${n} bytes at byte ${this.pos}, but only ${this.buf.length - this.pos} remain`);
    }
    this.pos += n;
    return type === LEN ? this.buf.subarray(this.pos - n, this.pos) : null;
  }
}

/** Field 2 (count) of an encoded Rows message; 0 when absent or unreadable (decoding reports that). */
function rowsCount(buf: Uint8Array): number {
  const r = new Reader(buf);
  let count = 0;
  try {
    while (!r.done) {
      const key = r.varint();
      if (key === (2 << 3 | VARINT)) count = r.varint() % 2 ** 32;
      else r.skip(key % 8, 'hidden');
    }
  } catch (e) {
    if (e instanceof Malformed) return 0;
    throw e;
  }
  return count;
}

/** Walks the top-level fields of `buf` (an encoded ExpertRequest); never throws. */
export function scanRequest(buf: Uint8Array): RequestScan {
  const scan: RequestScan = { hiddenBytes: 0, hiddenCount: 0, routes: 0, traceEntries: 0 };
  const r = new Reader(buf);
  try {
    while (!r.done) {
      const at = r.pos;
      const key = r.varint();
      const field = Math.floor(key / 8);
      const type = key % 8;
      if (field === 0) throw new Malformed(`field number 0 at byte ${at}`);
      const want = FIELD_TYPES[field];
      if (want !== undefined && type !== want) {
        throw new Malformed(`field ${field} at byte ${at} is ${TYPE_NAMES[type]}, expected ${TYPE_NAMES[want]}`);
      }
      if (field === 1) {
        const id = r.varint();
        scan.idTooLarge = id > Number.MAX_SAFE_INTEGER;
        scan.id = scan.idTooLarge ? undefined : id;
        continue;
      }
      const bytes = r.skip(type, `field ${field} at byte ${at}`);
      if (field === 4) {
        scan.hiddenBytes = bytes!.length;
        scan.hiddenCount = rowsCount(bytes!);
      } else if (field === 5) scan.routes++;
      else if (field === 8) scan.traceEntries++;
    }
  } catch (e) {
    if (!(e instanceof Malformed)) throw e;
    scan.error = e.message;
  }
  return scan;
}
