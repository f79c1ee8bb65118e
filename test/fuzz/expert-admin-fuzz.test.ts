// Bounded, seeded fuzzing of LoadExperts / UnloadExperts on a real `expert-node` process:
// raw bytes (random, truncated and mutated ExpertsChange messages, wrong wire types, huge
// lists, out-of-range and duplicate pairs). Every call must be answered within a deadline
// with OK (the new Info, consistent with what the node holds) or a clear refusal
// (INVALID_ARGUMENT, or RESOURCE_EXHAUSTED past the budget), never INTERNAL/UNKNOWN; the
// process stays up and still computes afterwards. FUZZ_SEED=N replays a run.
import * as grpc from '@grpc/grpc-js';
import { ExpertClient } from '../../coordinator/expert-client';
import { Rng } from '../../coordinator/sampler';
import { expertBytes } from '../../core/shard-map';
import { expertProto, type InfoResponse__Output } from '../../core/wire/expert-proto';
import { randomBatch, rerouted } from '../cluster/helpers';
import { type NodeProcess, startNodeProcess } from '../cluster/node-process';
import { encodeExpertRequest } from '../cluster/wire-reference';
import { describeGolden } from '../helpers/golden';

const SEED = Number(process.env.FUZZ_SEED ?? Math.floor(Math.random() * 2 ** 31));
const RANDOM_CASES = 150;
const BUDGET_MS = 15_000;
const ANSWER_MS = 10_000;
const dims = { hiddenSize: 64, intermediateSize: 160, numLayers: 2, numExperts: 4 };
const PAIR_BYTES = expertBytes(64, 160, 'f32');

/** protobuf varint */
function varint(n: number): number[] {
  const out: number[] = [];
  let v = BigInt(n);
  do {
    let b = Number(v & 0x7fn);
    v >>= 7n;
    if (v > 0n) b |= 0x80;
    out.push(b);
  } while (v > 0n);
  return out;
}

/** An ExpertsChange with these (layer, expert) entries, written by hand (numbers beyond uint32 too). */
function change(pairs: [number, number][]): Buffer {
  const bytes: number[] = [];
  for (const [layer, expert] of pairs) {
    const inner = [0x08, ...varint(layer), 0x10, ...varint(expert)];
    bytes.push(0x0a, ...varint(inner.length), ...inner);
  }
  return Buffer.from(bytes);
}

