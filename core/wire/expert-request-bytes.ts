// ExpertRequest without protobufjs, the call path of every layer:
//   coordinator: planExpertRequest(...).encode(id) writes the hidden rows and every route (row, expert,
//     weight, mask in its smaller form) straight into one Buffer of the exact size; protobufjs decodes those
//     bytes to the same message protobufjs writes for it (test/cluster/wire-reference.ts builds that reference).
//   node: readExpertRequest(bytes) walks the received Buffer once and fills the RoutedBatch's groups (masks
//     decoded into the kernel's mask rows) with every check decodeExpertRequest makes. A request that fails
//     a check, or that is not in the canonical form this writer produces (unknown or repeated fields, a
//     second mask form, ...), is handed to the reference path (protobufjs + decodeExpertRequest), so every
//     rejection keeps its exact message and gRPC code, and any other client of proto/expert.proto still works.
import { status } from '@grpc/grpc-js';
import type { ExpertGroup, RoutedBatch } from '../routed-batch';
import { decodeExpertRequest, type DecodedRequest, type HeldExperts, type RequestOptions, WireRejection } from './expert-messages';
import { expertProto, type Rows__Output } from './expert-proto';
import { maskPopcount, maskWireBytes } from './masks';
import { I32, LEN, lenFieldSize, NotCanonical, Reader, VARINT, varintFieldSize, Writer } from './protobuf-bytes';
import { decodeRows, fromProtoEncoding, type WireEncoding } from './rows';
import { rowsMessageSize, writeRowsField } from './rows-bytes';

const FORM_BITS = 1;
const FORM_IDX16 = 2;
const FORM_IDX32 = 3;

export interface ExpertRequestPlan {
  /** The batch rows of the message's hidden rows, in order. */
  rows: Int32Array;
  /** Routes in the message (group order). */
  routes: number;
  /** The message with this id: protobuf bytes of ExpertRequest. */
  encode(id: number): Buffer;
}

/**
 * One node's message for `groups` (whole groups of `batch`): each
 * routed row's hidden state once (ascending batch row), then the routes in group order. Sizes everything
 * up front; encode(id) writes the one Buffer.
 */
