// The remote expert backend against the in-process one, at the ExpertBackend
// seam: 1, 2 and 3 nodes and replicas give the same outputs; bf16/int8 wires
// stay within tolerance; a dead or hung node fails over to a replica, comes
// back when SERVING again, and with no replica left the step fails clearly.
import * as grpc from '@grpc/grpc-js';
import { HealthImplementation } from 'grpc-health-check';
import type { ExpertBackend, ExpertBatch } from '../../core/expert-backend';
import { allPairs, formatExpertSpec } from '../../core/expert-spec';
import { ModelFolder } from '../../core/model-folder';
import { native, type NativeBackend } from '../../core/native';
import { balancedShardMap, type ShardMap, uniformPairs } from '../../core/shard-map';
import { EXPERT_SERVICE_NAME, expertProto, type ExpertNodeHandlers } from '../../core/wire/expert-proto';
import { LocalExperts } from '../../coordinator/local-experts';
import { ExpertsUnavailableError, RemoteExperts, type RemoteExpertsOptions } from '../../coordinator/remote-experts';
import { ExpertNodeServer } from '../../expert-node/server';
import { describeGolden, TINY_A_MODEL } from '../helpers/golden';
import { type InProcessNode, maxAbsDiff, randomBatch, rerouted, type SlotBatch, startNode } from './helpers';