describeGolden('LoadExperts / UnloadExperts fuzz (tiny-a, a real process)', () => {
  let node: NodeProcess;
  let raw: grpc.Client;
  const rng = new Rng(SEED);
  const rand = (n: number) => Math.floor(rng.next() * n);
  const codes = new Map<string, number>();

  beforeAll(async () => {
    node = await startNodeProcess(['--experts', '0:0-1', '--no-self-benchmark', '--memory-gib', String((6 * PAIR_BYTES) / 2 ** 30)]);
    raw = new grpc.Client(node.address, grpc.credentials.createInsecure(), { 'grpc.max_send_message_length': -1 });
  }, 60_000);
  afterAll(async () => {
    raw?.close();
    await node?.stop();
  });

  /** One raw call; resolves with its status code and Info (when OK), rejects if unanswered by ANSWER_MS. */
  function send(method: 'LoadExperts' | 'UnloadExperts', bytes: Buffer): Promise<{ code: grpc.status; details: string; info?: InfoResponse__Output }> {
    const m = expertProto().service[method];
    return new Promise((resolve) => {
      raw.makeUnaryRequest(m.path, (b: Buffer) => b, m.responseDeserialize, bytes, new grpc.Metadata(),
        { deadline: Date.now() + ANSWER_MS }, (err, info) => {
          if (err) resolve({ code: err.code, details: err.details });
          else resolve({ code: grpc.status.OK, details: '', info: info! });
        });
    });
  }

  async function fuzzCase(what: string, method: 'LoadExperts' | 'UnloadExperts', bytes: Buffer, want?: grpc.status, message?: RegExp): Promise<void> {
    const r = await send(method, bytes);
    const name = grpc.status[r.code];
    codes.set(name, (codes.get(name) ?? 0) + 1);
    try {
      expect([grpc.status.OK, grpc.status.INVALID_ARGUMENT, grpc.status.RESOURCE_EXHAUSTED]).toContain(r.code);
      if (want !== undefined) expect(name).toBe(grpc.status[want]);
      if (message) expect(r.details).toMatch(message);
      if (r.info) {
        // The answer is what the node holds now, within its budget.
        expect(r.info.experts.length * PAIR_BYTES).toBe(r.info.weightBytes);
        expect(r.info.weightBytes).toBeLessThanOrEqual(6 * PAIR_BYTES);
      }
      expect(node.child.exitCode).toBeNull();
    } catch (e) {
      throw new Error(`FUZZ_SEED=${SEED} case "${what}" (${method}, ${bytes.length} bytes: ${bytes.subarray(0, 40).toString('hex')}): ` +
        `${name} ${r.details}\n${(e as Error).message}\nnode log tail: ${node.log().slice(-2000)}`);
    }
  }

  test('hostile ExpertsChange messages: clear answers, the node stays up', async () => {
    const tooMany = Array.from({ length: 100_000 }, (_, i): [number, number] => [i % 2, i % 4]);
    await fuzzCase('100k entries', 'LoadExperts', change(tooMany), grpc.status.INVALID_ARGUMENT, /^ExpertsChange is \d+ bytes, more than listing every pair/);
    await fuzzCase('100k entries', 'UnloadExperts', change(tooMany), grpc.status.INVALID_ARGUMENT);
    // Refused on its size before anything decodes it, whatever it holds.
    await fuzzCase('4 MB of entry tags', 'LoadExperts', Buffer.alloc(4 << 20, 0x0a), grpc.status.INVALID_ARGUMENT, /^ExpertsChange is 4194304 bytes/);
    await fuzzCase('uint32 max layer', 'LoadExperts', change([[0, 0], [2 ** 32 - 1, 0]]), grpc.status.INVALID_ARGUMENT, /^experts\[1\]: layer 4294967295 is out of range/);
    await fuzzCase('uint32 max expert', 'UnloadExperts', change([[1, 2 ** 32 - 1]]), grpc.status.INVALID_ARGUMENT, /^experts\[0\]: expert 4294967295 of layer 1/);
    await fuzzCase('uint64 layer (wraps to uint32)', 'LoadExperts', change([[2 ** 40 + 1, 0]]), undefined);
    await fuzzCase('200 duplicates of a held pair', 'LoadExperts', change(Array.from({ length: 200 }, (): [number, number] => [0, 0])), grpc.status.OK);
    await fuzzCase('empty', 'LoadExperts', Buffer.alloc(0), grpc.status.OK);
    await fuzzCase('empty', 'UnloadExperts', Buffer.alloc(0), grpc.status.OK);
    await fuzzCase('truncated entry', 'LoadExperts', change([[1, 1]]).subarray(0, 4), grpc.status.INVALID_ARGUMENT, /^malformed ExpertsChange/);
    await fuzzCase('declared length past the end', 'LoadExperts', Buffer.from([0x0a, 0xff, 0xff, 0x03, 0x08, 0x01]), grpc.status.INVALID_ARGUMENT);
    await fuzzCase('field 1 as a varint', 'LoadExperts', Buffer.from([0x08, 0x05]), undefined);
    await fuzzCase('unknown fields only', 'UnloadExperts', Buffer.from([0x12, 0x02, 0x08, 0x01, 0x18, 0x07]), grpc.status.OK);
    await fuzzCase('past the budget', 'LoadExperts', change([[0, 2], [0, 3], [1, 0], [1, 1], [1, 2]]), grpc.status.RESOURCE_EXHAUSTED);

    const started = Date.now();
    let done = 0;
    for (; done < RANDOM_CASES && Date.now() - started < BUDGET_MS; done++) {
      const method = rand(2) ? 'LoadExperts' : 'UnloadExperts';
      const pairs = Array.from({ length: rand(6) }, (): [number, number] => [rand(3), rand(5)]);
      let bytes = change(pairs);
      switch (rand(4)) {
        case 0: break; // as written: in or out of range
        case 1: bytes = bytes.subarray(0, rand(bytes.length + 1)); break;
        case 2: bytes = Buffer.from(bytes); if (bytes.length) bytes[rand(bytes.length)] = rand(256); break;
        default: bytes = Buffer.from(Array.from({ length: rand(64) }, () => rand(256)));
      }
      await fuzzCase(`random #${done}`, method, bytes);
    }
    expect(done).toBeGreaterThan(20);

    // Still a working node: load a pair and compute with it.
    const client = new ExpertClient(node.address);
    try {
      await client.unloadExperts([{ layer: 1, expert: 0 }, { layer: 1, expert: 1 }, { layer: 1, expert: 2 }, { layer: 1, expert: 3 }], 10_000);
      const info = await client.loadExperts([{ layer: 1, expert: 3 }], 10_000);
      expect(info.expertsSpec).toContain('1:3');
      const b = randomBatch(dims, 1, 3, 9, { topK: 1 });
      b.experts.fill(3);
      const batch = rerouted(b);
      const req = encodeExpertRequest(batch, batch.groups, { stepId: 0, wire: 'f32', timeoutMs: 0, traceContext: {}, hiddenSize: 64, intermediateSize: 160 });
      const { response } = await client.call(req.request, 10_000);
      expect(response.out!.count).toBe(3);
    } finally {
      client.close();
    }
    // eslint-disable-next-line no-console
    console.log(`expert admin fuzz: seed ${SEED}, ${done} random cases, answers ${JSON.stringify(Object.fromEntries(codes))}`);
  }, 90_000);
});
