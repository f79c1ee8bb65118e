// The hand-written ExpertRequest/ExpertResponse codecs (core/wire/expert-request-bytes.ts,
// expert-response-bytes.ts) against protobufjs and the reference codec (expert-messages.ts): the bytes
// decode to the same message, the node reads the same RoutedBatch, and every malformed request gets the
// same WireRejection (code and message), on random batches, every row encoding and random corruptions.
import { status } from '@grpc/grpc-js';
import { Rng } from '../../coordinator/sampler';
import { UserError } from '../../core/errors';
import { maskBytes } from '../../core/native';
import type { ExpertGroup, RoutedBatch } from '../../core/routed-batch';
import { decodeExpertResponse, type HeldExperts, WireRejection } from '../../core/wire/expert-messages';
import { encodeExpertRequest, encodeExpertResponse } from './wire-reference';
import { expertProto } from '../../core/wire/expert-proto';
import { planExpertRequest, readCanonical, readExpertRequest, readReference } from '../../core/wire/expert-request-bytes';
import { readExpertResponse, writeExpertResponse, writeExpertResult } from '../../core/wire/expert-response-bytes';
import { NotCanonical } from '../../core/wire/protobuf-bytes';
import { WIRE_ENCODINGS, type WireEncoding } from '../../core/wire/rows';

const Run = () => expertProto().service.Run;

interface Dims { hiddenSize: number; intermediateSize: number; numLayers: number; numExperts: number }

function heldAll(dims: Dims, notHeld: number[] = []): HeldExperts {
  return {
    dims, spec: `0-${dims.numLayers - 1}:*`,
    holdsLayer: (l) => l < dims.numLayers,
    expertsInLayer: () => dims.numExperts - notHeld.length,
    has: (l, e) => l < dims.numLayers && e < dims.numExperts && !notHeld.includes(e),
  };
}

/** A random routed batch: `nRows` rows, each routed to up to topK distinct experts, masks of random density. */
function randomBatch(rng: Rng, dims: Dims, nRows: number, topK: number): RoutedBatch {
  const H = dims.hiddenSize;
  const I = dims.intermediateSize;
  const R = maskBytes(I);
  const hidden = Float32Array.from({ length: nRows * H }, () => (rng.next() - 0.5) * 8);
  const byExpert = new Map<number, number[]>();
  for (let r = 0; r < nRows; r++) {
    const picked = new Set<number>();
    const k = 1 + Math.floor(rng.next() * topK);
    while (picked.size < k) picked.add(Math.floor(rng.next() * dims.numExperts));
    for (const e of picked) byExpert.set(e, [...(byExpert.get(e) ?? []), r]);
  }
  const groups: ExpertGroup[] = [...byExpert.keys()].sort((a, b) => a - b).map((expert) => {
    const rows = Int32Array.from(byExpert.get(expert)!);
    const masks = new Uint8Array(rows.length * R);
    for (let j = 0; j < rows.length; j++) {
      const density = [0, 0.001, 0.02, 0.1, 0.5, 1][Math.floor(rng.next() * 6)];
      // Bits past I are set too (the codecs must ignore them).
      for (let i = 0; i < R * 8; i++) if (rng.next() < density) masks[j * R + (i >> 3)] |= 1 << (i & 7);
    }
    const weights = Float32Array.from(rows, () => [0, -0, 1, rng.next(), -rng.next() * 3][Math.floor(rng.next() * 5)]);
    return { expert, rows, weights, masks };
  });
  return { layer: Math.floor(rng.next() * dims.numLayers), nRows, hidden, maskRowBytes: R, groups };
}

/** Masks as the node holds them: bits >= I cleared. */
function clearTail(batch: RoutedBatch, I: number): RoutedBatch {
  return {
    ...batch,
    groups: batch.groups.map((g) => {
      const masks = g.masks.slice();
      for (let j = 0; j < g.rows.length; j++) {
        for (let i = I; i < batch.maskRowBytes * 8; i++) masks[j * batch.maskRowBytes + (i >> 3)] &= ~(1 << (i & 7));
      }
      return { ...g, masks };
    }),
  };
}

const DIMS: Dims[] = [
  { hiddenSize: 16, intermediateSize: 64, numLayers: 3, numExperts: 8 },
  { hiddenSize: 24, intermediateSize: 101, numLayers: 2, numExperts: 4 },
  { hiddenSize: 8, intermediateSize: 70_001, numLayers: 1, numExperts: 3 }, // indices32
];

