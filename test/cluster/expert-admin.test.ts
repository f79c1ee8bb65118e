// The expert node's placement side on real processes (issue 16): Info's node name, memory
// budget and measured FFN speed; LoadExperts (a loaded pair serves bit-for-bit what local
// experts compute, the budget refuses all or nothing, pairs outside the model are refused);
// UnloadExperts while requests that use the pair are running and queued on a --slowdown node
// (they finish correctly, later requests are refused, the memory goes after them); a node
// stopped or killed mid-load leaves the caller with an error by its deadline, not hung.
import { spawnSync } from 'node:child_process';
import * as grpc from '@grpc/grpc-js';
import { ExpertClient, NodeCallError } from '../../coordinator/expert-client';
import { LocalExperts } from '../../coordinator/local-experts';
import { expertBytes } from '../../core/shard-map';
import { ModelFolder } from '../../core/model-folder';
import { native, type NativeBackend } from '../../core/native';
import { decodeRows } from '../../core/wire/rows';
import { describeGolden, TINY_A_MODEL } from '../helpers/golden';
import { randomBatch, rerouted, sleep, sourceNodeCommand, type SlotBatch } from './helpers';
import { type NodeProcess, startNodeProcess } from './node-process';
import { encodeExpertRequest } from './wire-reference';

const H = 64;
const I = 160;
const dims = { hiddenSize: H, intermediateSize: I, numLayers: 2, numExperts: 4 };
/** tiny-a is stored f32. */
const PAIR_BYTES = expertBytes(H, I, 'f32');

/** `rows` tokens of `layer`, each routed to every expert in `experts` (topK = experts.length). */
function batchFor(layer: number, experts: number[], rows: number, seed: number): SlotBatch {
  const b = randomBatch(dims, layer, rows, seed, { topK: experts.length });
  for (let s = 0; s < b.experts.length; s++) b.experts[s] = experts[s % experts.length];
  return rerouted(b);
}

function request(b: SlotBatch) {
  return encodeExpertRequest(b, b.groups, { stepId: 0, wire: 'f32', timeoutMs: 0, traceContext: {}, hiddenSize: H, intermediateSize: I }).request;
}

/** The node's answer for `b` equals the in-process experts' bit for bit. */
async function expectExact(local: LocalExperts, b: SlotBatch, reply: Promise<{ response: { out: unknown } }>): Promise<void> {
  const want = await local.runExperts(b);
  const { response } = await reply;
  const got = decodeRows(response.out as Parameters<typeof decodeRows>[0], b.nRows, H, 'out');
  expect(Buffer.from(got.buffer, got.byteOffset, got.byteLength).equals(Buffer.from(want.out.buffer, want.out.byteOffset, want.out.byteLength))).toBe(true);
}

const codeOf = (p: Promise<unknown>) => p.then(() => 'ok', (e: NodeCallError) => grpc.status[e.code]);

