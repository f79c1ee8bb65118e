// Bounded, seeded fuzzing of the run socket (core/wire/run-frames.ts, expert-node/run-socket-peer.ts)
// of a real in-process expert node (a small demo model, always available), with raw TCP sockets:
// a wrong magic is dropped; REQUEST frames with hostile bytes get exactly the answers the gRPC Run
// stream gives the same bytes; an unknown frame type or a length over 256 MiB gets an ERROR frame
// (INVALID_ARGUMENT) and the close, without a big allocation; random byte streams after the magic and
// frames cut short crash nothing and leak no stream; PING gets PONG; a connection that says nothing
// is closed (first-byte timeout on the node, idle timeout of serveRunSocket). After each, the node
// still serves gRPC and a good run-socket client gets the same answers as before. FUZZ_SEED=N replays.
import fs from 'node:fs';
import net from 'node:net';
import os from 'node:os';
import path from 'node:path';
import * as grpc from '@grpc/grpc-js';
import { Rng } from '../../coordinator/sampler';
import { ExpertClient, insecureChannel } from '../../coordinator/expert-client';
import { makeDemoModel } from '../../core/demo-model';
import { allPairs } from '../../core/expert-spec';
import { ModelFolder } from '../../core/model-folder';
import { maskBytes } from '../../core/native';
import { expertProto, type ExpertRequest, type ExpertResponse__Output } from '../../core/wire/expert-proto';
import { encodeMask } from '../../core/wire/masks';
import { encodeRows, toProtoEncoding } from '../../core/wire/rows';
import {
  errorPayload, FRAME_HEADER_BYTES, FrameError, frameHeader, FrameReader, FrameType, readErrorPayload, RUN_SOCKET_MAGIC,
} from '../../core/wire/run-frames';
import { serveRunSocket } from '../../expert-node/run-socket-peer';
import { type InProcessNode, startNode } from '../cluster/helpers';
import { grpcRunExchange } from '../helpers/grpc-run-exchange';

const SEED = Number(process.env.FUZZ_SEED ?? Math.floor(Math.random() * 2 ** 31));
const DEMO = { layers: 2, hidden: 64, intermediate: 128, heads: 4, kvHeads: 2, experts: 4, topK: 2, vocab: 300, predictorRank: 16, shards: 1 };
const dims = { hiddenSize: 64, intermediateSize: 128, numLayers: 2, numExperts: 4 };
/** A case with no outcome by then is a hang. */
const ANSWER_MS = 5_000;
const VALID_ID = 4_000_000_000;
const INVALID_ARGUMENT = 3;
const Run = () => expertProto().service.Run;

/** What a Run stream gave back: responses (normalised) and, when it failed, its status. */
interface Outcome {
  responses: string[];
  status?: { code: number; details: string };
}
const norm = (r: ExpertResponse__Output) => JSON.stringify([Number(r.id), r.error?.code ?? null, r.error?.message ?? null, r.out?.count ?? null]);

/** A raw run-socket connection: every frame the node sent, and whether/when it closed. */
class RawConn {
  readonly socket: net.Socket;
  readonly frames: { type: FrameType; payload: Buffer }[] = [];
  magic = Buffer.alloc(0);
  received = 0;
  frameError: string | null = null;
  closedAt = 0;
  readonly closed: Promise<void>;
  private readonly reader = new FrameReader([FrameType.RESPONSE, FrameType.ERROR, FrameType.END, FrameType.PING, FrameType.PONG]);
  private waiters: (() => void)[] = [];

  constructor(port: number, first?: Buffer) {
    this.socket = net.connect(port, '127.0.0.1');
    this.socket.on('error', () => undefined);
    this.closed = new Promise((resolve) => this.socket.once('close', () => {
      this.closedAt = Date.now();
      this.wake();
      resolve();
    }));
    this.socket.on('data', (chunk: Buffer) => {
      this.received += chunk.length;
      if (this.magic.length < RUN_SOCKET_MAGIC.length) {
        const need = RUN_SOCKET_MAGIC.length - this.magic.length;
        this.magic = Buffer.concat([this.magic, chunk.subarray(0, need)]);
        chunk = chunk.subarray(need);
      }
      try {
        this.reader.push(chunk, (type, payload) => this.frames.push({ type, payload: Buffer.from(payload) }));
      } catch (e) {
        if (!(e instanceof FrameError)) throw e;
        this.frameError = e.message;
      }
      this.wake();
    });
    if (first) this.socket.write(first);
  }

