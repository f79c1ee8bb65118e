// A node that gained a pair by a live shard-map change, then restarted (kill -9) with
// its start-up flags, on real expert-node processes: the coordinator's health check
// loads the lost pair again and takes the node back (its batches equal the reference
// bit for bit); restarted with a memory budget too small for the pair, the node stays
// unhealthy with the refusal as its lastError (logged once), until it comes back able to hold it.
import net from 'node:net';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { allPairs, type ExpertPair, formatExpertSpec, parseExpertSpec } from '../../core/expert-spec';
import { makeDemoModel } from '../../core/demo-model';
import { ModelFolder } from '../../core/model-folder';
import { native, type NativeBackend } from '../../core/native';
import { ExpertClient } from '../../coordinator/expert-client';
import { LocalExperts } from '../../coordinator/local-experts';
import { RemoteExperts } from '../../coordinator/remote-experts';
import { SMALL_DEMO, waitFor } from '../serve/helpers';
import { randomBatch, rerouted, type SlotBatch } from '../cluster/helpers';
import { type NodeProcess, startNodeProcess } from '../cluster/node-process';

const dims = { hiddenSize: 64, intermediateSize: 128, numLayers: 2, numExperts: 4 };
const spec = (s: string): ExpertPair[] => parseExpertSpec(s, dims, 'test');

/** A port free now (the restarted node must come back on the address the coordinator knows). */
function freePort(): Promise<number> {
  return new Promise((resolve, reject) => {
    const s = net.createServer().once('error', reject).listen(0, '127.0.0.1', () => {
      const { port } = s.address() as net.AddressInfo;
      s.close(() => resolve(port));
    });
  });
}

/** Layer 0 rows routed to experts 0 and 2 only: after the move both are on node B. */
function throughB(seed: number): SlotBatch {
  const b = randomBatch(dims, 0, 1 + (seed % 9), seed);
  for (let i = 0; i < b.experts.length; i++) b.experts[i] = i % 2 === 0 ? 0 : 2;
  return rerouted(b);
}

const same = (a: Float32Array, b: Float32Array) => Buffer.from(a.buffer, a.byteOffset, a.byteLength).equals(Buffer.from(b.buffer, b.byteOffset, b.byteLength));

