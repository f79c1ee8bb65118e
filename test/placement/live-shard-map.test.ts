// RemoteExperts with the coordinator's own "local" node and live shard-map changes
// (applyShardMap), at the ExpertBackend seam against real expert-node servers on
// loopback: local pairs give the same bits as the nodes; a layer routed only to
// local pairs makes no network call; moving pairs between nodes and local while
// batches run changes no output bit, and every move ends loaded, switched, unloaded.
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { type ExpertPair, formatExpertSpec, parseExpertSpec } from '../../core/expert-spec';
import { makeDemoModel } from '../../core/demo-model';
import { ModelFolder } from '../../core/model-folder';
import { native, type NativeBackend } from '../../core/native';
import { type ShardMap, uniformPairs } from '../../core/shard-map';
import { LocalExperts } from '../../coordinator/local-experts';
import { Rebalancer } from '../../coordinator/rebalancer';
import { type PairMove, RemoteExperts } from '../../coordinator/remote-experts';
import { SMALL_DEMO, waitFor } from '../serve/helpers';
import { type InProcessNode, randomBatch, rerouted, type SlotBatch, startNode } from '../cluster/helpers';

const dims = { hiddenSize: 64, intermediateSize: 128, numLayers: 2, numExperts: 4 };
const spec = (s: string): ExpertPair[] => parseExpertSpec(s, dims, 'test');