  write(bytes: Buffer): void {
    if (!this.socket.destroyed) this.socket.write(bytes);
  }

  /** Resolves once `done()` holds or the connection closed; throws after `ms`. */
  async until(done: () => boolean, what: string, ms = ANSWER_MS): Promise<void> {
    const t0 = Date.now();
    while (!done() && !this.closedAt) {
      if (Date.now() - t0 > ms) throw new Error(`no ${what} within ${ms} ms (frames: ${this.frames.map((f) => f.type).join(',')})`);
      await new Promise<void>((resolve) => {
        this.waiters.push(resolve);
        setTimeout(resolve, 50);
      });
    }
  }

  responses(): ExpertResponse__Output[] {
    return this.frames.filter((f) => f.type === FrameType.RESPONSE).map((f) => Run().responseDeserialize(f.payload));
  }

  error(): { code: number; detail: string } | undefined {
    const f = this.frames.find((x) => x.type === FrameType.ERROR);
    return f && readErrorPayload(f.payload);
  }

  destroy(): void {
    this.socket.destroy();
  }

  private wake(): void {
    const w = this.waiters;
    this.waiters = [];
    for (const f of w) f();
  }
}

const request = (payload: Buffer) => Buffer.concat([frameHeader(FrameType.REQUEST, payload.length), payload]);
const withMagic = (...parts: Buffer[]) => Buffer.concat([RUN_SOCKET_MAGIC, ...parts]);

let tmp: string;
let folder: ModelFolder;
let node: InProcessNode;
let grpcClient: grpc.Client;
let good: ExpertClient;
/** The good client's answers to fixed requests, taken before any fuzzing (over gRPC and over the socket). */
let reference: string[];
/** A connection that connects and sends nothing, opened first: the first-byte timeout must close it. */
let silent: RawConn;
let silentAt: number;
const rng = new Rng(SEED);
const rand = (n: number) => Math.floor(rng.next() * n);

/** A request the node must answer: `rows` rows, one route per row (deterministic for a given id). */
function validRequest(id: number, rows = 2): ExpertRequest {
  const r = new Rng(id);
  const { hiddenSize: H, intermediateSize: I, numExperts } = dims;
  const hidden = Float32Array.from({ length: rows * H }, () => r.next() * 4 - 2);
  const routes = Array.from({ length: rows }, (_, row) => {
    const mask = new Uint8Array(maskBytes(I));
    for (let i = 0; i < I; i++) if (r.next() < 0.4) mask[i >> 3] |= 1 << (i & 7);
    return { row, expert: (row + id) % numExperts, weight: 0.5, mask: encodeMask(mask, I) };
  });
  return { id, layer: id % dims.numLayers, hidden: encodeRows(hidden, H, null, 'f32'), routes, replyEncoding: toProtoEncoding('f32') };
}
const bytesOf = (req: ExpertRequest) => Run().requestSerialize(req);

/** The good client's answers (out bytes and active counts) to three fixed requests. */
async function answers(client: ExpertClient): Promise<string[]> {
  const out: string[] = [];
  for (const id of [1, 2, 3]) {
    const { id: _drop, ...req } = validRequest(id, 1 + id);
    const { response } = await client.call(req, ANSWER_MS);
    expect(response.error).toBeNull();
    out.push(JSON.stringify([Buffer.from(response.out!.data).toString('hex'), response.out!.count, response.active]));
  }
  return out;
}

/** The node serves gRPC (health, a Run call over gRPC) and the good socket client's answers are unchanged. */
async function stillServing(): Promise<void> {
  const viaGrpc = new ExpertClient(node.address, insecureChannel, 'grpc');
  try {
    expect(await viaGrpc.health(ANSWER_MS)).toBe('SERVING');
    expect(await answers(viaGrpc)).toEqual(reference);
  } finally {
    viaGrpc.close();
  }
  expect(good.runTransport).toBe('socket');
  expect(await answers(good)).toEqual(reference);
}

