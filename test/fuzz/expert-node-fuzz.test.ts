// Bounded, seeded fuzzing of a real `expert-node` process over gRPC: the Run stream
// opened raw (bytes in, so anything can be sent) with random bytes, truncated and
// mutated requests, hostile protobuf (huge declared lengths, wrong wire types, huge
// counts and numbers, non-finite rows, bad masks, reused ids, missing hidden), hostile
// unary Info/health calls, and garbage on a raw TCP connection. Every case must get
// a clear answer (an error response under its id, or the stream ending with a gRPC
// status; never silence), the process must stay up, and a valid request must still
// be answered afterwards. FUZZ_SEED=N replays a run.
import { type ChildProcess, spawn } from 'node:child_process';
import net from 'node:net';
import * as grpc from '@grpc/grpc-js';
import { service as healthService } from 'grpc-health-check';
import { Rng } from '../../coordinator/sampler';
import { ModelFolder } from '../../core/model-folder';
import { maskBytes } from '../../core/native';
import { expertProto, type ExpertRequest, type ExpertResponse__Output } from '../../core/wire/expert-proto';
import { encodeMask } from '../../core/wire/masks';
import { encodeRows, toProtoEncoding, type WireEncoding } from '../../core/wire/rows';
import { sourceNodeCommand } from '../cluster/helpers';
import { describeGolden, TINY_A_MODEL } from '../helpers/golden';
import { grpcRunExchange, type RunExchange } from '../helpers/grpc-run-exchange';

const SEED = Number(process.env.FUZZ_SEED ?? Math.floor(Math.random() * 2 ** 31));
const RANDOM_CASES = 120;
/** Random cases stop here even if not all are done. */
const BUDGET_MS = 20_000;
/** A case with no answer by then is a hang. */
const ANSWER_MS = 10_000;
const VALID_ID = 4_000_000_000;

const Run = () => expertProto().service.Run;

type Outcome = RunExchange;