describe('a node restarted after a live shard-map change (2 expert-node processes)', () => {
  let dir: string;
  let folder: ModelFolder;
  let backend: NativeBackend;
  const procs: NodeProcess[] = [];
  const remotes: RemoteExperts[] = [];
  const clients: ExpertClient[] = [];

  beforeAll(async () => {
    dir = fs.mkdtempSync(path.join(os.tmpdir(), 'ts-rebalance-restart-'));
    await makeDemoModel(dir, SMALL_DEMO);
    folder = await ModelFolder.open(dir);
    backend = native().createBackend('cpu', 1);
  }, 30_000);
  afterAll(async () => {
    for (const c of clients) c.close();
    for (const r of remotes) await r.close();
    for (const p of procs) await p.stop();
    backend?.close();
    await folder?.close();
    if (dir) fs.rmSync(dir, { recursive: true, force: true });
  });

  const start = async (args: string[]) => {
    const p = await startNodeProcess([...args, '--no-self-benchmark'], dir);
    procs.push(p);
    return p;
  };

  /** Nodes A (0-1:0-1) and B (0-1:2-3, on a fixed port), then 0:0 moved from A to B live: B gained it by LoadExperts. */
  async function movedToB(adminTimeoutMs: number) {
    const portB = await freePort();
    const flagsB = ['--experts', '0-1:2-3', '--name', 'B', '--port', String(portB)];
    const a = await start(['--experts', '0-1:0-1', '--name', 'A']);
    const b = await start(flagsB);
    expect(b.port).toBe(portB);
    const lines: string[] = [];
    const remote = await RemoteExperts.connect({
      shardMap: { nodes: [{ address: a.address, name: 'A', experts: spec('0-1:0-1') }, { address: b.address, name: 'B', experts: spec('0-1:2-3') }] },
      model: dims, callTimeoutMs: 3_000, healthCheckIntervalMs: 200, adminTimeoutMs, connectTimeoutMs: 10_000,
      log: (line) => void lines.push(line),
    });
    remotes.push(remote);
    // Nothing but B holds 0:0 afterwards.
    const moves = await remote.applyShardMap({ nodes: [
      { address: a.address, experts: spec('0:1,1:0-1') },
      { address: b.address, experts: spec('0:0,0-1:2-3') },
    ] });
    expect(moves).toEqual([{ layer: 0, expert: 0, from: 'A', to: 'B', phase: 'done' }]);
    const nodeB = () => remote.stats().find((n) => n.address === b.address)!;
    return { a, b, flagsB, remote, lines, nodeB };
  }

  test('the lost pair is loaded again and the node serves it bit for bit; a refused load keeps it unhealthy with the reason', async () => {
    const all = allPairs(dims);
    const local = await LocalExperts.loadPairs(folder, backend, all, { store: 'auto', mode: 'sparse' });
    const reference = await RemoteExperts.connect({ shardMap: { nodes: [{ address: 'local', experts: all }] }, model: dims, local });
    remotes.push(reference);
    const setup = await movedToB(5_000);
    const { flagsB, remote, lines, nodeB } = setup;
    let b = setup.b;
    const calls: string[] = [];
    remote.addObserver({ onCallStart: (c) => void calls.push(c.node) });
    const checkThroughB = async (seed: number) => {
      calls.length = 0;
      for (let s = seed; s < seed + 6; s++) {
        const batch = throughB(s);
        const [got, want] = await Promise.all([remote.runExperts(batch), reference.runExperts(batch)]);
        expect(same(got.out, want.out)).toBe(true);
        expect(got.active).toEqual(want.active);
      }
      expect(new Set(calls)).toEqual(new Set([b.address]));
    };
    await checkThroughB(1);

    // kill -9 B: 0:0 has no healthy holder, so its batches fail and the backend is not ready.
    await b.stop();
    await waitFor(() => !nodeB().healthy, 10_000, 'B unhealthy after kill -9');
    expect(remote.ready()).toBe(false);
    await expect(remote.runExperts(throughB(50))).rejects.toThrow(/no healthy expert node holds/);

    // Restarted with its original flags (only 0-1:2-3): the coordinator loads 0:0 again and takes it back.
    b = await start(flagsB);
    const t0 = Date.now();
    await waitFor(() => nodeB().healthy, 15_000, 'B healthy again after its restart');
    const reloadMs = Date.now() - t0;
    expect(remote.ready()).toBe(true);
    const clientB = new ExpertClient(b.address);
    clients.push(clientB);
    expect((await clientB.info(5_000)).expertsSpec).toBe(formatExpertSpec(spec('0:0,0-1:2-3')));
    expect(lines.filter((l) => /expert node B came back without 0:0 of the live shard map: loaded them again in \d+ ms/.test(l))).toHaveLength(1);
    expect(remote.shardMap().nodes.map((n) => formatExpertSpec(n.experts))).toEqual(['0:1,1:0-1', '0:0,0-1:2-3'].map((x) => formatExpertSpec(spec(x))));
    await checkThroughB(100);

    // Restarted with a budget that fits its start-up pairs but not 0:0: the load is refused every
    // round, the node stays unhealthy showing why, and the refusal is logged once.
    const pairBytes = Number((await clientB.info(5_000)).weightBytes) / 5;
    await b.stop();
    await waitFor(() => !nodeB().healthy, 10_000, 'B unhealthy after the second kill -9');
    b = await start([...flagsB, '--memory-gib', String((4.5 * pairBytes) / 2 ** 30)]);
    await waitFor(() => /RESOURCE_EXHAUSTED/.test(nodeB().lastError ?? ''), 10_000, 'the refused reload as B\'s lastError');
    await new Promise((r) => setTimeout(r, 1_500)); // ~7 more health rounds, each trying the load again
    expect(nodeB().healthy).toBe(false);
    expect(nodeB().lastError).toMatch(/came back without 0:0 of the live shard map, and loading them failed: .*RESOURCE_EXHAUSTED: .*--memory-gib/);
    expect(lines.filter((l) => /expert node B stays unhealthy: .*RESOURCE_EXHAUSTED/.test(l))).toHaveLength(1);
    expect(remote.ready()).toBe(false);

    // Back with room for it (a later round): loaded again, healthy, same bits.
    await b.stop();
    b = await start(flagsB);
    await waitFor(() => nodeB().healthy, 15_000, 'B healthy once it can hold 0:0 again');
    expect(lines.filter((l) => /expert node B came back without 0:0/.test(l))).toHaveLength(2);
    await checkThroughB(200);
    console.log(`rebalance-restart: B back ${reloadMs} ms after its restart answered SERVING`);
  }, 60_000);

  test('no reload while a shard-map change runs: the node waits, showing why, and is loaded right after it', async () => {
    const { a, b, flagsB, remote, lines, nodeB } = await movedToB(3_000);
    await b.stop();
    await waitFor(() => !nodeB().healthy, 10_000, 'B unhealthy after kill -9');
    // A change that cannot finish yet: A (stopped) gains a copy of 1:2; its load waits for the admin timeout.
    a.child.kill('SIGSTOP');
    const change = remote.applyShardMap({ nodes: [
      { address: a.address, experts: spec('0:1,1:0-2') },
      { address: b.address, experts: spec('0:0,0-1:2-3') },
    ] });
    try {
      const restarted = await start(flagsB);
      await waitFor(() => /once the running shard-map change ends/.test(nodeB().lastError ?? ''), 10_000, 'B waiting for the change');
      expect(nodeB().lastError).toMatch(/^lacks 0:0 of the live shard map; loading them again once the running shard-map change ends$/);
      const clientB = new ExpertClient(restarted.address);
      clients.push(clientB);
      expect((await clientB.info(5_000)).expertsSpec).toBe(formatExpertSpec(spec('0-1:2-3'))); // not loaded during the change
      expect(nodeB().healthy).toBe(false);
    } finally {
      a.child.kill('SIGCONT');
    }
    const moves = await change;
    // A answers once continued, within the admin timeout or past it: either way the change ends.
    expect(moves).toEqual([expect.objectContaining({ layer: 1, expert: 2, from: null, to: 'A' })]);
    await waitFor(() => nodeB().healthy, 15_000, 'B healthy after the change ended');
    expect(lines.filter((l) => /expert node B came back without 0:0 of the live shard map: loaded them again/.test(l))).toHaveLength(1);
    await waitFor(() => remote.ready(), 10_000, 'every pair served again');
  }, 40_000);
});