/** `messages` then a valid request on a new gRPC Run stream (as test/fuzz/expert-node-fuzz.test.ts does). */
async function grpcExchange(messages: Buffer[]): Promise<Outcome> {
  const r = await grpcRunExchange(grpcClient, messages, bytesOf(validRequest(VALID_ID)), VALID_ID, ANSWER_MS);
  return { responses: r.responses.map(norm), ...(r.status ? { status: { code: r.status.code, details: r.status.details } } : {}) };
}

/** The same on a new run socket: REQUEST frames, then the valid request. */
async function socketExchange(messages: Buffer[]): Promise<Outcome> {
  const conn = new RawConn(node.port, withMagic(...messages.map(request), request(bytesOf(validRequest(VALID_ID)))));
  try {
    await conn.until(() => conn.responses().some((r) => Number(r.id) === VALID_ID) || conn.error() !== undefined, 'answer');
    expect(conn.magic).toEqual(RUN_SOCKET_MAGIC);
    expect(conn.frameError).toBeNull();
    const out: Outcome = { responses: conn.responses().map(norm) };
    const e = conn.error();
    if (e) out.status = { code: e.code, details: e.detail };
    if (!e && !conn.responses().some((r) => Number(r.id) === VALID_ID)) throw new Error('the node closed the run socket without an ERROR frame');
    if (e) await conn.until(() => false, 'close after the ERROR frame'); // the node closes after ERROR
    if (e) expect(conn.closedAt).toBeGreaterThan(0);
    return out;
  } finally {
    conn.destroy();
  }
}

/** Server-side Run streams open now (gRPC and socket): fuzzed connections must not leave any behind. */
const openStreams = () => (node.server as unknown as { streams: Set<unknown> }).streams.size;

beforeAll(async () => {
  tmp = fs.mkdtempSync(path.join(os.tmpdir(), 'ts-run-socket-fuzz-'));
  await makeDemoModel(tmp, DEMO);
  folder = await ModelFolder.open(tmp);
  node = await startNode(folder, allPairs(dims));
  silent = new RawConn(node.port);
  silentAt = Date.now();
  grpcClient = new grpc.Client(node.address, grpc.credentials.createInsecure());
  const viaGrpc = new ExpertClient(node.address, insecureChannel, 'grpc');
  try {
    reference = await answers(viaGrpc);
  } finally {
    viaGrpc.close();
  }
  good = new ExpertClient(node.address, insecureChannel, 'socket');
  await good.prepareRun(ANSWER_MS);
  expect(good.runTransport).toBe('socket');
  expect(await answers(good)).toEqual(reference);
}, 60_000);

afterAll(async () => {
  silent?.destroy();
  good?.close();
  grpcClient?.close();
  await node?.stop();
  await folder?.close();
  if (tmp) fs.rmSync(tmp, { recursive: true, force: true });
});

const seeded = async (what: string, fn: () => Promise<void>) => {
  try {
    await fn();
  } catch (e) {
    throw new Error(`FUZZ_SEED=${SEED}, ${what}: ${(e as Error).message}`);
  }
};

test('PING gets PONG (also several in one chunk, and one cut in two), on a connection that also serves requests', async () => {
  const ping = frameHeader(FrameType.PING, 0);
  const conn = new RawConn(node.port, withMagic(ping));
  try {
    await conn.until(() => conn.frames.length >= 1, 'PONG');
    expect(conn.magic).toEqual(RUN_SOCKET_MAGIC);
    expect(conn.frames).toEqual([{ type: FrameType.PONG, payload: Buffer.alloc(0) }]);
    conn.write(Buffer.concat([ping, ping, ping.subarray(0, 2)]));
    conn.write(ping.subarray(2));
    await conn.until(() => conn.frames.length >= 4, '3 more PONGs');
    expect(conn.frames.map((f) => f.type)).toEqual(Array(4).fill(FrameType.PONG));
    // A PONG from the client is accepted and ignored; a request after it is answered.
    conn.write(Buffer.concat([frameHeader(FrameType.PONG, 0), request(bytesOf(validRequest(VALID_ID)))]));
    await conn.until(() => conn.responses().length === 1, 'the answer');
    expect(conn.responses()[0]).toMatchObject({ id: VALID_ID, error: null });
    expect(conn.closedAt).toBe(0);
  } finally {
    conn.destroy();
  }
});

