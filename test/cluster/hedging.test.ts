// Hedged node calls, in process: a call still unanswered past its node's p99
// goes to a replica too and the first answer wins, summed in the plan's order
// (so the f32 output is bit-identical to an undisturbed run); a node past its
// measured deadline is failed over even though the hedge already answered.
import { allPairs, type ExpertPair } from '../../core/expert-spec';
import { ModelFolder } from '../../core/model-folder';
import { native, type NativeBackend } from '../../core/native';
import type { ShardMap } from '../../core/shard-map';
import { LocalExperts } from '../../coordinator/local-experts';
import { RemoteExperts, type RemoteExpertsOptions } from '../../coordinator/remote-experts';
import { describeGolden, TINY_A_MODEL } from '../helpers/golden';
import { type InProcessNode, maxAbsDiff, randomBatch, sleep, startNode, wrapStoreRun } from './helpers';

describeGolden('hedged expert-node calls (tiny-a, in-process nodes)', () => {
  const dims = { hiddenSize: 64, intermediateSize: 160, numLayers: 2, numExperts: 4 };
  let folder: ModelFolder;
  let backend: NativeBackend;
  let local: LocalExperts;
  let nodes: InProcessNode[];
  let shardMap: ShardMap;
  const remotes: RemoteExperts[] = [];

  const pairsOf = (experts: number[]): ExpertPair[] => [0, 1].flatMap((layer) => experts.map((expert) => ({ layer, expert })));

  beforeAll(async () => {
    folder = await ModelFolder.open(TINY_A_MODEL);
    backend = native().createBackend('cpu', 1);
    local = await LocalExperts.load(folder, backend, { store: 'auto', mode: 'sparse' });
    // node0 holds experts 0-1, node1 experts 2-3, node2 all four (a replica of both).
    const held = [pairsOf([0, 1]), pairsOf([2, 3]), allPairs(dims)];
    nodes = await Promise.all(held.map((pairs) => startNode(folder, pairs)));
    shardMap = { nodes: nodes.map((n, i) => ({ address: n.address, experts: held[i] })) };
  });
  afterAll(async () => {
    for (const r of remotes) await r.close();
    for (const n of nodes ?? []) await n.stop();
    await local?.close();
    backend?.close();
    await folder?.close();
  });

  async function connect(extra: Partial<RemoteExpertsOptions>): Promise<RemoteExperts> {
    const r = await RemoteExperts.connect({ shardMap, model: dims, connectTimeoutMs: 10_000, healthCheckIntervalMs: 60_000, ...extra });
    remotes.push(r);
    return r;
  }

  /**
   * Every row routed to all four experts: node0 gets expert 0, node1 experts 2-3, node2 expert 1
   * (the plan spreads load), so each output row is a sum of three parts whose order shows in its bits.
   */
  const batch = (layer: number, seed: number) => randomBatch(dims, layer, 3, seed, { topK: 4 });

  /** Enough calls of one size class for every node's p99 to count. */
  async function warmUp(r: RemoteExperts): Promise<void> {
    for (let i = 0; i < 12; i++) await r.runExperts(batch(i % 2, 500 + i));
    expect(r.stats().every((n) => n.calls >= 8 && n.healthy)).toBe(true);
  }

  test('a slow node is hedged to its replica: same bits as an undisturbed run, long before the slow answer', async () => {
    const plain = await connect({ hedge: false });
    // Without the hedge a slow call would wait its full answer (the deadline is at least 20 s here).
    // No hedge before 1 s: a loaded CI machine can slow an undisturbed call past its measured p99 (and so
    // hedge node2's call too), never near 4 s.
    const hedged = await connect({ hedge: true, callPolicy: { floorMs: 20_000, hedgeFloorMs: 1000 } });
    await warmUp(hedged);
    const b = batch(0, 7);
    const want = await plain.runExperts(b);
    expect(maxAbsDiff(want.out, (await local.runExperts(b)).out)).toBeLessThanOrEqual(1e-6);

    // A loaded CI machine may hedge a warm-up call too: count from here.
    const [h0, , h2] = hedged.stats().map((n) => n.hedged);
    const slow: Promise<unknown>[] = [];
    let slowWaited = false;
    const undo = wrapStoreRun(nodes[0], (run) => (...args) => {
      slow.push(sleep(4000).then(() => ((slowWaited = true), run(...args))));
      return slow[slow.length - 1] as ReturnType<typeof run>;
    });
    try {
      const t0 = Date.now();
      const got = await hedged.runExperts(b);
      const ms = Date.now() - t0;
      // Before node0's answer could come (it waits 4 s first), and well before on a quiet machine;
      // the flag, not a tight bound, is the point on a loaded CI machine.
      expect(slowWaited).toBe(false);
      expect(ms).toBeLessThan(3500);
      // Plan order, not arrival order: node2's answer for node0's routes sits where node0's would.
      expect(Buffer.from(got.out.buffer)).toEqual(Buffer.from(want.out.buffer));
      expect(got.active).toEqual(want.active);
      const [n0, , n2] = hedged.stats();
      expect(n0.hedged - h0).toBe(1);
      expect(n2.hedged - h2).toBe(0);
      // Slow, not failed: node0's late answer still lands (and counts) within its deadline.
      await Promise.allSettled(slow);
      await sleep(100);
      expect(hedged.stats()[0]).toMatchObject({ healthy: true, failures: 0 });
    } finally {
      await Promise.allSettled(slow);
      undo();
    }
  });

  test('a hung node past its measured deadline is failed over although the hedge already answered', async () => {
    const health: string[] = [];
    const remote = await connect({ hedge: true, callPolicy: { floorMs: 300 }, observers: [{ onNodeHealth: (node, up, why) => void health.push(`${node} ${up} ${why}`) }] });
    await warmUp(remote);
    const b = batch(1, 9);
    const want = await remote.runExperts(b);
    const hung: Promise<unknown>[] = [];
    let hungWaited = false;
    const undo = wrapStoreRun(nodes[1], (run) => (...args) => {
      hung.push(sleep(3000).then(() => ((hungWaited = true), run(...args))));
      return hung[hung.length - 1] as ReturnType<typeof run>;
    });
    // A loaded CI machine may hedge a warm-up call too: count from here.
    const hedgedBefore = remote.stats()[1].hedged;
    try {
      const t0 = Date.now();
      const got = await remote.runExperts(b);
      // The hedge answered before the hung call could (it waits 3 s first).
      expect(hungWaited).toBe(false);
      expect(Date.now() - t0).toBeLessThan(2500);
      expect(Buffer.from(got.out.buffer)).toEqual(Buffer.from(want.out.buffer));
      // The deadline (4 x p99 of node1's 3-row calls, at least 300 ms) passes well before the hung call would answer.
      const t1 = Date.now();
      while (remote.stats()[1].healthy && Date.now() - t1 < 4000) await sleep(20);
      expect(remote.stats()[1]).toMatchObject({ healthy: false, lastError: expect.stringContaining('DEADLINE_EXCEEDED') });
      expect(health).toEqual([`${nodes[1].address} false ${remote.stats()[1].lastError}`]);
      // Out of the plan now: the next call goes to the replica at once, no hedge needed (node2 now
      // sums three experts itself, so the bits may differ from the three-node plan's).
      const t2 = Date.now();
      expect(maxAbsDiff((await remote.runExperts(b)).out, want.out)).toBeLessThanOrEqual(1e-6);
      // At once, not after the hung node's 3 s (nor its deadline, then a failover).
      expect(Date.now() - t2).toBeLessThan(2000);
      expect(remote.stats()[1].hedged - hedgedBefore).toBe(1);
    } finally {
      await Promise.allSettled(hung);
      undo();
    }
  });
});
