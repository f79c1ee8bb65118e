// plan() and node speed: two in-process nodes both hold every pair; while nothing is measured the
// routes split by count (deterministic), and once one node is measured clearly (>= 2x) slower its
// replicas stop getting the groups the fast copy finishes first (placement splits replicas by speed).
import { allPairs } from '../../core/expert-spec';
import { ModelFolder } from '../../core/model-folder';
import { native, type NativeBackend } from '../../core/native';
import { LocalExperts } from '../../coordinator/local-experts';
import { RemoteExperts } from '../../coordinator/remote-experts';
import { describeGolden, TINY_A_MODEL } from '../helpers/golden';
import { type InProcessNode, maxAbsDiff, randomBatch, sleep, startNode, wrapStoreRun } from './helpers';

describeGolden('replicas by node speed (tiny-a, in-process nodes)', () => {
  const dims = { hiddenSize: 64, intermediateSize: 160, numLayers: 2, numExperts: 4 };
  let folder: ModelFolder;
  let backend: NativeBackend;
  let local: LocalExperts;
  let nodes: InProcessNode[] = [];
  let remote: RemoteExperts | undefined;

  beforeAll(async () => {
    folder = await ModelFolder.open(TINY_A_MODEL);
    backend = native().createBackend('cpu', 1);
    local = await LocalExperts.load(folder, backend, { store: 'auto', mode: 'sparse' });
    nodes = await Promise.all([0, 1].map(() => startNode(folder, allPairs(dims))));
  });
  afterAll(async () => {
    await remote?.close();
    for (const n of nodes) await n.stop();
    await local?.close();
    backend?.close();
    await folder?.close();
  });

  test('unmeasured: routes split by count; node1 60 ms slower per call: the fast copy takes the routes, same results', async () => {
    const routes = [0, 0];
    remote = await RemoteExperts.connect({
      shardMap: { nodes: nodes.map((n) => ({ address: n.address, experts: allPairs(dims) })) },
      model: dims, connectTimeoutMs: 10_000, healthCheckIntervalMs: 60_000, hedge: false,
      observers: [{ onCallEnd: (call, r) => { if (r.ok) routes[call.nodeIndex] += call.routes; } }],
    });
    const undo = wrapStoreRun(nodes[1], (run) => async (...args) => {
      await sleep(60);
      return run(...args);
    });
    try {
      // 4 rows to all four experts: the first call splits 8/8 routes (fewest routes, then map order).
      const first = randomBatch(dims, 0, 4, 1, { topK: 4 });
      const out = await remote.runExperts(first);
      expect(maxAbsDiff(out.out, (await local.runExperts(first)).out)).toBeLessThanOrEqual(1e-6);
      expect(routes).toEqual([8, 8]);
      // Warm up both nodes' latency windows (8 samples each, the same sizes as below).
      for (let i = 0; i < 10; i++) await remote.runExperts(randomBatch(dims, i % 2, 4, 10 + i, { topK: 4 }));
      routes.fill(0);
      for (let i = 0; i < 8; i++) {
        const b = randomBatch(dims, i % 2, 4, 100 + i, { topK: 2 });
        const got = await remote.runExperts(b);
        expect(maxAbsDiff(got.out, (await local.runExperts(b)).out)).toBeLessThanOrEqual(1e-6);
      }
      // 8 calls x 4 rows x top-2 = 64 routes; the slow copy may still take a group when the fast one's
      // planned rows would be a larger (slower) size class, but not the fewest-routes half.
      expect(routes[0] + routes[1]).toBe(64);
      expect(routes[1]).toBeLessThanOrEqual(16);
    } finally {
      undo();
    }
  }, 30_000);
});