test('a wrong magic is dropped without an answer; the node still serves gRPC and the run socket', async () => {
  for (const bad of [Buffer.from('TSRUN/2\n'), Buffer.from('TSRUN/1\r'), Buffer.from('T'.padEnd(64, 'x')), Buffer.from('TSR\0')]) {
    await seeded(`magic ${JSON.stringify(bad.toString('latin1').slice(0, 12))}`, async () => {
      const conn = new RawConn(node.port, Buffer.concat([bad, request(bytesOf(validRequest(VALID_ID)))]));
      await conn.until(() => false, 'close');
      expect(conn.closedAt).toBeGreaterThan(0);
      expect(conn.received).toBe(0);
    });
  }
  // A magic sent a byte at a time is fine.
  const conn = new RawConn(node.port);
  try {
    for (const b of withMagic(frameHeader(FrameType.PING, 0))) {
      conn.write(Buffer.from([b]));
      await new Promise((r) => setImmediate(r));
    }
    await conn.until(() => conn.frames.length === 1, 'PONG');
    expect(conn.magic).toEqual(RUN_SOCKET_MAGIC);
    expect(conn.frames[0].type).toBe(FrameType.PONG);
  } finally {
    conn.destroy();
  }
  await stillServing();
});

test('hostile REQUEST payloads get exactly the gRPC Run stream\'s answers for the same bytes (fixed and seeded cases)', async () => {
  const { hiddenSize: H, intermediateSize: I } = dims;
  const spoiled = (id: number, spoil: (r: ExpertRequest) => void) => {
    const r = validRequest(id);
    spoil(r);
    return bytesOf(r);
  };
  const varint = (v: bigint): number[] => {
    const out: number[] = [];
    do {
      const b = Number(v & 0x7fn);
      v >>= 7n;
      out.push(v > 0n ? b | 0x80 : b);
    } while (v > 0n);
    return out;
  };
  const cases: [string, Buffer[]][] = [
    ['NaN in a row', [spoiled(11, (r) => {
      const rows = new Float32Array(2 * H).fill(0.5);
      rows[H + 3] = NaN;
      r.hidden = encodeRows(rows, H, null, 'f32');
    })]],
    ['a mask index out of range', [spoiled(12, (r) => (r.routes![0].mask = { indices16: Buffer.from(Uint16Array.from([1, I + 5]).buffer) }))]],
    ['no hidden', [spoiled(13, (r) => (r.hidden = null))]],
    ['a huge layer', [spoiled(14, (r) => (r.layer = 2 ** 32 - 1))]],
    ['an empty payload (id 0, no hidden)', [Buffer.alloc(0)]],
    ['an id above 2^53 (no id to answer under: the stream fails)', [Buffer.from([0x08, ...varint(1n << 60n)])]],
    ['truncated before the id', [Buffer.from([0x08])]],
    ['field number 0', [Buffer.from([0x00, 0x01])]],
    ['a huge declared length', [Buffer.from([0x08, 29, ...varint(4n << 3n | 2n), ...varint(2n ** 31n), 1, 2, 3])]],
    ['a good request then a bad one', [bytesOf(validRequest(15)), spoiled(16, (r) => (r.layer = 9))]],
  ];
  for (let k = 0; k < 40; k++) {
    const kind = rand(3);
    let bytes: Buffer;
    if (kind === 0) bytes = Buffer.from(Array.from({ length: rand(200) }, () => rand(256)));
    else {
      bytes = Buffer.from(bytesOf(validRequest(100 + k)));
      if (kind === 1) bytes = bytes.subarray(0, rand(bytes.length));
      else for (let j = 1 + rand(6); j > 0; j--) bytes[rand(bytes.length)] = rand(256);
    }
    cases.push([`#${k} ${['random', 'truncated', 'mutated'][kind]} ${bytes.subarray(0, 32).toString('hex')}`, [bytes]]);
  }
  let failedStreams = 0;
  for (const [what, messages] of cases) {
    await seeded(what, async () => {
      const viaGrpc = await grpcExchange(messages);
      const viaSocket = await socketExchange(messages);
      // The same answers (their order may differ: an error is answered at once, a queued request when computed).
      expect({ ...viaSocket, responses: [...viaSocket.responses].sort() }).toEqual({ ...viaGrpc, responses: [...viaGrpc.responses].sort() });
      if (viaSocket.status) {
        failedStreams++;
        expect(viaSocket.status.code).toBe(INVALID_ARGUMENT);
      } else {
        expect(viaSocket.responses).toContain(JSON.stringify([VALID_ID, null, null, 2]));
      }
    });
  }
  expect(failedStreams).toBeGreaterThanOrEqual(3); // the fixed no-id cases at least
  await stillServing();
}, 60_000);