export function planExpertRequest(batch: RoutedBatch, groups: readonly ExpertGroup[], o: RequestOptions): ExpertRequestPlan {
  const R = batch.maskRowBytes;
  const I = o.intermediateSize;
  const local = new Int32Array(batch.nRows).fill(-1);
  let nRoutes = 0;
  for (const g of groups) {
    nRoutes += g.rows.length;
    for (let j = 0; j < g.rows.length; j++) local[g.rows[j]] = 0;
  }
  let n = 0;
  for (let r = 0; r < batch.nRows; r++) if (local[r] === 0) local[r] = n++;
  const rows = new Int32Array(n);
  for (let r = 0; r < batch.nRows; r++) if (local[r] >= 0) rows[local[r]] = r;

  // Per route: its mask's form and active count, and the Route message's size.
  const form = new Uint8Array(nRoutes);
  const active = new Int32Array(nRoutes);
  const routeSize = new Int32Array(nRoutes);
  const bitsBytes = Math.ceil(I / 8);
  let routesBytes = 0;
  let k = 0;
  for (const g of groups) {
    for (let j = 0; j < g.rows.length; j++, k++) {
      const a = maskPopcount(g.masks.subarray(j * R, (j + 1) * R), I);
      const { form: f, bytes } = maskWireBytes(I, a);
      form[k] = f === 'bits' ? FORM_BITS : f === 'indices16' ? FORM_IDX16 : FORM_IDX32;
      active[k] = a;
      const w = g.weights[j];
      const size = varintFieldSize(local[g.rows[j]]) + varintFieldSize(g.expert) + (Object.is(w, 0) ? 0 : 5) +
        lenFieldSize(lenFieldSize(f === 'bits' ? bitsBytes : bytes));
      routeSize[k] = size;
      routesBytes += lenFieldSize(size);
    }
  }
  const layer = batch.layer;
  const stepId = Math.trunc(o.stepId);
  const timeoutMs = o.timeoutMs >>> 0;
  const reply = o.wire === 'f32' ? 0 : o.wire === 'bf16' ? 1 : 2;
  const hiddenSize = rowsMessageSize(o.wire, n, o.hiddenSize);
  const trace = Object.entries(o.traceContext ?? {}).map(([key, value]) => {
    const kb = Buffer.byteLength(key);
    const vb = Buffer.byteLength(String(value));
    return { key, value: String(value), kb, vb, size: lenFieldSize(kb) + lenFieldSize(vb) };
  });
  let rest = varintFieldSize(stepId) + varintFieldSize(layer) + lenFieldSize(hiddenSize) + routesBytes +
    varintFieldSize(reply) + varintFieldSize(timeoutMs);
  for (const t of trace) rest += lenFieldSize(t.size);

  const encode = (id: number): Buffer => {
    const w = new Writer(varintFieldSize(id) + rest);
    w.varintField(1, id);
    w.varintField(2, stepId);
    w.varintField(3, layer);
    writeRowsField(w, 4, hiddenSize, batch.hidden, o.hiddenSize, rows, n, o.wire);
    const buf = w.buf;
    let k = 0;
    for (const g of groups) {
      for (let j = 0; j < g.rows.length; j++, k++) {
        w.lenHeader(5, routeSize[k]);
        w.varintField(1, local[g.rows[j]]);
        w.varintField(2, g.expert);
        const weight = g.weights[j];
        if (!Object.is(weight, 0)) w.floatField(3, weight);
        const f = form[k];
        const a = active[k];
        const payload = f === FORM_BITS ? bitsBytes : f === FORM_IDX16 ? 2 * a : 4 * a;
        w.lenHeader(4, lenFieldSize(payload));
        w.lenHeader(f, payload);
        const m = j * R;
        const masks = g.masks;
        let p = w.pos;
        if (f === FORM_BITS) {
          buf.set(masks.subarray(m, m + bitsBytes), p);
          if (I & 7) buf[p + bitsBytes - 1] &= (1 << (I & 7)) - 1;
          p += bitsBytes;
        } else {
          // The set bits below I, ascending, as little-endian uint16 or uint32.
          const fullBytes = I >> 3;
          const tailMask = (1 << (I & 7)) - 1;
          for (let i = 0; i < bitsBytes; i++) {
            let b = masks[m + i];
            if (i === fullBytes) b &= tailMask;
            while (b) {
              const low = b & -b;
              const idx = (i << 3) + (31 - Math.clz32(low));
              buf[p++] = idx & 0xff;
              buf[p++] = (idx >>> 8) & 0xff;
              if (f === FORM_IDX32) {
                buf[p++] = (idx >>> 16) & 0xff;
                buf[p++] = idx >>> 24;
              }
              b ^= low;
            }
          }
        }
        w.pos = p;
      }
    }
    w.varintField(6, reply);
    w.varintField(7, timeoutMs);
    for (const t of trace) {
      w.lenHeader(8, t.size);
      w.stringField(1, t.key, t.kb);
      w.stringField(2, t.value, t.vb);
    }
    return w.finish();
  };
  return { rows, routes: nRoutes, encode };
}

/** A request read by an expert node: the RoutedBatch and what its hooks and queue need. */
export interface ReadRequest extends DecodedRequest {
  id: number;
  stepId: number;
  timeoutMs: number;
  traceContext: Record<string, string>;
  /** The hidden rows' encoding. */
  wire: WireEncoding;
  routes: number;
  /** Payload bytes: hidden rows, scales and masks. */
  bytesIn: number;
}

/**
 * Reads and validates an ExpertRequest against what `held` holds. Throws WireRejection exactly as
 * protobufjs decoding followed by decodeExpertRequest does (INVALID_ARGUMENT 'malformed request: ...' for
 * bytes protobufjs cannot read).
 */
