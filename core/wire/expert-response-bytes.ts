// ExpertResponse without protobufjs: the node writes the output rows and active counts straight into one
// Buffer; the coordinator reads a response in place (rows as a view of the received bytes). The reader
// accepts any valid encoding of the message (unknown fields skipped, `active` packed or not, fields in any
// order), so a node built on another protobuf library still works.
import { routeCount } from '../routed-batch';
import type { DecodedRequest } from './expert-messages';
import type { ExpertResponse, ExpertResponse__Output, Rows__Output } from './expert-proto';
import { LEN, lenFieldSize, Reader, VARINT, varintFieldSize, varintSize, Writer } from './protobuf-bytes';
import { rowsMessageSize, writeRowsField } from './rows-bytes';

/**
 * A node's answer to a decoded request: `out` (one row per request row) in the request's reply encoding and
 * the active counts back in the request's route order.
 */
export function writeExpertResult(id: number, decoded: DecodedRequest, out: Float32Array, active: Int32Array, hiddenSize: number,
  timing: { queueUs: number; computeUs: number }): Buffer {
  const { routeOrder } = decoded;
  const nRoutes = active.length;
  const nRows = decoded.batch.nRows;
  if (out.length !== nRows * hiddenSize) throw new Error(`writeExpertResult: ${out.length} output values for ${nRows} rows of ${hiddenSize}`);
  if (routeCount(decoded.batch.groups) !== nRoutes) throw new Error('writeExpertResult: active counts do not match the routes');
  const at = (i: number) => (routeOrder ? active[routeOrder[i]] : active[i]);
  let activeBytes = 0;
  for (let i = 0; i < nRoutes; i++) activeBytes += varintSize(at(i) >>> 0);
  const rowsSize = rowsMessageSize(decoded.reply, nRows, hiddenSize);
  const queueUs = timing.queueUs >>> 0;
  const computeUs = timing.computeUs >>> 0;
  const w = new Writer(varintFieldSize(id) + lenFieldSize(rowsSize) + (nRoutes ? lenFieldSize(activeBytes) : 0) +
    varintFieldSize(queueUs) + varintFieldSize(computeUs));
  w.varintField(1, id);
  writeRowsField(w, 3, rowsSize, out, hiddenSize, null, nRows, decoded.reply);
  if (nRoutes) {
    w.lenHeader(4, activeBytes);
    for (let i = 0; i < nRoutes; i++) w.varint(at(i) >>> 0);
  }
  w.varintField(5, queueUs);
  w.varintField(6, computeUs);
  return w.finish();
}

/** Any ExpertResponse without rows (errors: id, code, message, timings). */
export function writeExpertResponse(res: ExpertResponse): Buffer {
  if (res.out) throw new Error('writeExpertResponse: rows go through writeExpertResult');
  const id = Number(res.id ?? 0);
  const error = res.error;
  const code = (error?.code ?? 0) >>> 0;
  const message = error?.message ?? '';
  const messageBytes = Buffer.byteLength(message);
  const errorSize = error ? varintFieldSize(code) + (messageBytes ? lenFieldSize(messageBytes) : 0) : 0;
  const active = res.active ?? [];
  let activeBytes = 0;
  for (const a of active) activeBytes += varintSize(a >>> 0);
  const queueUs = (res.queueUs ?? 0) >>> 0;
  const computeUs = (res.computeUs ?? 0) >>> 0;
  const w = new Writer(varintFieldSize(id) + (error ? lenFieldSize(errorSize) : 0) + (active.length ? lenFieldSize(activeBytes) : 0) +
    varintFieldSize(queueUs) + varintFieldSize(computeUs));
  w.varintField(1, id);
  if (error) {
    w.lenHeader(2, errorSize);
    w.varintField(1, code);
    if (messageBytes) w.stringField(2, message, messageBytes);
  }
  if (active.length) {
    w.lenHeader(4, activeBytes);
    for (const a of active) w.varint(a >>> 0);
  }
  w.varintField(5, queueUs);
  w.varintField(6, computeUs);
  return w.finish();
}

const ENCODING_NAMES = ['ROW_F32', 'ROW_BF16', 'ROW_INT8'];

/**
 * Reads an ExpertResponse as protobufjs would (proto-loader's options: longs as Number, enums as String,
 * defaults, absent messages null); `out.data`/`out.scales` are views of `buf`. Throws on malformed bytes.
 */
export function readExpertResponse(buf: Buffer): ExpertResponse__Output {
  const res: ExpertResponse__Output = { id: 0, error: null, out: null, active: [], queueUs: 0, computeUs: 0 };
  const r = new Reader(buf);
  try {
    while (!r.done) {
      const key = r.varint();
      const field = Math.floor(key / 8);
      const type = key % 8;
      if (field === 0) throw new Error('field number 0');
      if (field === 1 && type === VARINT) res.id = r.varint();
      else if (field === 2 && type === LEN) {
        const at = r.len();
        res.error = readError(buf, at, r.pos);
      } else if (field === 3 && type === LEN) {
        const at = r.len();
        res.out = readRowsAny(buf, at, r.pos);
      } else if (field === 4 && type === LEN) {
        const at = r.len();
        const end = r.pos;
        const a = new Reader(buf, at, end);
        while (!a.done) res.active.push(a.varint() % 2 ** 32);
      } else if (field === 4 && type === VARINT) res.active.push(r.varint() % 2 ** 32);
      else if (field === 5 && type === VARINT) res.queueUs = r.varint() % 2 ** 32;
      else if (field === 6 && type === VARINT) res.computeUs = r.varint() % 2 ** 32;
      else if (field >= 1 && field <= 6) throw new Error(`field ${field} has wire type ${type}`);
      else r.skip(type);
    }
  } catch (e) {
    throw new Error(`malformed ExpertResponse: ${(e as Error).message}`);
  }
  return res;
}

function readError(buf: Buffer, start: number, end: number): { code: number; message: string } {
  const r = new Reader(buf, start, end);
  const e = { code: 0, message: '' };
  while (!r.done) {
    const key = r.varint();
    const field = Math.floor(key / 8);
    const type = key % 8;
    if (field === 1 && type === VARINT) e.code = r.varint() % 2 ** 32;
    else if (field === 2 && type === LEN) {
      const at = r.len();
      e.message = buf.toString('utf8', at, r.pos);
    } else if (field === 1 || field === 2) throw new Error(`error field ${field} has wire type ${type}`);
    else r.skip(type);
  }
  return e;
}

function readRowsAny(buf: Buffer, start: number, end: number): Rows__Output {
  const r = new Reader(buf, start, end);
  const rows = { encoding: 'ROW_F32', count: 0, width: 0, data: EMPTY, scales: EMPTY } as Rows__Output;
  while (!r.done) {
    const key = r.varint();
    const field = Math.floor(key / 8);
    const type = key % 8;
    if (field >= 1 && field <= 3 && type === VARINT) {
      const v = r.varint() % 2 ** 32;
      if (field === 1) rows.encoding = (ENCODING_NAMES[v] ?? v) as Rows__Output['encoding'];
      else if (field === 2) rows.count = v;
      else rows.width = v;
    } else if ((field === 4 || field === 5) && type === LEN) {
      const at = r.len();
      if (field === 4) rows.data = buf.subarray(at, r.pos);
      else rows.scales = buf.subarray(at, r.pos);
    } else if (field >= 1 && field <= 5) throw new Error(`rows field ${field} has wire type ${type}`);
    else r.skip(type);
  }
  return rows;
}

const EMPTY = Buffer.alloc(0);
