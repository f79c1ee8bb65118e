// A safetensors reader and writer (https://github.com/huggingface/safetensors):
//   [u64 little-endian N][N bytes of JSON header][data section]
// The header maps tensor names to {dtype, shape, data_offsets: [begin, end]}
// (offsets relative to the data section) plus an optional "__metadata__" map.
// `open` reads and validates only the header; tensors are read lazily by
// offset, so a 100 GB checkpoint never passes through the JS heap at once and a
// process reads only the tensors it needs.
import fs from 'node:fs';
import { UserError } from './errors';

export type TensorDType = 'F32' | 'F16' | 'BF16';

export const SUPPORTED_DTYPES: readonly TensorDType[] = ['F32', 'F16', 'BF16'];

const DTYPE_BYTES: Record<TensorDType, number> = { F32: 4, F16: 2, BF16: 2 };

export function tensorDTypeBytes(dtype: TensorDType): number {
  return DTYPE_BYTES[dtype];
}

export interface TensorInfo {
  name: string;
  dtype: TensorDType;
  shape: number[];
  /** The safetensors file that holds the tensor. */
  file: string;
  /** Absolute byte offset of the tensor's data in `file`. */
  offset: number;
  nbytes: number;
}

/** The safetensors library refuses headers over 100 MB; so do we (a real index is a few hundred KB). */
const MAX_HEADER_BYTES = 100 * 1024 * 1024;
/** One FileHandle.read moves at most this many bytes (the OS caps a read near 2 GiB). */
const READ_CHUNK = 1 << 30;

function isNonNegInt(v: unknown): v is number {
  return typeof v === 'number' && Number.isSafeInteger(v) && v >= 0;
}

function product(shape: number[]): number {
  return shape.reduce((a, b) => a * b, 1);
}

export function shapeString(shape: readonly number[]): string {
  return `[${shape.join(', ')}]`;
}

/** Validates a parsed header against the data-section size; returns the tensors sorted by offset. */
function parseHeader(
  header: unknown,
  file: string,
  dataStart: number,
  dataBytes: number,
): { tensors: TensorInfo[]; metadata: Record<string, string> } {
  if (typeof header !== 'object' || header === null || Array.isArray(header)) {
    throw new UserError(`${file}: the safetensors header is not a JSON object: the file is corrupt or not safetensors`);
  }
  const metadata: Record<string, string> = {};
  const tensors: TensorInfo[] = [];
  for (const [name, entry] of Object.entries(header as Record<string, unknown>)) {
    if (name === '__metadata__') {
      if (entry === null) continue;
      if (typeof entry !== 'object' || Array.isArray(entry)) {
        throw new UserError(`${file}: "__metadata__" in the safetensors header must be an object of strings`);
      }
      for (const [k, v] of Object.entries(entry as Record<string, unknown>)) {
        if (typeof v !== 'string') {
          throw new UserError(`${file}: "__metadata__" entry '${k}' must be a string, got ${JSON.stringify(v)}`);
        }
        metadata[k] = v;
      }
      continue;
    }
    const where = `tensor '${name}' in ${file}`;
    if (typeof entry !== 'object' || entry === null || Array.isArray(entry)) {
      throw new UserError(`${where}: header entry is not an object with dtype, shape and data_offsets`);
    }
    const e = entry as { dtype?: unknown; shape?: unknown; data_offsets?: unknown };
    if (typeof e.dtype !== 'string') {
      throw new UserError(`${where}: header entry has no dtype string`);
    }
    if (!(SUPPORTED_DTYPES as readonly string[]).includes(e.dtype)) {
      throw new UserError(
        `unknown dtype '${e.dtype}' for tensor ${name} in ${file} (supported: ${SUPPORTED_DTYPES.join(', ')})`,
      );
    }
    const dtype = e.dtype as TensorDType;
    if (!Array.isArray(e.shape) || !e.shape.every(isNonNegInt)) {
      throw new UserError(`${where}: shape ${JSON.stringify(e.shape)} is not a list of non-negative integers`);
    }
    const shape = e.shape as number[];
    const off = e.data_offsets;
    if (!Array.isArray(off) || off.length !== 2 || !isNonNegInt(off[0]) || !isNonNegInt(off[1]) || off[1] < off[0]) {
      throw new UserError(`${where}: data_offsets ${JSON.stringify(off)} must be two non-negative integers [begin, end] with begin <= end`);
    }
    const [begin, end] = off as [number, number];
    if (end > dataBytes) {
      throw new UserError(
        `${where}: data_offsets [${begin}, ${end}] run past the end of the data section (${dataBytes} bytes): the file is truncated or corrupt`,
      );
    }
    const expected = product(shape) * DTYPE_BYTES[dtype];
    if (end - begin !== expected) {
      throw new UserError(
        `${where}: data_offsets [${begin}, ${end}] hold ${end - begin} bytes but ${dtype} ${shapeString(shape)} needs ${expected}: the header is corrupt`,
      );
    }
    tensors.push({ name, dtype, shape, file, offset: dataStart + begin, nbytes: end - begin });
  }
  const sorted = [...tensors].sort((a, b) => a.offset - b.offset || a.nbytes - b.nbytes);
  // Zero-byte tensors occupy no range; among the others, sorted and disjoint means each
  // starts at or after the end of the previous one.
  let last: TensorInfo | undefined;
  for (const cur of sorted) {
    if (cur.nbytes === 0) continue;
    if (last && cur.offset < last.offset + last.nbytes) {
      const range = (t: TensorInfo) => `[${t.offset - dataStart}, ${t.offset - dataStart + t.nbytes})`;
      throw new UserError(
        `tensor '${cur.name}' in ${file}: its data ${range(cur)} overlaps tensor '${last.name}' ${range(last)}: the header is corrupt`,
      );
    }
    last = cur;
  }
  return { tensors: sorted, metadata };
}