export function readExpertRequest(bytes: Buffer, held: HeldExperts, maskRowBytes: number): ReadRequest {
  try {
    return readCanonical(bytes, held, maskRowBytes);
  } catch (e) {
    if (!(e instanceof NotCanonical)) throw e;
  }
  return readReference(bytes, held, maskRowBytes);
}

/** The reference path: protobufjs objects, then decodeExpertRequest. */
export function readReference(bytes: Buffer, held: HeldExperts, maskRowBytes: number): ReadRequest {
  let req;
  try {
    req = expertProto().service.Run.requestDeserialize(bytes);
  } catch (e) {
    throw new WireRejection(status.INVALID_ARGUMENT, `malformed request: ${(e as Error).message}`);
  }
  const decoded = decodeExpertRequest(req, held, maskRowBytes);
  let maskBytesIn = 0;
  for (const r of req.routes) maskBytesIn += (r.mask?.bits ?? r.mask?.indices16 ?? r.mask?.indices32)?.length ?? 0;
  return {
    ...decoded, id: Number(req.id), stepId: Number(req.stepId), timeoutMs: req.timeoutMs, traceContext: req.traceContext ?? {},
    wire: fromProtoEncoding(req.hidden!.encoding), routes: req.routes.length,
    bytesIn: req.hidden!.data.length + (req.hidden!.scales?.length ?? 0) + maskBytesIn,
  };
}

const notCanonical = (why: string): never => {
  throw new NotCanonical(why);
};

/**
 * The fast path alone; throws NotCanonical (protobuf-bytes.ts) for anything it leaves to the reference
 * path, every rejection included. Exported for tests, which check that it, not the fallback, reads
 * what planExpertRequest writes.
 */
