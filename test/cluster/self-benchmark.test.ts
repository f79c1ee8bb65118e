// The expert node's start-up FFN benchmark (Info's ffn_bytes_per_s) and --slowdown, the
// mixed-speed emulation it must reflect; a local cluster whose nodes get their own
// speed and arguments (the placement bench starts cluster:N that way).
import { ExpertClient } from '../../coordinator/expert-client';
import { LocalCluster } from '../../coordinator/local-cluster';
import { parseExpertSpec } from '../../core/expert-spec';
import { ModelFolder } from '../../core/model-folder';
import { native, type NativeBackend } from '../../core/native';
import { expertBytes } from '../../core/shard-map';
import { ExpertStore } from '../../expert-node/expert-store';
import { selfBenchmark } from '../../expert-node/self-benchmark';
import { describeGolden, TINY_A_MODEL } from '../helpers/golden';
import { sourceNodeCommand } from './helpers';

describeGolden('self-benchmark (tiny-a)', () => {
  let folder: ModelFolder;
  let backend: NativeBackend;
  const stores: ExpertStore[] = [];
  const storeWith = async (spec: string, slowdown = 1) => {
    const s = await ExpertStore.load({ source: folder, dims: folder.config, pairs: spec ? parseExpertSpec(spec, folder.config) : [], backend, weights: 'auto', slowdown });
    stores.push(s);
    return s;
  };

  beforeAll(async () => {
    folder = await ModelFolder.open(TINY_A_MODEL);
    backend = native().createBackend('cpu', 1);
  });
  afterAll(async () => {
    for (const s of stores) s.close();
    backend?.close();
    await folder?.close();
  });

  test('times a few held experts of one layer, ~15% active, for the time asked, and counts the bytes the sparse FFN reads', async () => {
    const store = await storeWith('0:1,1:0-2');
    const r = await selfBenchmark(store, { budgetMs: 100 });
    // The layer with the most experts, one token each.
    expect(r).toMatchObject({ layer: 1, rows: 3 });
    expect(r.ms).toBeGreaterThanOrEqual(100);
    expect(r.calls).toBeGreaterThan(0);
    // Per call: gate+up rows of every masked neuron (~15% of 160 per expert), down rows of the active ones only.
    const row = expertBytes(64, 160, 'f32') / (3 * 160);
    const perCall = r.bytesRead / r.calls;
    expect(perCall).toBeGreaterThan(3 * 2 * 0.08 * 160 * row);
    expect(perCall).toBeLessThan(3 * 3 * 0.25 * 160 * row);
    expect(r.ffnBytesPerS).toBeCloseTo(r.bytesRead / (r.ms / 1000), 0);
    // The same work every start (seeded masks and rows).
    const again = await selfBenchmark(store, { budgetMs: 100 });
    expect(again.bytesRead / again.calls).toBe(perCall);
    expect((await selfBenchmark(await storeWith(''))).ffnBytesPerS).toBe(0);
  });

  test('--slowdown F: the node computes F times slower on average, and the benchmark shows it', async () => {
    const fast = await storeWith('0:0-3');
    const slow = await storeWith('0:0-3', 4);
    // Best of three: a busy machine only ever slows a run down.
    const best = async (s: ExpertStore) => {
      let m = 0;
      for (let i = 0; i < 3; i++) m = Math.max(m, (await selfBenchmark(s, { budgetMs: 150 })).ffnBytesPerS);
      return m;
    };
    const ratio = (await best(slow)) / (await best(fast));
    // 1/4 expected; a compute far below a timer's millisecond still averages out (the wait is owed, not rounded up).
    expect(ratio).toBeLessThan(0.5);
    expect(ratio).toBeGreaterThan(0.1);
  });

  test('a local cluster with per-node speed and arguments', async () => {
    const cluster = await LocalCluster.start({
      modelDir: TINY_A_MODEL, dims: folder.config, nodes: 2, nodeCommand: sourceNodeCommand(), device: 'cpu', threads: 1,
      perNode: [{ slowdown: 4 }, { args: ['--no-self-benchmark'] }],
    });
    const clients = cluster.nodes.map((n) => new ExpertClient(n.address));
    try {
      const infos = await Promise.all(clients.map((c) => c.info(10_000)));
      expect(infos.map((i) => i.nodeName)).toEqual(['node0', 'node1']);
      expect(infos[0].ffnBytesPerS).toBeGreaterThan(0);
      expect(infos[1].ffnBytesPerS).toBe(0);
      expect(cluster.nodes[0].stderrTail.join('\n')).toMatch(/self-benchmark: .* --slowdown 4\)/);
      expect(cluster.nodes[1].stderrTail.join('\n')).not.toContain('self-benchmark');
    } finally {
      for (const c of clients) c.close();
      await cluster.stop();
    }
  }, 60_000);
});