describe('local node and live shard-map changes (in-process expert nodes)', () => {
  let dir: string;
  let folder: ModelFolder;
  let backend: NativeBackend;
  const nodes: InProcessNode[] = [];
  const remotes: RemoteExperts[] = [];
  const backends: NativeBackend[] = [];
  const newBackend = () => {
    const b = native().createBackend('cpu', 1);
    backends.push(b);
    return b;
  };

  beforeAll(async () => {
    dir = fs.mkdtempSync(path.join(os.tmpdir(), 'ts-live-map-'));
    await makeDemoModel(dir, SMALL_DEMO);
    folder = await ModelFolder.open(dir);
    backend = native().createBackend('cpu', 1);
  }, 30_000);
  afterAll(async () => {
    for (const r of remotes) await r.close();
    for (const n of nodes) await n.stop();
    for (const b of backends) b.close();
    backend?.close();
    await folder?.close();
    if (dir) fs.rmSync(dir, { recursive: true, force: true });
  });

  async function connect(map: { address: string; experts: string }[], local?: LocalExperts): Promise<RemoteExperts> {
    const shardMap: ShardMap = { nodes: map.map((n) => ({ address: n.address, experts: spec(n.experts) })) };
    const r = await RemoteExperts.connect({ shardMap, model: dims, local, connectTimeoutMs: 10_000, callTimeoutMs: 5_000, healthCheckIntervalMs: 200 });
    remotes.push(r);
    return r;
  }

  const batches = (seed: number): SlotBatch[] =>
    [randomBatch(dims, 0, 1, seed), randomBatch(dims, 1, 7, seed + 1), randomBatch(dims, 0, 19, seed + 2, { density: 0.05 }), randomBatch(dims, 1, 12, seed + 3, { density: 0.9 })];

  const same = (a: Float32Array, b: Float32Array) => Buffer.from(a.buffer, a.byteOffset, a.byteLength).equals(Buffer.from(b.buffer, b.byteOffset, b.byteLength));

  test('local pairs give the same bits as expert nodes; a layer routed only to local pairs calls no node', async () => {
    const a = await startNode(folder, spec('0-1:0-1'));
    const b = await startNode(folder, spec('0-1:2-3'));
    nodes.push(a, b);
    const remote = await connect([{ address: a.address, experts: '0-1:0-1' }, { address: b.address, experts: '0-1:2-3' }]);
    const local = await LocalExperts.loadPairs(folder, newBackend(), spec('0-1:0-1'), { store: 'auto', mode: 'sparse' });
    const mixed = await connect([{ address: 'local', experts: '0-1:0-1' }, { address: b.address, experts: '0-1:2-3' }], local);
    const calls: string[] = [];
    mixed.addObserver({ onCallStart: (c) => void calls.push(c.node) });
    for (const batch of batches(10)) {
      const want = await remote.runExperts(batch);
      const got = await mixed.runExperts(batch);
      expect(same(got.out, want.out)).toBe(true);
      expect(got.active).toEqual(want.active);
    }
    expect(calls).toContain('local');
    expect(calls).toContain(b.address);
    // Only experts 0 and 1 (held by local): no network call at all.
    const onlyLocal = randomBatch(dims, 1, 9, 77);
    for (let i = 0; i < onlyLocal.experts.length; i++) onlyLocal.experts[i] = i % 2;
    const routed = rerouted(onlyLocal);
    calls.length = 0;
    const got = await mixed.runExperts(routed);
    const want = await remote.runExperts(routed);
    expect(calls).toEqual(['local']);
    expect(same(got.out, want.out)).toBe(true);
    expect(mixed.stats().find((n) => n.address === 'local')).toMatchObject({ healthy: true, expertsHeld: 4 });
  }, 30_000);

  test('moving pairs between nodes and local under load changes no output bit; loads first, unloads last', async () => {
    const ref = await startNode(folder, spec('0-1:0-3'));
    const a = await startNode(folder, spec('0-1:0-1'));
    const b = await startNode(folder, spec('0-1:2-3'));
    nodes.push(ref, a, b);
    const reference = await connect([{ address: ref.address, experts: '0-1:0-3' }]);
    const local = await LocalExperts.loadPairs(folder, newBackend(), spec('0:0'), { store: 'auto', mode: 'sparse' });
    const remote = await connect([
      { address: 'local', experts: '0:0' },
      { address: a.address, experts: '0-1:0-1' },
      { address: b.address, experts: '0-1:2-3' },
    ], local);

    // Batches keep running while the map changes; each must equal the reference bit for bit.
    let stop = false;
    let ran = 0;
    const mismatches: string[] = [];
    const load = (async () => {
      for (let seed = 100; !stop; seed += 4) {
        await Promise.all(batches(seed).map(async (batch) => {
          const [got, want] = await Promise.all([remote.runExperts(batch), reference.runExperts(batch)]);
          if (!same(got.out, want.out)) mismatches.push(`seed ${seed} layer ${batch.layer}`);
          ran++;
        }));
      }
    })();
    await new Promise((r) => setTimeout(r, 100));
    const next: ShardMap = { nodes: [
      { address: 'local', experts: spec('0-1:2') },
      { address: a.address, experts: spec('0-1:0,0-1:3') },
      { address: b.address, experts: spec('0-1:1,0:0') },
    ] };
    const seen: PairMove['phase'][][] = [];
    const moves = await remote.applyShardMap(next, (m) => seen.push(m.map((x) => x.phase)));
    await new Promise((r) => setTimeout(r, 100));
    stop = true;
    await load;
    expect(mismatches).toEqual([]);
    expect(ran).toBeGreaterThan(8);

    expect(moves.every((m) => m.phase === 'done')).toBe(true);
    const label = (m: PairMove) => `${m.layer}:${m.expert} ${m.from ?? '-'}>${m.to ?? '-'}`;
    expect(moves.map(label).sort()).toEqual([
      `0:0 local>${b.address}`,
      `0:1 ${a.address}>${b.address}`,
      `0:2 ${b.address}>local`,
      `0:3 ${b.address}>${a.address}`,
      `1:1 ${a.address}>${b.address}`,
      `1:2 ${b.address}>local`,
      `1:3 ${b.address}>${a.address}`,
    ].sort());
    // Every move was reported loading before switching before unloading before done.
    expect(seen[0].every((p) => p === 'loading')).toBe(true);
    expect(seen.some((s) => s.includes('unloading'))).toBe(true);
    // The nodes really hold the new map: loaded pairs are there, moved-away pairs are freed.
    expect(formatExpertSpec(a.store.pairs)).toBe(formatExpertSpec(spec('0-1:0,0-1:3')));
    expect(formatExpertSpec(b.store.pairs)).toBe(formatExpertSpec(spec('0-1:1,0:0')));
    expect(formatExpertSpec(local.pairs())).toBe(formatExpertSpec(spec('0-1:2')));
    expect(remote.shardMap().nodes.map((n) => `${n.address}=${formatExpertSpec(n.experts)}`)).toEqual(
      next.nodes.map((n) => `${n.address}=${formatExpertSpec(n.experts)}`));
    expect(remote.ready()).toBe(true);
    for (const batch of batches(999)) expect(same((await remote.runExperts(batch)).out, (await reference.runExperts(batch)).out)).toBe(true);
  }, 30_000);

  test('periodic rebalancing applies a plan that pays and then skips (nothing left to gain)', async () => {
    const a = await startNode(folder, spec('0-1:0-3'));
    const b = await startNode(folder, spec('0:0'));
    nodes.push(a, b);
    const remote = await connect([{ address: a.address, experts: '0-1:0-3' }, { address: b.address, experts: '0:0' }]);
    const lines: string[] = [];
    // Pairs of 100 MB each for the cost model: compute, not the call overhead, decides (a tiny model's pairs would not pay).
    const rebalancer = new Rebalancer({ experts: remote, model: { ...dims, topK: 2 }, pairs: uniformPairs(dims, 1e8),
      log: (line) => void lines.push(line) });
    expect(rebalancer.status()).toEqual({ state: 'idle', moves: [] });
    rebalancer.startPeriodic(0.002); // every 120 ms
    try {
      await waitFor(() => rebalancer.status().state === 'done', 10_000, 'a periodic rebalance');
      await waitFor(() => lines.some((l) => /skipped, predicted gain 0\.0%/.test(l)), 10_000, 'a skipped one');
    } finally {
      rebalancer.stopPeriodic();
    }
    await rebalancer.idle();
    const status = rebalancer.status();
    expect(status.moves.length).toBeGreaterThan(0);
    expect(status.moves.every((m) => m.phase === 'done')).toBe(true);
    // Both nodes work now: the one that held a single pair got a fair share.
    const held = remote.shardMap().nodes.map((n) => n.experts.length);
    expect(Math.min(...held)).toBeGreaterThanOrEqual(3);
    expect(lines.find((l) => /move\(s\), predicted \d+\.\d% faster/.test(l))).toBeDefined();
  }, 30_000);

  test('a map naming an unknown node or missing a pair is one clear error; nothing changes', async () => {
    const a = await startNode(folder, spec('0-1:0-3'));
    nodes.push(a);
    const remote = await connect([{ address: a.address, experts: '0-1:0-3' }]);
    await expect(remote.applyShardMap({ nodes: [{ address: '127.0.0.1:1', experts: spec('0-1:0-3') }] }))
      .rejects.toThrow(/127\.0\.0\.1:1 is not one of this coordinator's expert nodes/);
    await expect(remote.applyShardMap({ nodes: [{ address: 'local', experts: spec('0-1:0-3') }] }))
      .rejects.toThrow(/local is not one of this coordinator's expert nodes/);
    await expect(remote.applyShardMap({ nodes: [{ address: a.address, experts: spec('0-1:0-2') }] }))
      .rejects.toThrow(/no node holds layers? 0-1 experts? 3|no node holds 0-1:3/);
    expect(formatExpertSpec(remote.shardMap().nodes[0].experts)).toBe('0-1:0-3');
  }, 30_000);
});