export function readCanonical(bytes: Buffer, held: HeldExperts, maskRowBytes: number): ReadRequest {
  const { numLayers, numExperts, hiddenSize: H, intermediateSize: I } = held.dims;
  const r = new Reader(bytes);
  let id = 0;
  let stepId = 0;
  let layer = 0;
  let reply = 0;
  let timeoutMs = 0;
  let hiddenAt = -1;
  let hiddenEnd = -1;
  let seen = 0;
  let nRoutes = 0;
  let routeSpans = ROUTE_SPANS;
  const traceContext: Record<string, string> = {};
  while (!r.done) {
    const key = r.varint();
    const field = key >>> 3;
    const type = key & 7;
    if (field < 1 || field > 8 || key > 0xff) notCanonical(`field ${field}`);
    if (field !== 5 && field !== 8) {
      if (seen & (1 << field)) notCanonical(`field ${field} repeated`);
      seen |= 1 << field;
    }
    if (field === 4 || field === 5 || field === 8) {
      if (type !== LEN) notCanonical('wire type');
      const at = r.len();
      if (field === 4) {
        hiddenAt = at;
        hiddenEnd = r.pos;
      } else if (field === 5) {
        if (2 * nRoutes + 2 > routeSpans.length) {
          const grown = new Int32Array(routeSpans.length * 2);
          grown.set(routeSpans);
          routeSpans = grown;
        }
        routeSpans[2 * nRoutes] = at;
        routeSpans[2 * nRoutes + 1] = r.pos;
        nRoutes++;
      } else {
        readTraceEntry(bytes, at, r.pos, traceContext);
      }
      continue;
    }
    if (type !== VARINT) notCanonical('wire type');
    if (field === 1 || field === 2) {
      const v = r.varint();
      if (field === 1) id = v;
      else stepId = v;
    } else {
      const v = r.uint32();
      if (field === 3) layer = v;
      else if (field === 6) reply = v;
      else timeoutMs = v;
    }
  }
  if (routeSpans !== ROUTE_SPANS && routeSpans.length <= MAX_KEPT_SPANS) ROUTE_SPANS = routeSpans;

  // The checks of decodeExpertRequest, in its order; a failing one goes to the reference path for its message.
  if (layer >= numLayers || !held.holdsLayer(layer)) notCanonical('layer');
  if (hiddenAt < 0) notCanonical('hidden');
  const rows = readRows(bytes, hiddenAt, hiddenEnd);
  const nRows = rows.count;
  if (nRows === 0) notCanonical('count');
  let hidden: Float32Array;
  try {
    hidden = decodeRows(rows, nRows, H, 'hidden', { finite: true });
  } catch {
    return notCanonical('hidden rows');
  }
  if (reply > 2 || nRoutes === 0) notCanonical('reply or routes');
  if (nRoutes > nRows * held.expertsInLayer(layer)) notCanonical('routes');

  // Pass 1: every route read and checked, counted per expert.
  const routeRow = new Int32Array(nRoutes);
  const routeExpert = new Int32Array(nRoutes);
  const routeWeight = new Float32Array(nRoutes);
  const maskKind = new Uint8Array(nRoutes);
  const maskAt = new Int32Array(nRoutes);
  const maskLen = new Int32Array(nRoutes);
  const pairs = new Uint8Array(nRows * numExperts);
  const perExpert = new Int32Array(numExperts);
  let inOrder = true;
  let prevExpert = -1;
  let maskBytesIn = 0;
  const rr = new Reader(bytes);
  for (let i = 0; i < nRoutes; i++) {
    rr.pos = routeSpans[2 * i];
    rr.end = routeSpans[2 * i + 1];
    let row = 0;
    let expert = 0;
    let weight = 0;
    let fields = 0;
    let maskStart = -1;
    let maskEnd = -1;
    while (!rr.done) {
      const key = rr.varint();
      const f = key >>> 3;
      if (f < 1 || f > 4 || key > 0xff || fields & (1 << f)) notCanonical('route field');
      fields |= 1 << f;
      const type = key & 7;
      if (f === 1 || f === 2) {
        if (type !== VARINT) notCanonical('wire type');
        if (f === 1) row = rr.uint32();
        else expert = rr.uint32();
      } else if (f === 3) {
        if (type !== I32) notCanonical('wire type');
        weight = rr.float();
      } else {
        if (type !== LEN) notCanonical('wire type');
        maskStart = rr.len();
        maskEnd = rr.pos;
      }
    }
    if (row >= nRows || expert >= numExperts || !held.has(layer, expert) || !Number.isFinite(weight)) notCanonical('route');
    const pair = row * numExperts + expert;
    if (pairs[pair]) notCanonical('route repeated');
    pairs[pair] = 1;
    if (maskStart < 0) notCanonical('mask missing');
    // The Mask: exactly one of its three fields.
    rr.pos = maskStart;
    rr.end = maskEnd;
    if (rr.done) notCanonical('mask empty');
    const mkey = rr.varint();
    const kind = mkey >>> 3;
    if ((mkey & 7) !== LEN || kind < 1 || kind > 3) notCanonical('mask field');
    maskAt[i] = rr.len();
    maskLen[i] = rr.pos - maskAt[i];
    if (!rr.done) notCanonical('mask has more than one field');
    maskKind[i] = kind;
    maskBytesIn += maskLen[i];
    routeRow[i] = row;
    routeExpert[i] = expert;
    routeWeight[i] = weight;
    if (expert < prevExpert) inOrder = false;
    prevExpert = expert;
    perExpert[expert]++;
  }

  // Pass 2: each route placed in its expert's group (request order within a group), its mask decoded in place.
  const groups: ExpertGroup[] = [];
  const groupOf = new Int32Array(numExperts).fill(-1);
  for (let e = 0; e < numExperts; e++) {
    if (perExpert[e] === 0) continue;
    groupOf[e] = groups.length;
    const c = perExpert[e];
    groups.push({ expert: e, rows: new Int32Array(c), weights: new Float32Array(c), masks: new Uint8Array(c * maskRowBytes) });
  }
  const starts = new Int32Array(groups.length);
  for (let gi = 1; gi < groups.length; gi++) starts[gi] = starts[gi - 1] + groups[gi - 1].rows.length;
  const filled = new Int32Array(groups.length);
  const routeOrder = inOrder ? null : new Int32Array(nRoutes);
  const bitsBytes = Math.ceil(I / 8);
  const tailBits = I & 7;
  for (let i = 0; i < nRoutes; i++) {
    const gi = groupOf[routeExpert[i]];
    const g = groups[gi];
    const j = filled[gi]++;
    g.rows[j] = routeRow[i];
    g.weights[j] = routeWeight[i];
    const out = g.masks;
    const offset = j * maskRowBytes;
    const at = maskAt[i];
    const len = maskLen[i];
    if (maskKind[i] === FORM_BITS) {
      if (len !== bitsBytes) notCanonical('bit mask length');
      if (tailBits && bytes[at + bitsBytes - 1] >> tailBits) notCanonical('bit mask tail');
      out.set(bytes.subarray(at, at + len), offset);
    } else {
      const width = maskKind[i] === FORM_IDX16 ? 2 : 4;
      if (len % width !== 0) notCanonical('index mask length');
      let prev = -1;
      for (let p = at; p < at + len; p += width) {
        const idx = width === 2 ? bytes[p] | (bytes[p + 1] << 8)
          : (bytes[p] | (bytes[p + 1] << 8) | (bytes[p + 2] << 16) | (bytes[p + 3] << 24)) >>> 0;
        if (idx >= I || idx <= prev) notCanonical('mask index');
        prev = idx;
        out[offset + (idx >> 3)] |= 1 << (idx & 7);
      }
    }
    if (routeOrder) routeOrder[i] = starts[gi] + j;
  }
  const wire = fromProtoEncoding(rows.encoding);
  return {
    batch: { layer, nRows, hidden, maskRowBytes, groups }, reply: fromProtoEncoding(reply), routeOrder,
    id, stepId, timeoutMs, traceContext, wire, routes: nRoutes,
    bytesIn: rows.data.length + rows.scales.length + maskBytesIn,
  };
}