async function readFully(fh: fs.promises.FileHandle, dst: Uint8Array, position: number, file: string, what: string): Promise<void> {
  let done = 0;
  while (done < dst.byteLength) {
    const len = Math.min(READ_CHUNK, dst.byteLength - done);
    const { bytesRead } = await fh.read(dst, done, len, position + done);
    if (bytesRead === 0) {
      throw new UserError(`${file}: unexpected end of file while reading ${what}: the file is truncated`);
    }
    done += bytesRead;
  }
}

export class SafetensorsFile {
  readonly path: string;
  readonly metadata: Record<string, string>;
  /** Bytes of the whole file. */
  readonly size: number;
  private readonly byName: Map<string, TensorInfo>;
  private readonly sorted: TensorInfo[];
  private fh: fs.promises.FileHandle | null;

  private constructor(path: string, fh: fs.promises.FileHandle, size: number, tensors: TensorInfo[], metadata: Record<string, string>) {
    this.path = path;
    this.fh = fh;
    this.size = size;
    this.sorted = tensors;
    this.metadata = metadata;
    this.byName = new Map(tensors.map((t) => [t.name, t]));
  }

  /** Opens `path` and validates its header; the tensor data is not read. */
  static async open(path: string): Promise<SafetensorsFile> {
    let fh: fs.promises.FileHandle;
    try {
      fh = await fs.promises.open(path, 'r');
    } catch (err) {
      const code = (err as NodeJS.ErrnoException).code;
      if (code === 'ENOENT') throw new UserError(`${path}: safetensors file not found`);
      if (code === 'EISDIR') throw new UserError(`${path}: is a directory, expected a safetensors file`);
      throw new UserError(`${path}: cannot open (${code ?? String(err)})`);
    }
    try {
      const size = (await fh.stat()).size;
      if (size < 8) {
        throw new UserError(`${path}: file is ${size} bytes, too short for the 8-byte safetensors header length: the file is truncated or not safetensors`);
      }
      const lenBuf = new Uint8Array(8);
      await readFully(fh, lenBuf, 0, path, 'the header length');
      const headerLen = new DataView(lenBuf.buffer).getBigUint64(0, true);
      if (headerLen > BigInt(size - 8)) {
        throw new UserError(
          `${path}: header length ${headerLen} runs past the end of the file (${size} bytes): the file is truncated or not safetensors`,
        );
      }
      const n = Number(headerLen);
      if (n > MAX_HEADER_BYTES) {
        throw new UserError(`${path}: header length ${n} is over the 100 MB limit: the file is corrupt or not safetensors`);
      }
      if (n < 2) {
        throw new UserError(`${path}: header length ${n} is too small for a JSON header: the file is corrupt or not safetensors`);
      }
      const headerBuf = new Uint8Array(n);
      await readFully(fh, headerBuf, 8, path, 'the header');
      let header: unknown;
      try {
        header = JSON.parse(new TextDecoder('utf-8', { fatal: true }).decode(headerBuf));
      } catch {
        throw new UserError(`${path}: the ${n}-byte safetensors header is not valid UTF-8 JSON: the file is corrupt or not safetensors`);
      }
      const dataStart = 8 + n;
      const { tensors, metadata } = parseHeader(header, path, dataStart, size - dataStart);
      return new SafetensorsFile(path, fh, size, tensors, metadata);
    } catch (err) {
      await fh.close();
      throw err;
    }
  }