describeGolden('expert-node placement info and LoadExperts / UnloadExperts (tiny-a, real processes)', () => {
  let folder: ModelFolder;
  let backend: NativeBackend;
  let local: LocalExperts;
  const nodes: NodeProcess[] = [];
  const clients: ExpertClient[] = [];
  const connect = async (n: NodeProcess) => {
    const c = new ExpertClient(n.address);
    clients.push(c);
    await c.waitForReady(10_000);
    return c;
  };

  beforeAll(async () => {
    folder = await ModelFolder.open(TINY_A_MODEL);
    backend = native().createBackend('cpu', 1);
    local = await LocalExperts.load(folder, backend, { store: 'auto', mode: 'sparse' });
  });
  afterAll(async () => {
    for (const c of clients) c.close();
    await Promise.all(nodes.map((n) => n.stop()));
    await local?.close();
    backend?.close();
    await folder?.close();
  });

  describe('a node with a budget of 4.5 pairs', () => {
    let node: NodeProcess;
    let client: ExpertClient;
    const budget = 4.5 * PAIR_BYTES;

    beforeAll(async () => {
      node = await startNodeProcess(['--experts', '0:0-1', '--name', 'nodeA', '--memory-gib', String(budget / 2 ** 30)]);
      nodes.push(node);
      client = await connect(node);
    }, 60_000);

    test('Info names the node, its budget and its measured FFN speed (logged at start)', async () => {
      const info = await client.info(5_000);
      expect(info).toMatchObject({ nodeName: 'nodeA', memoryBudgetBytes: budget, expertsSpec: '0:0-1', weightBytes: 2 * PAIR_BYTES });
      expect(info.ffnBytesPerS).toBeGreaterThan(0);
      const line = /self-benchmark: sparse FFN reads ([\d.]+) GB\/s of active weights \(layer 0, 2 experts x 1 token, ~15% active, (\d+) calls in (\d+) ms\)/
        .exec(node.log());
      expect(line).not.toBeNull();
      expect(Number(line![1])).toBeCloseTo(info.ffnBytesPerS / 1e9, 3);
      expect(Number(line![3])).toBeGreaterThanOrEqual(150);
    });

    test('LoadExperts: the pair is held at once, serves exactly what local experts compute, and duplicates or held pairs are fine', async () => {
      const before = await codeOf(client.call(request(batchFor(1, [2], 3, 1)), 5_000));
      expect(before).toBe('FAILED_PRECONDITION');
      const info = await client.loadExperts([{ layer: 1, expert: 2 }, { layer: 1, expert: 2 }, { layer: 0, expert: 0 }], 10_000);
      expect(info.expertsSpec).toBe('0:0-1,1:2');
      expect(info.experts).toEqual([{ layer: 0, expert: 0 }, { layer: 0, expert: 1 }, { layer: 1, expert: 2 }]);
      // The budget is counted in the bytes the node really holds.
      expect(info.weightBytes).toBe(3 * PAIR_BYTES);
      expect((await client.info(5_000)).expertsSpec).toBe('0:0-1,1:2');
      const b = batchFor(1, [2], 5, 2);
      await expectExact(local, b, client.call(request(b), 5_000));
    });

    test('past the budget: RESOURCE_EXHAUSTED and nothing loaded; within it, it loads', async () => {
      const err = await client.loadExperts([{ layer: 1, expert: 0 }, { layer: 1, expert: 1 }], 10_000).catch((e: NodeCallError) => e);
      expect(err).toBeInstanceOf(NodeCallError);
      expect((err as NodeCallError).code).toBe(grpc.status.RESOURCE_EXHAUSTED);
      expect((err as NodeCallError).detail).toContain('loading 2 experts needs 0.2 MiB more, but the node holds 0.4 MiB of its 0.5 MiB budget (--memory-gib); nothing loaded');
      const info = await client.info(5_000);
      expect(info.expertsSpec).toBe('0:0-1,1:2');
      expect(info.weightBytes).toBe(3 * PAIR_BYTES);
      expect((await client.loadExperts([{ layer: 1, expert: 1 }], 10_000)).expertsSpec).toBe('0:0-1,1:1-2');
    });

    test('a pair outside the model is INVALID_ARGUMENT naming the entry; nothing changes and the node serves on', async () => {
      const err = (await client.loadExperts([{ layer: 1, expert: 3 }, { layer: 2, expert: 0 }], 5_000).catch((e: NodeCallError) => e)) as NodeCallError;
      expect(err.code).toBe(grpc.status.INVALID_ARGUMENT);
      expect(err.detail).toBe('experts[1]: layer 2 is out of range (the model has 2 layers: 0-1)');
      const bad = (await client.unloadExperts([{ layer: 0, expert: 4 }], 5_000).catch((e: NodeCallError) => e)) as NodeCallError;
      expect(bad.code).toBe(grpc.status.INVALID_ARGUMENT);
      expect(bad.detail).toBe('experts[0]: expert 4 of layer 0 is out of range (the model has 4 experts per layer: 0-3)');
      expect((await client.info(5_000)).expertsSpec).toBe('0:0-1,1:1-2');
      const b = batchFor(0, [0, 1], 4, 3);
      await expectExact(local, b, client.call(request(b), 5_000));
    });
  });

  test('UnloadExperts on a --slowdown node: requests already running and queued finish exactly, later ones are refused, ' +
    'then the memory is freed', async () => {
    const node = await startNodeProcess(['--experts', '0:0-1', '--slowdown', '200', '--no-self-benchmark', '--name', 'slow']);
    nodes.push(node);
    const client = await connect(node);
    expect((await client.info(5_000)).ffnBytesPerS).toBe(0);
    const events: string[] = [];
    // Size the running request to ~3 s on this machine, so it is surely in flight through the steps below; the
    // faster of two probes, since one slowed by other processes would size it too small.
    let probe = Infinity;
    for (let i = 0; i < 2; i++) probe = Math.min(probe, (await client.call(request(batchFor(0, [0, 1], 40, 3)), 60_000)).response.computeUs);
    const rows = Math.max(40, Math.min(4000, Math.ceil((40 * 3e6) / Math.max(1, probe))));
    const running = batchFor(0, [0, 1], rows, 4);
    const queued = batchFor(0, [1], 10, 5);
    const r1 = client.call(request(running), 120_000);
    const r2 = client.call(request(queued), 120_000);
    void r1.then(() => events.push('r1'), () => undefined);
    void r2.then(() => events.push('r2'), () => undefined);
    await sleep(200);
    const unload = client.unloadExperts([{ layer: 0, expert: 1 }], 120_000);
    void unload.then(() => events.push('unload'), () => undefined);
    await sleep(200);
    // Arrives after the unload: refused as for any pair the node does not hold, at once.
    expect(await codeOf(client.call(request(batchFor(0, [1], 2, 6)), 10_000))).toBe('FAILED_PRECONDITION');
    expect(events).toEqual([]);
    await expectExact(local, running, r1);
    await expectExact(local, queued, r2);
    const info = await unload;
    expect(events).toEqual(['r1', 'r2', 'unload']);
    expect((await r1).response.computeUs).toBeGreaterThan(400_000); // it was really in flight during the unload
    expect(info.expertsSpec).toBe('0:0');
    expect(info.weightBytes).toBe(PAIR_BYTES);
    const b = batchFor(0, [0], 2, 7);
    await expectExact(local, b, client.call(request(b), 60_000));
    // Unloading a pair not held is a no-op; loading it back serves again.
    expect((await client.unloadExperts([{ layer: 0, expert: 1 }], 5_000)).expertsSpec).toBe('0:0');
    expect((await client.loadExperts([{ layer: 0, expert: 1 }], 5_000)).expertsSpec).toBe('0:0-1');
  }, 120_000);

  test('a node stopped (SIGSTOP) or killed mid-load: the caller gets DEADLINE_EXCEEDED / UNAVAILABLE, not a hang', async () => {
    const node = await startNodeProcess(['--experts', '0:0', '--no-self-benchmark']);
    nodes.push(node);
    const client = await connect(node);
    node.child.kill('SIGSTOP');
    try {
      let t0 = Date.now();
      expect(await codeOf(client.loadExperts([{ layer: 1, expert: 3 }], 1_000))).toBe('DEADLINE_EXCEEDED');
      expect(Date.now() - t0).toBeLessThan(5_000);
      t0 = Date.now();
      const load = codeOf(client.loadExperts([{ layer: 1, expert: 3 }], 60_000));
      await sleep(300);
      node.child.kill('SIGKILL');
      expect(await load).toBe('UNAVAILABLE');
      expect(Date.now() - t0).toBeLessThan(10_000);
    } finally {
      await node.stop();
    }
  }, 60_000);

  test('a start whose --experts exceed --memory-gib is one line and exit code 2', () => {
    const [exe, ...args] = sourceNodeCommand();
    const r = spawnSync(exe, [...args, '--model', TINY_A_MODEL, '--experts', '0-1:*', '--port', '0', '--device', 'cpu',
      '--memory-gib', String(4 * PAIR_BYTES / 2 ** 30)], { encoding: 'utf8', timeout: 60_000 });
    expect(r.stderr).toBe(`error: --memory-gib ${4 * PAIR_BYTES / 2 ** 30}: the 8 experts to hold need 0.9 MiB as stored (--weights auto), ` +
      'more than the 0.5 MiB budget; give a larger --memory-gib or fewer experts\n');
    expect(r.status).toBe(2);
    const slow = spawnSync(exe, [...args, '--model', TINY_A_MODEL, '--experts', '0:0', '--slowdown', '0.5'], { encoding: 'utf8', timeout: 60_000 });
    expect(slow.stderr).toMatch(/^error: option '--slowdown <f>' argument '0.5' is invalid. --slowdown must be a number in \[1, 1000\][^\n]*\n$/);
    expect(slow.status).not.toBe(0);
  });
});
