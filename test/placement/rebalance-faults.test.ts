// A live shard-map change with a node killed (-9) while it loads, on real
// expert-node processes (3 nodes, 2 replicas of every pair): the moves to it fail,
// the old copies stay and keep serving, the other moves finish, and every batch
// run meanwhile equals the reference bit for bit.
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { allPairs, formatExpertSpec, pairKey } from '../../core/expert-spec';
import { makeDemoModel } from '../../core/demo-model';
import { ModelFolder } from '../../core/model-folder';
import { native, type NativeBackend } from '../../core/native';
import type { ShardMap } from '../../core/shard-map';
import { LocalCluster } from '../../coordinator/local-cluster';
import { LocalExperts } from '../../coordinator/local-experts';
import { RemoteExperts } from '../../coordinator/remote-experts';
import { SMALL_DEMO } from '../serve/helpers';
import { randomBatch, type SlotBatch, sourceNodeCommand } from '../cluster/helpers';

const dims = { hiddenSize: 64, intermediateSize: 128, numLayers: 2, numExperts: 4 };

describe('rebalance with a node killed mid-load (3 expert-node processes x 2 replicas)', () => {
  let dir: string;
  let folder: ModelFolder;
  let backend: NativeBackend;
  let cluster: LocalCluster;
  const remotes: RemoteExperts[] = [];

  beforeAll(async () => {
    dir = fs.mkdtempSync(path.join(os.tmpdir(), 'ts-rebalance-fault-'));
    await makeDemoModel(dir, SMALL_DEMO);
    folder = await ModelFolder.open(dir);
    backend = native().createBackend('cpu', 1);
    cluster = await LocalCluster.start({ modelDir: dir, dims, nodes: 3, replicas: 2, nodeCommand: sourceNodeCommand(), device: 'cpu', threads: 1 });
  }, 60_000);
  afterAll(async () => {
    for (let i = 0; i < 3; i++) cluster?.kill(i, 'SIGCONT');
    for (const r of remotes) await r.close();
    await cluster?.stop();
    backend?.close();
    await folder?.close();
    if (dir) fs.rmSync(dir, { recursive: true, force: true });
  });

  test('moves to the killed node fail and keep the old copies; the rest finish; no batch fails or changes', async () => {
    // The reference: every pair in process, summed by the same coordinator code.
    const all = allPairs(dims);
    const local = await LocalExperts.loadPairs(folder, backend, all, { store: 'auto', mode: 'sparse' });
    const reference = await RemoteExperts.connect({ shardMap: { nodes: [{ address: 'local', experts: all }] }, model: dims, local });
    remotes.push(reference);
    const remote = await RemoteExperts.connect({ shardMap: cluster.shardMap, model: dims, callTimeoutMs: 3_000, healthCheckIntervalMs: 200,
      adminTimeoutMs: 5_000, connectTimeoutMs: 10_000 });
    remotes.push(remote);

    const [n0, n1, victim] = cluster.shardMap.nodes;
    const held = (n: { experts: { layer: number; expert: number }[] }) => new Set(n.experts.map((p) => pairKey(p.layer, p.expert)));
    // The victim gains every pair it lacks; one pair moves from node 0 to node 1.
    const moving = n0.experts.find((p) => !held(n1).has(pairKey(p.layer, p.expert)))!;
    const next: ShardMap = { nodes: [
      { ...n0, experts: n0.experts.filter((p) => p !== moving) },
      { ...n1, experts: [...n1.experts, moving] },
      { ...victim, experts: all },
    ] };
    const gained = all.filter((p) => !held(victim).has(pairKey(p.layer, p.expert)));
    expect(gained.length).toBeGreaterThan(0);

    let stop = false;
    const errors: string[] = [];
    let mismatches = 0;
    let ran = 0;
    const load = (async () => {
      for (let seed = 1; !stop; seed++) {
        const batch: SlotBatch = randomBatch(dims, seed % 2, 1 + (seed % 13), seed);
        try {
          const [got, want] = await Promise.all([remote.runExperts(batch), reference.runExperts(batch)]);
          if (!Buffer.from(got.out.buffer).equals(Buffer.from(want.out.buffer))) mismatches++;
          ran++;
        } catch (e) {
          errors.push((e as Error).message);
        }
      }
    })();
    // Hung first, so its load cannot finish; killed as soon as the loads are sent.
    cluster.kill(2, 'SIGSTOP');
    let killed = false;
    const moves = await remote.applyShardMap(next, () => {
      if (killed) return;
      killed = true;
      setImmediate(() => cluster.kill(2, 'SIGKILL'));
    });
    // Batches after the failed rebalance still run (the victim's pairs have their other replica).
    const after = ran;
    await new Promise((r) => setTimeout(r, 300));
    stop = true;
    await load;
    expect(errors).toEqual([]);
    expect(mismatches).toBe(0);
    expect(ran).toBeGreaterThan(after);

    const toVictim = moves.filter((m) => m.to === (victim.name ?? victim.address));
    expect(toVictim.map((m) => pairKey(m.layer, m.expert)).sort()).toEqual(gained.map((p) => pairKey(p.layer, p.expert)).sort());
    expect(toVictim.every((m) => m.phase === 'failed' && /load on .* failed/.test(m.error ?? ''))).toBe(true);
    const other = moves.filter((m) => m.to !== (victim.name ?? victim.address));
    expect(other).toEqual([{ layer: moving.layer, expert: moving.expert, from: n0.name ?? n0.address, to: n1.name ?? n1.address, phase: 'done' }]);
    // The map now: the victim keeps only what it had (unhealthy), the one move is done.
    const now = new Map(remote.shardMap().nodes.map((n) => [n.address, formatExpertSpec(n.experts)]));
    expect(now.get(victim.address)).toBe(formatExpertSpec(victim.experts));
    expect(now.get(n1.address)).toBe(formatExpertSpec([...n1.experts, moving]));
    expect(remote.ready()).toBe(true);
  }, 60_000);
});