  /** Every tensor, in file order. */
  tensors(): TensorInfo[] {
    return this.sorted.map((t) => ({ ...t, shape: [...t.shape] }));
  }

  names(): string[] {
    return this.sorted.map((t) => t.name);
  }

  info(name: string): TensorInfo | undefined {
    const t = this.byName.get(name);
    return t && { ...t, shape: [...t.shape] };
  }

  /** Reads one tensor's bytes into a fresh, 8-byte aligned buffer (a Float32Array view over it works). */
  async read(name: string): Promise<Uint8Array> {
    const t = this.byName.get(name);
    if (!t) throw new UserError(`tensor '${name}' is not in ${this.path}`);
    const dst = new Uint8Array(new ArrayBuffer(t.nbytes));
    await this.readInto(t, dst);
    return dst;
  }

  /** Reads the tensor described by `t` (an entry of this file) into `dst` (exactly t.nbytes long). */
  async readInto(t: TensorInfo, dst: Uint8Array): Promise<void> {
    if (!this.fh) throw new Error(`${this.path}: read after close`);
    if (dst.byteLength !== t.nbytes) throw new Error(`readInto ${t.name}: buffer is ${dst.byteLength} bytes, tensor is ${t.nbytes}`);
    await readFully(this.fh, dst, t.offset, this.path, `tensor '${t.name}'`);
  }

  async close(): Promise<void> {
    const fh = this.fh;
    this.fh = null;
    if (fh) await fh.close();
  }
}

/** One tensor to write; `data` may be a function so large tensors are produced one at a time. */
export interface TensorToWrite {
  name: string;
  dtype: TensorDType;
  shape: number[];
  data: Uint8Array | (() => Uint8Array | Promise<Uint8Array>);
}

/** The 8-byte length plus the JSON header, space-padded to a multiple of 8 bytes. */
function buildHeader(tensors: { name: string; dtype: TensorDType; shape: number[] }[], metadata?: Record<string, string>): Uint8Array {
  const header: Record<string, unknown> = {};
  if (metadata && Object.keys(metadata).length > 0) header.__metadata__ = metadata;
  let pos = 0;
  const seen = new Set<string>();
  for (const t of tensors) {
    if (t.name === '__metadata__' || seen.has(t.name)) throw new Error(`writeSafetensors: duplicate or reserved tensor name '${t.name}'`);
    seen.add(t.name);
    if (!(SUPPORTED_DTYPES as readonly string[]).includes(t.dtype)) throw new Error(`writeSafetensors: unknown dtype '${t.dtype}' for ${t.name}`);
    if (!t.shape.every(isNonNegInt)) throw new Error(`writeSafetensors: bad shape ${JSON.stringify(t.shape)} for ${t.name}`);
    const nbytes = product(t.shape) * DTYPE_BYTES[t.dtype];
    header[t.name] = { dtype: t.dtype, shape: t.shape, data_offsets: [pos, pos + nbytes] };
    pos += nbytes;
  }
  const json = new TextEncoder().encode(JSON.stringify(header));
  // Pad with spaces (as the reference library does) so the data section starts 8-byte aligned.
  const padded = Math.ceil(json.byteLength / 8) * 8;
  const out = new Uint8Array(8 + padded).fill(0x20, 8);
  new DataView(out.buffer).setBigUint64(0, BigInt(padded), true);
  out.set(json, 8);
  return out;
}

/** Writes a safetensors file, streaming one tensor at a time (written to PATH.tmp, then renamed). */
export async function writeSafetensors(path: string, tensors: TensorToWrite[], metadata?: Record<string, string>): Promise<void> {
  const header = buildHeader(tensors, metadata);
  const tmp = `${path}.tmp`;
  const fh = await fs.promises.open(tmp, 'w');
  try {
    await fh.write(header);
    for (const t of tensors) {
      const data = typeof t.data === 'function' ? await t.data() : t.data;
      const nbytes = product(t.shape) * DTYPE_BYTES[t.dtype];
      if (data.byteLength !== nbytes) {
        throw new Error(`writeSafetensors: tensor ${t.name} has ${data.byteLength} bytes, ${t.dtype} ${shapeString(t.shape)} needs ${nbytes}`);
      }
      let done = 0;
      while (done < nbytes) {
        const { bytesWritten } = await fh.write(data, done, Math.min(READ_CHUNK, nbytes - done));
        done += bytesWritten;
      }
    }
  } catch (err) {
    await fh.close();
    await fs.promises.rm(tmp, { force: true });
    throw err;
  }
  await fh.close();
  await fs.promises.rename(tmp, path);
}