test('an unknown frame type, a client-side type and a length over 256 MiB: ERROR INVALID_ARGUMENT, then closed, no big allocation', async () => {
  const before = process.memoryUsage().arrayBuffers;
  const cases: [string, Buffer, RegExp][] = [
    ['type 9', frameHeader(9 as FrameType, 4), /unknown frame type 9/],
    ['type 0', Buffer.concat([frameHeader(0 as FrameType, 0)]), /unknown frame type 0/],
    ['a RESPONSE from the client', frameHeader(FrameType.RESPONSE, 3), /unknown frame type 2/],
    ['an ERROR from the client', Buffer.concat([frameHeader(FrameType.ERROR, 5), errorPayload(3, 'x')]), /unknown frame type 3/],
    ['256 MiB + 1', frameHeader(FrameType.REQUEST, 256 * 1024 * 1024 + 1), /a frame of 268435457 bytes is above the 268435456-byte message limit/],
    ['4 GiB - 1 after a good request', Buffer.concat([request(bytesOf(validRequest(21))), frameHeader(FrameType.REQUEST, 0xffffffff), Buffer.alloc(1000, 7)]),
      /a frame of 4294967295 bytes is above/],
  ];
  for (const [what, bytes, detail] of cases) {
    await seeded(what, async () => {
      const conn = new RawConn(node.port, withMagic(bytes));
      try {
        await conn.until(() => false, 'close');
        expect(conn.closedAt).toBeGreaterThan(0);
        const e = conn.error();
        expect(e).toBeDefined();
        expect(e!.code).toBe(INVALID_ARGUMENT);
        expect(e!.detail).toMatch(/^run socket: /);
        expect(e!.detail).toMatch(detail);
        // The ERROR frame is the last one.
        expect(conn.frames.at(-1)!.type).toBe(FrameType.ERROR);
      } finally {
        conn.destroy();
      }
    });
  }
  // A frame over the limit is refused from its header: nothing near its size was allocated.
  expect(process.memoryUsage().arrayBuffers - before).toBeLessThan(64 * 1024 * 1024);
  await stillServing();
});

test('random byte streams and random frames after a valid magic: no crash, bounded memory, no stream left open', async () => {
  const streamsBefore = openStreams();
  const memBefore = process.memoryUsage().arrayBuffers;
  const t0 = Date.now();
  let errors = 0;
  let answered = 0;
  for (let k = 0; k < 60 && Date.now() - t0 < 10_000; k++) {
    const kind = rand(3);
    const parts: Buffer[] = [];
    if (kind === 0) {
      // Anything at all.
      parts.push(Buffer.from(Array.from({ length: 1 + rand(2000) }, () => rand(256))));
    } else {
      // Frames with plausible headers: types the node takes (mostly), lengths that fit (mostly), random payloads.
      for (let f = 1 + rand(6); f > 0; f--) {
        const type = rand(8) === 0 ? rand(256) : [FrameType.REQUEST, FrameType.PING, FrameType.PONG][rand(3)];
        const len = type === FrameType.PING || type === FrameType.PONG ? rand(3) : rand(300);
        const payload = kind === 2 && type === FrameType.REQUEST ? bytesOf(validRequest(1000 + rand(1000))) : Buffer.from(Array.from({ length: len }, () => rand(256)));
        parts.push(frameHeader(type as FrameType, payload.length), payload);
      }
    }
    const bytes = Buffer.concat(parts);
    await seeded(`random stream #${k} (kind ${kind}, ${bytes.length} bytes: ${bytes.subarray(0, 24).toString('hex')}...)`, async () => {
      const conn = new RawConn(node.port, RUN_SOCKET_MAGIC);
      try {
        // In random pieces, as a network would.
        for (let at = 0; at < bytes.length;) {
          const n = 1 + rand(400);
          conn.write(bytes.subarray(at, at + n));
          at += n;
        }
        // Until the node closes, or a short quiet while it waits for the rest of a frame.
        let last = -1;
        await conn.until(() => {
          const settled = conn.received === last;
          last = conn.received;
          return settled && conn.received > 0;
        }, 'settle', ANSWER_MS).catch(() => undefined);
        expect(conn.magic).toEqual(RUN_SOCKET_MAGIC);
        expect(conn.frameError).toBeNull();
        for (const f of conn.frames) {
          expect([FrameType.RESPONSE, FrameType.PONG, FrameType.ERROR]).toContain(f.type);
          if (f.type === FrameType.RESPONSE) {
            answered++;
            expect(Number(Run().responseDeserialize(f.payload).id)).toBeGreaterThanOrEqual(0);
          }
        }
        const e = conn.error();
        if (e) {
          errors++;
          expect(e.code).toBe(INVALID_ARGUMENT);
          expect(conn.frames.at(-1)!.type).toBe(FrameType.ERROR);
        }
      } finally {
        conn.destroy();
      }
    });
  }
  expect(errors).toBeGreaterThan(0);
  expect(answered).toBeGreaterThan(0);
  // Every fuzzed connection is gone: its stream too.
  await new Promise((r) => setTimeout(r, 200));
  for (let i = 0; i < 50 && openStreams() > streamsBefore; i++) await new Promise((r) => setTimeout(r, 100));
  expect(openStreams()).toBe(streamsBefore);
  expect(process.memoryUsage().arrayBuffers - memBefore).toBeLessThan(64 * 1024 * 1024);
  await stillServing();
}, 60_000);