describeGolden('remote experts vs local (tiny-a, in-process nodes)', () => {
  let folder: ModelFolder;
  let backend: NativeBackend;
  let local: LocalExperts;
  const dims = { hiddenSize: 64, intermediateSize: 160, numLayers: 2, numExperts: 4 };
  const nodes: InProcessNode[] = [];
  const remotes: ExpertBackend[] = [];

  beforeAll(async () => {
    folder = await ModelFolder.open(TINY_A_MODEL);
    backend = native().createBackend('cpu', 1);
    local = await LocalExperts.load(folder, backend, { store: 'auto', mode: 'sparse' });
  });
  afterAll(async () => {
    for (const r of remotes) await r.close();
    for (const n of nodes) await n.stop();
    await local?.close();
    backend?.close();
    await folder?.close();
  });

  /** Starts the nodes of a balanced map over `count` nodes and connects a backend to them. */
  async function cluster(count: number, replicas: number, extra: Partial<RemoteExpertsOptions> = {}) {
    const plan = balancedShardMap(uniformPairs(dims, 1), Array.from({ length: count }, (_, i) => `n${i}:1`), { replicas });
    const started = await Promise.all(plan.nodes.map((n) => startNode(folder, n.experts)));
    nodes.push(...started);
    const shardMap: ShardMap = { nodes: plan.nodes.map((n, i) => ({ address: started[i].address, experts: n.experts })) };
    const remote = await RemoteExperts.connect({ shardMap, model: dims, connectTimeoutMs: 10_000, callTimeoutMs: 5_000, healthCheckIntervalMs: 100, ...extra });
    remotes.push(remote);
    return { remote, nodes: started, shardMap };
  }

  function batches(): SlotBatch[] {
    return [randomBatch(dims, 0, 1, 1), randomBatch(dims, 1, 5, 2), randomBatch(dims, 0, 17, 3, { density: 0.05 }), randomBatch(dims, 1, 9, 4, { density: 0.9 })];
  }

  test.each([
    [1, 1, 'auto'],
    [2, 1, 'auto'],
    [3, 1, 'auto'],
    [3, 2, 'auto'],
    [2, 1, 'grpc'],
    [3, 2, 'grpc'],
  ] as const)('f32 wire, %i node(s) x %i replica(s), transport %s: same outputs and active counts as local', async (count, replicas, transport) => {
    const { remote } = await cluster(count, replicas, { transport });
    // auto finds the run socket every node of this version serves.
    expect(remote.nodeList().map((n) => n.transport)).toEqual(Array(count).fill(transport === 'auto' ? 'socket' : 'grpc'));
    for (const b of batches()) {
      const want = await local.runExperts(b);
      const got = await remote.runExperts(b, { stepId: 1 });
      // Same kernels on the same f32 rows (bit-identical today); the tolerance allows a kernel
      // that fuses the weighted add (an FMA) where the coordinator adds two nodes' rows.
      expect(maxAbsDiff(got.out, want.out)).toBeLessThanOrEqual(1e-6);
      expect(got.active).toEqual(want.active);
    }
    const stats = remote.stats();
    expect(stats.reduce((s, n) => s + n.routes, 0)).toBe(batches().reduce((s, b) => s + b.nRows * b.topK, 0));
    expect(stats.every((n) => n.healthy && n.failures === 0)).toBe(true);
  });

  test.each([
    // Measured over 30 random batches: bf16 <= 0.5%, int8 <= 1.6% of the largest output value.
    ['bf16', 1e-2],
    ['int8', 3e-2],
  ] as const)('%s wire stays within %f of local, relative to the largest output', async (wire, tolerance) => {
    const { remote } = await cluster(2, 1, { wire });
    for (const b of batches()) {
      const want = await local.runExperts(b);
      const got = await remote.runExperts(b);
      let scale = 0;
      for (const v of want.out) scale = Math.max(scale, Math.abs(v));
      expect(maxAbsDiff(got.out, want.out) / scale).toBeLessThanOrEqual(tolerance);
    }
  });

  test('a token whose experts share a node crosses the network once; stats add up', async () => {
    const { remote, shardMap } = await cluster(2, 1);
    // Two experts of layer 0 that the balanced map put on the same node.
    const on0 = shardMap.nodes[0].experts.filter((p) => p.layer === 0).map((p) => p.expert);
    const b = randomBatch(dims, 0, 6, 9);
    for (let row = 0; row < 6; row++) b.experts.set([on0[0], on0[1]], row * 2);
    Object.assign(b, rerouted(b));
    const want = await local.runExperts(b);
    const got = await remote.runExperts(b);
    expect(maxAbsDiff(got.out, want.out)).toBeLessThanOrEqual(1e-6);
    const [n0, n1] = remote.stats();
    expect(n0).toMatchObject({ calls: 1, tokens: 6, routes: 12, failures: 0, expertsHeld: 4 });
    expect(n1.calls).toBe(0);
    // f32 rows both ways plus masks and framing.
    expect(n0.bytesSent).toBeGreaterThan(6 * 64 * 4);
    expect(n0.bytesReceived).toBeGreaterThan(6 * 64 * 4);
    expect(n0.activeFraction).toBeCloseTo(Array.from(want.active).reduce((a, x) => a + x, 0) / (12 * 160), 6);
  });

  test.each(['socket', 'grpc'] as const)('one persistent Run stream per node carries every layer of every step (no stream per call), transport %s', async (transport) => {
    // Counted where the node opens a Run stream (either transport); spied before the nodes exist.
    const opened = jest.spyOn(ExpertNodeServer.prototype as unknown as { openStream: (peer: unknown) => unknown }, 'openStream');
    try {
      const { remote } = await cluster(2, 1, { transport });
      for (let step = 0; step < 4; step++) {
        for (const layer of [0, 1]) await remote.runExperts(randomBatch(dims, layer, 3, 200 + step * 2 + layer), { stepId: step });
      }
      const stats = remote.stats();
      expect(stats.reduce((s, n) => s + n.calls, 0)).toBeGreaterThanOrEqual(8);
      // Both nodes were called many times, each over the one stream its connection opened.
      expect(stats.every((n) => n.calls >= 2)).toBe(true);
      expect(opened).toHaveBeenCalledTimes(2);
    } finally {
      opened.mockRestore();
    }
  });

  test('trace context travels inside the request; hooks see timings on both sides', async () => {
    const seen: Record<string, string>[] = [];
    const node = await startNode(folder, allPairs(dims), { hooks: { onRequest: (r) => void seen.push(r.traceContext) } });
    nodes.push(node);
    const ends: { ok: boolean; latencyUs: number; computeUs: number }[] = [];
    const remote = await RemoteExperts.connect({
      shardMap: { nodes: [{ address: node.address, experts: allPairs(dims) }] }, model: dims,
      observers: [{ onCallStart: (c) => ({ traceContext: { traceparent: `00-${'a'.repeat(32)}-${String(c.callId).padStart(16, '0')}-01` } }), onCallEnd: (_c, r) => void ends.push(r) }],
    });
    remotes.push(remote);
    await remote.runExperts(randomBatch(dims, 0, 3, 5), { stepId: 42 });
    expect(seen).toEqual([{ traceparent: `00-${'a'.repeat(32)}-0000000000000001-01` }]);
    expect(ends).toHaveLength(1);
    expect(ends[0].ok).toBe(true);
    expect(ends[0].latencyUs).toBeGreaterThanOrEqual(ends[0].computeUs);
  });

  test('a dead node fails over to its replica, then comes back once it is SERVING again', async () => {
    const log: string[] = [];
    const { remote, nodes: started, shardMap } = await cluster(3, 2, { log: (l) => void log.push(l) });
    const b = randomBatch(dims, 1, 12, 21);
    const want = await local.runExperts(b);
    await started[1].stop();
    const got = await remote.runExperts(b);
    expect(maxAbsDiff(got.out, want.out)).toBeLessThanOrEqual(1e-6);
    expect(got.active).toEqual(want.active);
    expect(remote.stats()[1].healthy).toBe(false);
    expect(log.join('\n')).toContain(`expert node ${started[1].address} unhealthy`);
    // While it is down, the other nodes serve everything.
    expect(maxAbsDiff((await remote.runExperts(b)).out, want.out)).toBeLessThanOrEqual(1e-6);

    // Restart it on the same port: the background health check brings it back.
    const again = await startNode(folder, shardMap.nodes[1].experts, { port: started[1].port });
    nodes.push(again);
    const t0 = Date.now();
    while (!remote.stats()[1].healthy && Date.now() - t0 < 10_000) await new Promise((r) => setTimeout(r, 50));
    expect(remote.stats()[1].healthy).toBe(true);
    const before = remote.stats()[1].calls;
    for (let i = 0; i < 4; i++) await remote.runExperts(randomBatch(dims, i % 2, 8, 100 + i));
    expect(remote.stats()[1].calls).toBeGreaterThan(before);
  });

  test('no replica left: the step fails at once, naming the pairs and the node', async () => {
    const { remote, nodes: started, shardMap } = await cluster(2, 1);
    await started[0].stop();
    const b = randomBatch(dims, 0, 8, 5);
    const t0 = Date.now();
    const err = await remote.runExperts(b).catch((e: Error) => e);
    expect(err).toBeInstanceOf(ExpertsUnavailableError);
    const lost = shardMap.nodes[0].experts.filter((p) => p.layer === 0 && Array.from(b.experts).includes(p.expert));
    expect((err as ExpertsUnavailableError).pairs).toEqual(lost);
    expect((err as Error).message).toContain(`layer 0: no healthy expert node holds ${formatExpertSpec(lost)}`);
    expect((err as Error).message).toContain(started[0].address);
    expect(Date.now() - t0).toBeLessThan(3000);
    // Later steps fail the same way, without waiting on the dead node.
    await expect(remote.runExperts(b)).rejects.toThrow(`no healthy expert node holds ${formatExpertSpec(lost)}`);
  });

  /** A node that looks healthy but never answers Run requests. */
  async function blackHole(info: Partial<{ hiddenSize: number }> = {}): Promise<{ address: string; server: grpc.Server }> {
    const server = new grpc.Server();
    const handlers: ExpertNodeHandlers = {
      Run: (call) => call.on('data', () => undefined),
      Info: (_call, cb) => cb(null, {
        hiddenSize: info.hiddenSize ?? 64, intermediateSize: 160, numLayers: 2, numExperts: 4,
        experts: allPairs(dims), expertsSpec: formatExpertSpec(allPairs(dims)),
      }),
      LoadExperts: (_call, cb) => cb({ code: grpc.status.UNIMPLEMENTED, details: 'a black hole loads nothing' }),
      UnloadExperts: (_call, cb) => cb({ code: grpc.status.UNIMPLEMENTED, details: 'a black hole unloads nothing' }),
    };
    server.addService(expertProto().service as unknown as grpc.ServiceDefinition, handlers);
    new HealthImplementation({ '': 'SERVING', [EXPERT_SERVICE_NAME]: 'SERVING' }).addToServer(server);
    const port = await new Promise<number>((res, rej) => server.bindAsync('127.0.0.1:0', grpc.ServerCredentials.createInsecure(), (e, p) => (e ? rej(e) : res(p))));
    return { address: `127.0.0.1:${port}`, server };
  }

  test('a hung node times out (per-call deadline) and its work moves to the replica; alone it fails, never hangs', async () => {
    const hole = await blackHole();
    const real = await startNode(folder, allPairs(dims));
    nodes.push(real);
    try {
      const all = allPairs(dims);
      const remote = await RemoteExperts.connect({
        shardMap: { nodes: [{ address: hole.address, experts: all }, { address: real.address, experts: all }] },
        model: dims, callTimeoutMs: 300, healthCheckIntervalMs: 60_000,
      });
      remotes.push(remote);
      const b = randomBatch(dims, 0, 4, 8);
      const want = await local.runExperts(b);
      const got = await remote.runExperts(b);
      expect(maxAbsDiff(got.out, want.out)).toBeLessThanOrEqual(1e-6);
      expect(remote.stats()[0]).toMatchObject({ healthy: false, failures: 1, lastError: expect.stringContaining('DEADLINE_EXCEEDED') });

      const alone = await RemoteExperts.connect({ shardMap: { nodes: [{ address: hole.address, experts: all }] }, model: dims, callTimeoutMs: 300 });
      remotes.push(alone);
      const t0 = Date.now();
      await expect(alone.runExperts(b)).rejects.toThrow(/no healthy expert node holds .*DEADLINE_EXCEEDED: no answer within 300 ms/);
      expect(Date.now() - t0).toBeLessThan(2000);
    } finally {
      hole.server.forceShutdown();
    }
  });

  test('connect checks each node against the shard map and the model', async () => {
    const node = await startNode(folder, [{ layer: 0, expert: 0 }, { layer: 0, expert: 1 }]);
    nodes.push(node);
    const others = { address: '127.0.0.1:1', experts: allPairs(dims) };
    await expect(RemoteExperts.connect({
      shardMap: { nodes: [{ address: node.address, experts: allPairs(dims).slice(0, 3) }, others] }, model: dims, connectTimeoutMs: 3000,
    })).rejects.toThrow(`expert node ${node.address} holds 0:0-1, but the shard map also gives it 0:2: fix the shard map or the node's --experts`);
    const hole = await blackHole({ hiddenSize: 32 });
    try {
      await expect(RemoteExperts.connect({ shardMap: { nodes: [{ address: hole.address, experts: allPairs(dims) }] }, model: dims }))
        .rejects.toThrow(`expert node ${hole.address} serves a model of 2 layers x 4 experts, hidden 32, intermediate 160, but the coordinator's has 2 layers x 4 experts, hidden 64, intermediate 160`);
    } finally {
      hole.server.forceShutdown();
    }
    // Nobody listening and no replica: a clear error after the connect timeout, naming what is missing.
    await expect(RemoteExperts.connect({ shardMap: { nodes: [{ address: '127.0.0.1:1', experts: allPairs(dims) }] }, model: dims, connectTimeoutMs: 500 }))
      .rejects.toThrow('expert nodes unavailable, no node left for 0-1:0-3: 127.0.0.1:1: UNAVAILABLE');
  });
});