/** Where the routes of the last request were (start, end pairs), kept between calls up to a size. */
let ROUTE_SPANS = new Int32Array(2 * 256);
const MAX_KEPT_SPANS = 2 * 65536;

/** A Rows message in canonical form, its bytes as views of `bytes`. */
function readRows(bytes: Buffer, start: number, end: number): Rows__Output {
  const r = new Reader(bytes, start, end);
  let encoding = 0;
  let count = 0;
  let width = 0;
  let data: Buffer = EMPTY;
  let scales: Buffer = EMPTY;
  let fields = 0;
  while (!r.done) {
    const key = r.varint();
    const f = key >>> 3;
    if (f < 1 || f > 5 || key > 0xff || fields & (1 << f)) notCanonical('rows field');
    fields |= 1 << f;
    if (f <= 3) {
      if ((key & 7) !== VARINT) notCanonical('wire type');
      const v = r.uint32();
      if (f === 1) encoding = v;
      else if (f === 2) count = v;
      else width = v;
    } else {
      if ((key & 7) !== LEN) notCanonical('wire type');
      const at = r.len();
      if (f === 4) data = bytes.subarray(at, r.pos);
      else scales = bytes.subarray(at, r.pos);
    }
  }
  if (encoding > 2) notCanonical('row encoding');
  return { encoding: ENCODING_NAMES[encoding], count, width, data, scales };
}

const ENCODING_NAMES = ['ROW_F32', 'ROW_BF16', 'ROW_INT8'] as const;
const EMPTY = Buffer.alloc(0);

/** One trace_context map entry (key = 1, value = 2, both strings). */
function readTraceEntry(bytes: Buffer, start: number, end: number, into: Record<string, string>): void {
  const r = new Reader(bytes, start, end);
  let key = '';
  let value = '';
  let fields = 0;
  while (!r.done) {
    const k = r.varint();
    const f = k >>> 3;
    if ((f !== 1 && f !== 2) || (k & 7) !== LEN || fields & (1 << f)) notCanonical('trace entry');
    fields |= 1 << f;
    const at = r.len();
    if (f === 1) key = bytes.toString('utf8', at, r.pos);
    else value = bytes.toString('utf8', at, r.pos);
  }
  if (key === '__proto__') notCanonical('trace key');
  into[key] = value;
}