test('a frame cut short (header, payload) and a magic cut short, then close: nothing crashes, no stream left open', async () => {
  const streamsBefore = openStreams();
  const req = request(bytesOf(validRequest(31)));
  for (const [what, bytes] of [
    ['half a magic', RUN_SOCKET_MAGIC.subarray(0, 4)],
    ['half a header', withMagic(req.subarray(0, 3))],
    ['half a payload', withMagic(req.subarray(0, req.length - 10))],
    ['a whole request, then half of a big one', withMagic(req, frameHeader(FrameType.REQUEST, 10_000_000), Buffer.alloc(100_000, 1))],
  ] as const) {
    await seeded(what, async () => {
      const conn = new RawConn(node.port, bytes);
      await new Promise((r) => setTimeout(r, 100));
      conn.destroy();
      await conn.closed;
    });
  }
  for (let i = 0; i < 50 && openStreams() > streamsBefore; i++) await new Promise((r) => setTimeout(r, 100));
  expect(openStreams()).toBe(streamsBefore);
  await stillServing();
});

test('a client that half-closes after its requests still gets every answer, then END (as a gRPC stream ended by the client)', async () => {
  // Big enough to be queued, so the answers come after the client's FIN has arrived.
  const ids = [51, 52, 53];
  const bytes = withMagic(...ids.map((id) => request(bytesOf(validRequest(id, 300)))));
  const conn = new RawConn(node.port);
  conn.socket.end(bytes); // FIN after the requests
  await conn.until(() => false, 'close');
  const answers = conn.responses();
  expect(answers.map((r) => [Number(r.id), r.error])).toEqual(ids.map((id) => [id, null]));
  expect(answers.every((r) => r.out!.count === 300)).toBe(true);
  expect(conn.frames.at(-1)!.type).toBe(FrameType.END);
  expect(conn.frameError).toBeNull();
  // The gRPC Run stream ended by its client the same way answers all three, then OK.
  const viaGrpc = await new Promise<{ ids: number[]; code: number }>((resolve) => {
    const got: number[] = [];
    const call = grpcClient.makeBidiStreamRequest<Buffer, ExpertResponse__Output>(Run().path, (b) => b, (b) => Run().responseDeserialize(b));
    call.on('data', (r: ExpertResponse__Output) => got.push(Number(r.id)));
    call.on('status', (st: grpc.StatusObject) => resolve({ ids: got, code: st.code }));
    call.on('error', () => undefined);
    for (const id of ids) call.write(bytesOf(validRequest(id, 300)));
    call.end();
  });
  expect(viaGrpc).toEqual({ ids, code: grpc.status.OK });
  // A client that closes its side in the middle of the magic is dropped.
  const early = new RawConn(node.port);
  early.socket.end(RUN_SOCKET_MAGIC.subarray(0, 3));
  await early.until(() => false, 'close');
  expect(early.closedAt).toBeGreaterThan(0);
  expect(early.received).toBe(0);
});