function outcome(f: () => unknown): { ok: unknown } | { code: number; message: string } {
  try {
    return { ok: f() };
  } catch (e) {
    if (e instanceof WireRejection) return { code: e.code, message: e.message };
    // The node answers a UserError INVALID_ARGUMENT with its message (expert-node/server.ts accept).
    if (e instanceof UserError) return { code: status.INVALID_ARGUMENT, message: e.message };
    throw e;
  }
}

describe('ExpertRequest bytes', () => {
  test.each(WIRE_ENCODINGS.map((w) => [w]))('%s: protobufjs decodes the same message; the node reads the same batch on the fast path', (wire) => {
    const rng = new Rng(7 + WIRE_ENCODINGS.indexOf(wire as WireEncoding));
    for (const dims of DIMS) {
      for (let t = 0; t < (dims.intermediateSize > 10_000 ? 2 : 12); t++) {
        const batch = randomBatch(rng, dims, 1 + Math.floor(rng.next() * 9), 3);
        // A node gets whole groups, any subset of them.
        const groups = batch.groups.filter((_, i) => i === 0 || rng.next() < 0.6);
        const o = { stepId: Math.floor(rng.next() * 2 ** 40), wire: wire as WireEncoding, timeoutMs: Math.floor(rng.next() * 3) * 700.5,
          traceContext: (t % 2 ? { traceparent: `00-${'ab'.repeat(16)}-${'cd'.repeat(8)}-01`, tracestate: 'ü=1' } : {}) as Record<string, string>,
          hiddenSize: dims.hiddenSize, intermediateSize: dims.intermediateSize };
        const id = 1 + Math.floor(rng.next() * 2 ** 52);
        const plan = planExpertRequest(batch, groups, o);
        const ref = encodeExpertRequest(batch, groups, o);
        expect(plan.rows).toEqual(ref.rows);
        const bytes = plan.encode(id);
        const refBytes = Run().requestSerialize({ ...ref.request, id });
        expect(Run().requestDeserialize(bytes)).toEqual(Run().requestDeserialize(refBytes));

        const held = heldAll(dims);
        const fast = readCanonical(bytes, held, batch.maskRowBytes);
        const slow = readReference(refBytes, held, batch.maskRowBytes);
        expect(fast).toEqual(slow);
        // The groups are the sent groups with rows renumbered to the message's rows.
        const local = new Map(Array.from(plan.rows, (r, i) => [r, i]));
        const sent = clearTail({ ...batch, groups }, dims.intermediateSize).groups;
        expect(fast.batch.groups.map((g) => [g.expert, Array.from(g.rows), g.weights, g.masks]))
          .toEqual(sent.map((g) => [g.expert, Array.from(g.rows, (r) => local.get(r)), g.weights, g.masks]));
        expect(fast.id).toBe(id);
      }
    }
  });

  test('random corruptions: the same outcome as protobufjs + decodeExpertRequest (same code and message)', () => {
    const rng = new Rng(99);
    const dims = DIMS[0];
    let rejected = 0;
    let accepted = 0;
    for (let t = 0; t < 600; t++) {
      const batch = randomBatch(rng, dims, 1 + Math.floor(rng.next() * 4), 2);
      const wire = WIRE_ENCODINGS[t % 3];
      const o = { stepId: 3, wire, timeoutMs: 0, traceContext: { a: 'b' }, hiddenSize: dims.hiddenSize, intermediateSize: dims.intermediateSize };
      const bytes = Buffer.from(planExpertRequest(batch, batch.groups, o).encode(5));
      const n = 1 + Math.floor(rng.next() * 3);
      let b = bytes;
      for (let k = 0; k < n; k++) {
        const at = Math.floor(rng.next() * b.length);
        const op = rng.next();
        if (op < 0.6) b[at] ^= 1 << Math.floor(rng.next() * 8);
        else if (op < 0.8) b[at] = Math.floor(rng.next() * 256);
        else if (op < 0.9) b = b.subarray(0, at);
        else b = Buffer.concat([b.subarray(0, at), Buffer.from([Math.floor(rng.next() * 256)]), b.subarray(at)]);
      }
      const held = heldAll(dims, t % 5 === 0 ? [3] : []);
      const got = outcome(() => readExpertRequest(b, held, batch.maskRowBytes));
      const want = outcome(() => readReference(b, held, batch.maskRowBytes));
      expect(got).toEqual(want);
      if ('ok' in got) accepted++;
      else rejected++;
    }
    // Both kinds happened, so the comparison covered both.
    expect(rejected).toBeGreaterThan(50);
    expect(accepted).toBeGreaterThan(50);
  });

  test('hostile requests built with protobufjs get the reference rejections, and valid non-canonical ones are read', () => {
    const dims = DIMS[0];
    const I = dims.intermediateSize;
    const H = dims.hiddenSize;
    const held = heldAll(dims, [7]);
    const R = maskBytes(I);
    const f32 = (n: number, v = 1) => Buffer.from(new Float32Array(n * H).fill(v).buffer);
    const hidden = { encoding: 'ROW_F32' as const, count: 2, width: H, data: f32(2) };
    const idx16 = (...i: number[]) => ({ indices16: Buffer.from(Uint16Array.from(i).buffer) });
    const route = (row: number, expert: number, mask: object = idx16(1, 2), weight = 0.5) => ({ row, expert, weight, mask });
    const cases: [string, object][] = [
      ['valid', { id: 1, layer: 1, hidden, routes: [route(0, 1), route(1, 0)], replyEncoding: 'ROW_BF16' }],
      ['layer out of range', { id: 1, layer: 9, hidden, routes: [route(0, 1)] }],
      ['no hidden', { id: 1, routes: [route(0, 1)] }],
      ['no rows', { id: 1, hidden: { ...hidden, count: 0 }, routes: [route(0, 1)] }],
      ['short data', { id: 1, hidden: { ...hidden, data: f32(1) }, routes: [route(0, 1)] }],
      ['NaN row', { id: 1, hidden: { ...hidden, data: f32(2, NaN) }, routes: [route(0, 1)] }],
      ['bad reply encoding', { id: 1, hidden, routes: [route(0, 1)], replyEncoding: 7 }],
      ['no routes', { id: 1, hidden, routes: [] }],
      ['row out of range', { id: 1, hidden, routes: [route(2, 1)] }],
      ['expert out of range', { id: 1, hidden, routes: [route(0, 8)] }],
      ['expert not held', { id: 1, hidden, routes: [route(0, 7)] }],
      ['NaN weight', { id: 1, hidden, routes: [route(0, 1, idx16(1), NaN)] }],
      ['twice', { id: 1, hidden, routes: [route(0, 1), route(0, 1)] }],
      ['no mask', { id: 1, hidden, routes: [{ row: 0, expert: 1, weight: 1 }] }],
      ['empty mask', { id: 1, hidden, routes: [route(0, 1, {})] }],
      ['index out of range', { id: 1, hidden, routes: [route(0, 1, idx16(1, I))] }],
      ['indices not ascending', { id: 1, hidden, routes: [route(0, 1, idx16(3, 2))] }],
      ['odd index bytes', { id: 1, hidden, routes: [route(0, 1, { indices16: Buffer.from([1, 0, 2]) })] }],
      ['short bits', { id: 1, hidden, routes: [route(0, 1, { bits: Buffer.alloc(R - 1) })] }],
      ['out of order experts (valid)', { id: 1, hidden, routes: [route(0, 3), route(1, 1), route(0, 1, { bits: Buffer.alloc(I / 8, 0xff) })] }],
      ['trace context (valid)', { id: 1, hidden, routes: [route(0, 1)], traceContext: { traceparent: 'x', '': '' } }],
    ];
    for (const [name, req] of cases) {
      const bytes = Run().requestSerialize(req as never);
      const got = outcome(() => readExpertRequest(bytes, held, R));
      const want = outcome(() => readReference(bytes, held, R));
      expect([name, got]).toEqual([name, want]);
      expect([name, 'ok' in got]).toEqual([name, name.endsWith('(valid)') || name === 'valid']);
    }
    // protobufjs's bytes for a valid request in group order are canonical: the fast path reads them.
    expect(() => readCanonical(Run().requestSerialize(cases[0][1] as never), held, R)).not.toThrow();
    // Unknown fields and a second mask form are left to the reference path, which reads them as protobufjs does.
    const withUnknown = Buffer.concat([Run().requestSerialize(cases[0][1] as never), Buffer.from([0x78, 0x01])]);
    expect(() => readCanonical(withUnknown, held, R)).toThrow(NotCanonical);
    expect(readExpertRequest(withUnknown, held, R)).toEqual(readReference(withUnknown, held, R));
    const twoForms = Run().requestSerialize({ id: 1, hidden, routes: [route(0, 1, { bits: Buffer.alloc(I / 8), indices16: Buffer.from([1, 0]) })] });
    expect(() => readCanonical(twoForms, held, R)).toThrow(NotCanonical);
    expect(outcome(() => readExpertRequest(twoForms, held, R))).toEqual(outcome(() => readReference(twoForms, held, R)));
    expect(outcome(() => readExpertRequest(Buffer.from([0x22, 0x05, 0x08]), held, R)))
      .toEqual({ code: status.INVALID_ARGUMENT, message: expect.stringMatching(/^malformed request: /) });
  });
});