describeGolden('expert-node fuzz (tiny-a, a real process)', () => {
  let node: ChildProcess;
  let address: string;
  let client: grpc.Client;
  let dims: { hiddenSize: number; intermediateSize: number; numLayers: number; numExperts: number };
  const stderr: string[] = [];
  const rng = new Rng(SEED);
  const rand = (n: number) => Math.floor(rng.next() * n);

  beforeAll(async () => {
    const folder = await ModelFolder.open(TINY_A_MODEL);
    dims = folder.config;
    await folder.close();
    const [exe, ...args] = sourceNodeCommand();
    node = spawn(exe, [...args, '--model', TINY_A_MODEL, '--experts', '0-1:*', '--port', '0', '--device', 'cpu', '--threads', '1'],
      { stdio: ['ignore', 'ignore', 'pipe', 'ipc'] });
    node.stderr!.setEncoding('utf8').on('data', (d: string) => stderr.push(d));
    const port = await new Promise<number>((resolve, reject) => {
      let p = 0;
      node.on('message', (m: { event: string; port?: number; message?: string }) => {
        if (m.event === 'listening') p = m.port!;
        else if (m.event === 'serving') resolve(p);
        else if (m.event === 'failed') reject(new Error(m.message));
      });
      node.on('exit', (code) => reject(new Error(`expert-node exited (${code}): ${stderr.join('')}`)));
    });
    address = `127.0.0.1:${port}`;
    client = new grpc.Client(address, grpc.credentials.createInsecure(), { 'grpc.max_send_message_length': -1 });
  }, 120_000);

  afterAll(async () => {
    client?.close();
    if (node && node.exitCode === null && node.signalCode === null) {
      const exited = new Promise((resolve) => node.once('exit', resolve));
      node.kill('SIGKILL');
      await exited;
    }
  });

  /** A request the node must answer: `rows` random rows, one route per row to experts of `layer`. */
  function validRequest(id: number, opts: { rows?: number; wire?: WireEncoding; layer?: number } = {}): ExpertRequest {
    const { hiddenSize: H, intermediateSize: I, numExperts } = dims;
    const rows = opts.rows ?? 2;
    const hidden = Float32Array.from({ length: rows * H }, () => rng.next() * 4 - 2);
    const routes = Array.from({ length: rows }, (_, row) => {
      const mask = new Uint8Array(maskBytes(I));
      for (let i = 0; i < I; i++) if (rng.next() < (row % 2 ? 0.02 : 0.5)) mask[i >> 3] |= 1 << (i & 7);
      return { row, expert: (row + id) % numExperts, weight: 0.5, mask: encodeMask(mask, I) };
    });
    const wire = opts.wire ?? 'f32';
    return { id, layer: opts.layer ?? id % dims.numLayers, hidden: encodeRows(hidden, H, null, wire), routes, replyEncoding: toProtoEncoding(wire) };
  }
  const bytesOf = (req: ExpertRequest) => Run().requestSerialize(req);

  /** Sends `messages` then a valid request on a new stream; resolves when that one is answered or the stream ends. */
  const exchange = (messages: Buffer[]): Promise<Outcome> => grpcRunExchange(client, messages, bytesOf(validRequest(VALID_ID)), VALID_ID, ANSWER_MS);

  /** The process is up and a valid request on a fresh stream is answered correctly. */
  async function stillServing(): Promise<void> {
    if (node.exitCode !== null || node.signalCode !== null) throw new Error(`the node died:\n${stderr.join('').slice(-3000)}`);
    const { responses, status } = await exchange([]);
    expect(status).toBeUndefined();
    const valid = responses.find((r) => Number(r.id) === VALID_ID)!;
    expect(valid.error).toBeNull();
    expect(valid.out!.count).toBe(2);
  }

  /**
   * One case: a clear outcome, then the node still serves. `errorFor`: the ids that must each get an error
   * response (the valid request after them answered on the same stream), with a message matching `message`.
   */
  async function fuzzCase(what: string, messages: Buffer[], errorFor?: { ids: number[]; message?: RegExp; code?: grpc.status }): Promise<void> {
    try {
      const { responses, status } = await exchange(messages);
      if (errorFor) {
        expect(status).toBeUndefined();
        for (const id of errorFor.ids) {
          const r = responses.find((x) => Number(x.id) === id && x.error);
          expect(r).toBeDefined();
          expect(r!.error!.code).toBe(errorFor.code ?? grpc.status.INVALID_ARGUMENT);
          if (errorFor.message) expect(r!.error!.message).toMatch(errorFor.message);
        }
      }
      if (status) {
        // A stream that failed says why, with a status a client can act on.
        expect([grpc.status.INVALID_ARGUMENT, grpc.status.INTERNAL, grpc.status.RESOURCE_EXHAUSTED]).toContain(status.code);
        expect(status.details.length).toBeGreaterThan(0);
      } else {
        // The stream kept serving: the valid request after the case was answered, correctly.
        const valid = responses.find((r) => Number(r.id) === VALID_ID)!;
        expect(valid.error).toBeNull();
        expect(valid.out!.count).toBe(2);
        // Anything else the case got back is an error response or a whole answer (a mutation may leave a valid request).
        for (const r of responses) if (r.error === null) expect(r.out!.count).toBeGreaterThan(0);
      }
      await stillServing();
    } catch (e) {
      throw new Error(`FUZZ_SEED=${SEED}, case ${what}: ${(e as Error).message}`);
    }
  }

  // ---- protobuf by hand, for what the encoder would never write ----
  const varint = (v: bigint | number): number[] => {
    let x = BigInt(v);
    const out: number[] = [];
    do {
      const b = Number(x & 0x7fn);
      x >>= 7n;
      out.push(x > 0n ? b | 0x80 : b);
    } while (x > 0n);
    return out;
  };
  const field = (n: number, type: number, body: number[] | Uint8Array | bigint | number): number[] => {
    if (type === 0) return [...varint((n << 3) | 0), ...varint(body as number)];
    const bytes = Array.from(body as number[]);
    return [...varint((n << 3) | type), ...(type === 2 ? varint(bytes.length) : []), ...bytes];
  };

  test('hostile requests get an error response under their id; the stream and the node keep serving', async () => {
    const { hiddenSize: H, intermediateSize: I } = dims;
    const spoiled = (id: number, spoil: (r: ExpertRequest) => void) => {
      const r = validRequest(id);
      spoil(r);
      return bytesOf(r);
    };
    const f32Row = (bad: number) => {
      const rows = new Float32Array(2 * H).fill(0.5);
      rows[H + 3] = bad;
      return encodeRows(rows, H, null, 'f32');
    };
    const u16 = (...i: number[]) => Buffer.from(Uint16Array.from(i).buffer);
    const cases: [string, Buffer[], { ids: number[]; message?: RegExp; code?: grpc.status }][] = [
      ['NaN in an f32 row', [spoiled(11, (r) => (r.hidden = f32Row(NaN)))], { ids: [11], message: /^hidden: row 1 holds NaN at column 3/ }],
      ['+Infinity in an f32 row', [spoiled(12, (r) => (r.hidden = f32Row(Infinity)))], { ids: [12], message: /^hidden: row 1 holds Infinity/ }],
      ['-Infinity in a bf16 row', [spoiled(13, (r) => {
        const rows = new Float32Array(2 * H);
        rows[5] = -Infinity;
        r.hidden = encodeRows(rows, H, null, 'bf16');
      })], { ids: [13], message: /^hidden: row 0 holds -Infinity at column 5/ }],
      ['an infinite int8 scale', [spoiled(14, (r) => {
        r.hidden = encodeRows(new Float32Array(2 * H).fill(1), H, null, 'int8');
        const scales = Buffer.from(r.hidden.scales as Uint8Array);
        scales.writeFloatLE(Infinity, 4);
        r.hidden.scales = scales;
      })], { ids: [14], message: /^hidden: row 1 has an invalid int8 scale Infinity/ }],
      ['a mask index out of range', [spoiled(15, (r) => (r.routes![0].mask = { indices16: u16(1, I + 5) }))], { ids: [15], message: /out of range/ }],
      ['duplicate mask indices', [spoiled(16, (r) => (r.routes![0].mask = { indices16: u16(1, 4, 4) }))], { ids: [16], message: /strictly ascending/ }],
      ['unsorted mask indices', [spoiled(17, (r) => (r.routes![0].mask = { indices16: u16(9, 2) }))], { ids: [17], message: /strictly ascending/ }],
      ['a bit mask of the wrong size', [spoiled(18, (r) => (r.routes![0].mask = { bits: Buffer.alloc(Math.ceil(I / 8) + 1) }))], { ids: [18], message: /bit mask of/ }],
      ['an odd-length index mask', [spoiled(19, (r) => (r.routes![0].mask = { indices32: Buffer.alloc(7) }))], { ids: [19], message: /whole number/ }],
      ['no hidden', [spoiled(20, (r) => (r.hidden = null))], { ids: [20], message: /^hidden: missing/ }],
      ['a huge layer', [spoiled(21, (r) => (r.layer = 2 ** 32 - 1))], { ids: [21], message: /^layer 4294967295 out of range/ }],
      ['a huge row', [spoiled(22, (r) => (r.routes![0].row = 2 ** 32 - 1))], { ids: [22], message: /row 4294967295 out of range/ }],
      ['a huge expert', [spoiled(23, (r) => (r.routes![1].expert = 2 ** 32 - 1))], { ids: [23], message: /expert 4294967295 out of range/ }],
      ['a huge row count', [spoiled(24, (r) => (r.hidden!.count = 2 ** 32 - 1))], { ids: [24], message: /^hidden: / }],
      ['an infinite weight', [spoiled(25, (r) => (r.routes![0].weight = -Infinity))], { ids: [25], message: /weight is -Infinity/ }],
      ['a negative layer (10-byte varint)', [Buffer.from([...field(1, 0, 26), ...field(3, 0, (1n << 64n) - 1n), ...bytesOf({ hidden: validRequest(26).hidden })])],
        { ids: [26], message: /^layer 4294967295 out of range/ }],
      ['200000 empty routes', [Buffer.concat([bytesOf(validRequest(27)), Buffer.alloc(400_000, Buffer.from([0x2a, 0x00]))])],
        { ids: [27], message: /^routes: 200002 routes for 2 hidden rows/ }],
      ['1000 trace context entries', [spoiled(28, (r) => (r.traceContext = Object.fromEntries(Array.from({ length: 1000 }, (_, i) => [`k${i}`, 'v']))))],
        { ids: [28], message: /^trace_context: 1000 entries/ }],
      ['a huge declared length', [Buffer.from([...field(1, 0, 29), ...varint((4 << 3) | 2), ...varint(2 ** 31), 1, 2, 3])],
        { ids: [29], message: /^malformed request: field 4 .* declares 2147483648 bytes/ }],
      ['a wrong wire type', [Buffer.from([...field(1, 0, 30), ...field(3, 2, [1, 2, 3])])], { ids: [30], message: /^malformed request: field 3 .* is length-delimited, expected varint/ }],
      ['a group', [Buffer.from([...field(1, 0, 31), ...varint((9 << 3) | 3), ...varint((9 << 3) | 4)])], { ids: [31], message: /^malformed request: .*start-group/ }],
      ['a mistyped nested field', [Buffer.from([...field(1, 0, 32), ...field(4, 2, [...field(4, 0, 5)])])], { ids: [32] }],
      ['an unknown row encoding', [spoiled(33, (r) => (r.hidden!.encoding = 7 as unknown as 'ROW_F32'))], { ids: [33], message: /unknown row encoding/ }],
    ];
    for (const [what, messages, errorFor] of cases) await fuzzCase(what, messages, errorFor);
  }, 120_000);

  test('a reused id is answered with an error after the original, which is answered correctly', async () => {
    // A big request first keeps the node busy, so the original is still queued when its id comes again.
    const blocker = validRequest(39, { rows: 4000 });
    const original = validRequest(40, { rows: 3 });
    // The reuse must not change or steal the original's answer.
    const again = validRequest(40, { rows: 1 });
    const { responses, status } = await exchange([bytesOf(blocker), bytesOf(original), bytesOf(again)]);
    try {
      expect(status).toBeUndefined();
      const forId = responses.filter((r) => Number(r.id) === 40);
      expect(forId).toHaveLength(2);
      expect(forId[0].error).toBeNull();
      expect(forId[0].out!.count).toBe(3);
      expect(forId[1].error).toMatchObject({ code: grpc.status.INVALID_ARGUMENT, message: expect.stringContaining('id 40 is already used') });
      await fuzzCase('a reused id', [bytesOf(validRequest(41, { rows: 4000 })), bytesOf(validRequest(41))], { ids: [41], message: /already used/ });
    } catch (e) {
      throw new Error(`FUZZ_SEED=${SEED}: ${(e as Error).message}`);
    }
  }, 60_000);

  test('bytes with no id to answer under end the stream with INVALID_ARGUMENT', async () => {
    for (const [what, bytes, details] of [
      ['an id above 2^53', Buffer.from(field(1, 0, 1n << 60n)), /id is above 9007199254740991/],
      ['truncated before the id', Buffer.from([0x08]), /malformed request: truncated varint/],
      ['field number 0', Buffer.from([0x00, 0x01]), /malformed request: field number 0/],
    ] as const) {
      const { status } = await exchange([bytes]);
      try {
        expect(status?.code).toBe(grpc.status.INVALID_ARGUMENT);
        expect(status?.details).toMatch(details);
        await stillServing();
      } catch (e) {
        throw new Error(`FUZZ_SEED=${SEED}, case ${what}: ${(e as Error).message}`);
      }
    }
  }, 60_000);

  test(`random, truncated and mutated requests (${RANDOM_CASES} cases, seeded)`, async () => {
    const start = Date.now();
    for (let k = 0; k < RANDOM_CASES && Date.now() - start < BUDGET_MS; k++) {
      const kind = rand(3);
      let bytes: Buffer;
      if (kind === 0) {
        bytes = Buffer.from(Array.from({ length: rand(300) }, () => rand(256)));
      } else {
        bytes = Buffer.from(bytesOf(validRequest(100 + k, { wire: (['f32', 'bf16', 'int8'] as const)[rand(3)] })));
        if (kind === 1) bytes = bytes.subarray(0, rand(bytes.length));
        else for (let j = 1 + rand(8); j > 0; j--) bytes[rand(bytes.length)] = rand(256);
      }
      await fuzzCase(`#${k} (${['random', 'truncated', 'mutated'][kind]}: ${bytes.subarray(0, 48).toString('hex')}...)`, [bytes]);
    }
  }, 120_000);

  test('hostile unary calls and an unknown method get a status; garbage on a raw TCP connection is dropped', async () => {
    const unary = (path: string, bytes: Buffer) => new Promise<grpc.status>((resolve) => {
      client.makeUnaryRequest(path, (b: Buffer) => b, (b: Buffer) => b, bytes, new grpc.Metadata(), { deadline: Date.now() + ANSWER_MS },
        (err) => resolve(err ? err.code : grpc.status.OK));
    });
    const info = expertProto().service.Info.path;
    const check = healthService.Check.path;
    try {
      for (let k = 0; k < 20; k++) {
        const bytes = Buffer.from(Array.from({ length: rand(64) }, () => rand(256)));
        // Info ignores unknown fields (OK) or cannot parse them (INTERNAL); health the same, or NOT_FOUND for a garbled name.
        expect([grpc.status.OK, grpc.status.INTERNAL]).toContain(await unary(info, bytes));
        expect([grpc.status.OK, grpc.status.INTERNAL, grpc.status.NOT_FOUND]).toContain(await unary(check, bytes));
      }
      expect(await unary('/turbosparse.expert.v1.ExpertNode/Nope', Buffer.alloc(3))).toBe(grpc.status.UNIMPLEMENTED);
      for (const garbage of [Buffer.from('GET / HTTP/1.1\r\nHost: x\r\n\r\n'), Buffer.from(Array.from({ length: 4096 }, () => rand(256))),
        Buffer.concat([Buffer.from('PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n'), Buffer.alloc(64, 0xff)])]) {
        const closed = await new Promise<boolean>((resolve) => {
          const s = net.connect(Number(address.split(':')[1]), '127.0.0.1', () => s.write(garbage));
          const t = setTimeout(() => {
            s.destroy();
            resolve(false);
          }, ANSWER_MS);
          s.on('error', () => undefined);
          s.on('close', () => {
            clearTimeout(t);
            resolve(true);
          });
          s.resume();
        });
        expect(closed).toBe(true);
      }
      await stillServing();
    } catch (e) {
      throw new Error(`FUZZ_SEED=${SEED}: ${(e as Error).message}`);
    }
  }, 120_000);
});