test('serveRunSocket closes a connection silent for idleMs; pings keep one open', async () => {
  const closedAfter: number[] = [];
  const server = net.createServer((socket) => {
    const t0 = Date.now();
    socket.on('close', () => closedAfter.push(Date.now() - t0));
    socket.on('error', () => undefined);
    serveRunSocket(socket, () => ({ data: () => undefined, ended: () => undefined, closed: () => undefined }), { idleMs: 1000 });
  });
  await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
  const port = (server.address() as net.AddressInfo).port;
  try {
    const quiet = new RawConn(port, RUN_SOCKET_MAGIC);
    const pinging = new RawConn(port, RUN_SOCKET_MAGIC);
    // Pings every 100 ms against a 1 s idle timeout: this process (client and server both) would have to
    // stall for most of a second before a ping missed it, which a loaded CI machine's stalls do not reach.
    const timer = setInterval(() => pinging.write(frameHeader(FrameType.PING, 0)), 100);
    try {
      const t0 = Date.now();
      await quiet.closed;
      const ms = Date.now() - t0;
      expect(quiet.magic).toEqual(RUN_SOCKET_MAGIC);
      expect(ms).toBeGreaterThanOrEqual(950);
      expect(ms).toBeLessThan(4000);
      await new Promise((r) => setTimeout(r, 1200));
      expect(pinging.closedAt).toBe(0);
      expect(pinging.frames.filter((f) => f.type === FrameType.PONG).length).toBeGreaterThanOrEqual(3);
    } finally {
      clearInterval(timer);
      quiet.destroy();
      pinging.destroy();
    }
  } finally {
    await new Promise((r) => server.close(r));
  }
});

test('a client that sends and never reads holds back its own requests, not the node\'s memory; reading again gets every answer', async () => {
  const ANSWER = 256 * 1024;
  const SENT = 200; // 50 MiB of answers: more than the kernel's socket buffers hold
  let taken = 0;
  const server = net.createServer((socket) => {
    socket.on('error', () => undefined);
    // Each request is answered at once with a 256 KiB frame; at most 1 MiB may wait unread in the node.
    serveRunSocket(socket, (peer) => ({
      data: () => {
        taken++;
        peer.write(Buffer.alloc(ANSWER, 1));
      },
      ended: () => peer.end(), // as the node's stream does once every answer is out
      closed: () => undefined,
    }), { maxUnreadBytes: 1024 * 1024 });
  });
  await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
  const port = (server.address() as net.AddressInfo).port;
  const client = net.connect(port, '127.0.0.1');
  client.on('error', () => undefined);
  client.pause(); // reads nothing for now
  try {
    client.setNoDelay(true);
    client.write(RUN_SOCKET_MAGIC);
    // One request at a time (a chunk's frames are all taken: the hold applies from the next chunk on).
    for (let i = 0; i < SENT; i++) {
      client.write(request(Buffer.alloc(16, i)));
      await new Promise((r) => setTimeout(r, 3));
    }
    await new Promise((r) => setTimeout(r, 300));
    // About 1 MiB in the node plus what the kernel's socket buffers hold, nowhere near 50 MiB.
    const whileStuck = taken;
    expect(whileStuck).toBeGreaterThan(0);
    expect(whileStuck).toBeLessThan(SENT / 2);
    // Reading again lets the node go on: every request is answered.
    const want = RUN_SOCKET_MAGIC.length + SENT * (FRAME_HEADER_BYTES + ANSWER);
    let got = 0;
    await new Promise<void>((resolve, reject) => {
      const timer = setTimeout(() => reject(new Error(`${got} of ${want} bytes after 10 s (${taken} requests taken)`)), 10_000);
      client.on('data', (c: Buffer) => {
        got += c.length;
        if (got >= want) {
          clearTimeout(timer);
          resolve();
        }
      });
      client.resume();
    });
    expect(got).toBe(want);
    expect(taken).toBe(SENT);
  } finally {
    client.destroy();
    await new Promise((r) => server.close(r));
  }
});

test('a connection that sends nothing at all is closed by the node after its first-byte timeout (10 s)', async () => {
  await silent.until(() => false, 'close', 20_000);
  const ms = silent.closedAt - silentAt;
  expect(silent.received).toBe(0);
  expect(ms).toBeGreaterThanOrEqual(9_000);
  expect(ms).toBeLessThan(16_000);
  await stillServing();
}, 30_000);