describe('ExpertResponse bytes', () => {
  test.each(WIRE_ENCODINGS.map((w) => [w]))('%s: the node writes what encodeExpertResponse + protobufjs write; the client reads what protobufjs reads', (wire) => {
    const rng = new Rng(31);
    const dims = DIMS[1];
    for (let t = 0; t < 10; t++) {
      const batch = randomBatch(rng, dims, 1 + Math.floor(rng.next() * 7), 3);
      const o = { stepId: 1, wire: 'f32' as const, timeoutMs: 0, traceContext: {}, hiddenSize: dims.hiddenSize, intermediateSize: dims.intermediateSize };
      const req = Run().requestSerialize({ ...encodeExpertRequest(batch, batch.groups, o).request, id: 1, replyEncoding: wire === 'f32' ? 'ROW_F32' : wire === 'bf16' ? 'ROW_BF16' : 'ROW_INT8' });
      const decoded = readExpertRequest(req, heldAll(dims), batch.maskRowBytes);
      const out = Float32Array.from({ length: batch.nRows * dims.hiddenSize }, () => (rng.next() - 0.5) * 10);
      let routes = 0;
      for (const g of decoded.batch.groups) routes += g.rows.length;
      const active = Int32Array.from({ length: routes }, () => Math.floor(rng.next() * 3000));
      const timing = { queueUs: Math.floor(rng.next() * 1e6), computeUs: t };
      const id = 1 + Math.floor(rng.next() * 2 ** 50);
      const bytes = writeExpertResult(id, decoded, out, active, dims.hiddenSize, timing);
      const refBytes = Run().responseSerialize(encodeExpertResponse(id, decoded, out, active, dims.hiddenSize, timing));
      const want = Run().responseDeserialize(refBytes);
      expect(Run().responseDeserialize(bytes)).toEqual(want);
      expect(readExpertResponse(bytes)).toEqual(want);
      expect(readExpertResponse(refBytes)).toEqual(want);
      expect(decodeExpertResponse(readExpertResponse(bytes), batch.nRows, routes, dims.hiddenSize))
        .toEqual(decodeExpertResponse(want, batch.nRows, routes, dims.hiddenSize));
    }
  });

  test('error responses, unpacked active counts and unknown fields read as protobufjs reads them', () => {
    const err = { id: 12, error: { code: status.INVALID_ARGUMENT, message: 'routes[0]: ü' }, queueUs: 5 };
    const bytes = writeExpertResponse(err);
    expect(readExpertResponse(bytes)).toEqual(Run().responseDeserialize(bytes));
    expect(Run().responseDeserialize(bytes)).toEqual(Run().responseDeserialize(Run().responseSerialize(err)));
    // active unpacked (field 4 as varints), an unknown field 9, id last.
    const odd = Buffer.from([0x20, 0x03, 0x20, 0x96, 0x01, 0x48, 0x01, 0x28, 0x07, 0x08, 0x2a]);
    expect(readExpertResponse(odd)).toEqual(Run().responseDeserialize(odd));
    expect(readExpertResponse(odd)).toMatchObject({ id: 42, active: [3, 150], queueUs: 7 });
    expect(() => readExpertResponse(Buffer.from([0x1a, 0x09, 0x00]))).toThrow(/malformed ExpertResponse/);
  });
});
