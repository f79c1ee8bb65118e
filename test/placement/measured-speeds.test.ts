// measuredSpeeds: the rebalancer's node speeds from served traffic (bytes the cost model says a
// node read under the current map / its reported compute seconds), Info's speed kept where a node
// served too little, `turbosparse rebalance`'s printout of both, and the rebalancer's plan on
// real expert-node processes (compute time summed per node from their answers).
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { formatPlan } from '../../cli/rebalance';
import { modelPairs } from '../../cli/shard-map';
import { LocalCluster } from '../../coordinator/local-cluster';
import { Rebalancer, type RebalancePlan } from '../../coordinator/rebalancer';
import { RemoteExperts } from '../../coordinator/remote-experts';
import { makeDemoModel } from '../../core/demo-model';
import { ModelFolder } from '../../core/model-folder';
import { measuredSpeeds, type NodeTraffic } from '../../core/placement/measured-speeds';
import type { NodeDescription } from '../../core/placement/node-descriptions';
import { DEFAULT_ACTIVE_FRACTION, placeExperts, type PlacementInput } from '../../core/placement/placement';
import { balancedShardMap, type ShardMap, uniformPairs } from '../../core/shard-map';
import { randomBatch, sourceNodeCommand } from '../cluster/helpers';
import { SMALL_DEMO } from '../serve/helpers';

const GB = 1e9;
const MB = 1e6;
const m = { numLayers: 4, numExperts: 32, hiddenSize: 64, intermediateSize: 128, topK: 2 };
const PAIR_BYTES = 10 * MB;
const TOKENS = 5000;

function node(name: string, gbps: number): NodeDescription {
  return { name, address: `${name}:50051`, memoryBytes: 1e12, device: 'cpu', bytesPerS: gbps * GB };
}

/**
 * What the nodes of `map` would report after TOKENS uniformly routed tokens, each node computing
 * at `realGbps` (its true speed) and answering `calls` calls: its routes are its share of the
 * pairs; its bytes per token (no routing: every pair equally hot) = pairs x topK / experts x
 * DEFAULT_ACTIVE_FRACTION x bytes.
 */
function traffic(map: ShardMap, realGbps: Record<string, number>, calls: Record<string, number>): NodeTraffic[] {
  const totalPairs = m.numLayers * m.numExperts;
  return map.nodes.map((n) => {
    const k = n.experts.length;
    const bytesPerToken = ((k * m.topK) / m.numExperts) * DEFAULT_ACTIVE_FRACTION * PAIR_BYTES;
    return {
      address: n.address,
      calls: calls[n.address],
      routes: Math.round((k / totalPairs) * TOKENS * m.topK * m.numLayers),
      computeUs: ((bytesPerToken * TOKENS) / (realGbps[n.address] * GB)) * 1e6,
    };
  });
}

function setup() {
  const nodes = [node('a', 1), node('b', 1), node('c', 1)];
  const pairs = uniformPairs(m, PAIR_BYTES);
  const input: PlacementInput = { model: m, pairs, nodes };
  const current = balancedShardMap(pairs, nodes.map((n) => n.address));
  return { nodes, input, current };
}

test('a node twice as slow as Info says is measured at half the speed and gets about half the load', () => {
  const { input, current } = setup();
  const t = traffic(current, { 'a:50051': 1, 'b:50051': 0.5, 'c:50051': 1 }, { 'a:50051': 1000, 'b:50051': 1000, 'c:50051': 1000 });
  const { nodes, speeds } = measuredSpeeds(current, input, t);
  expect(speeds.map((s) => s.info_bytes_per_s)).toEqual([GB, GB, GB]);
  expect(speeds[0].measured_bytes_per_s! / GB).toBeCloseTo(1, 2);
  expect(speeds[1].measured_bytes_per_s! / GB).toBeCloseTo(0.5, 2);
  expect(speeds[2].measured_bytes_per_s! / GB).toBeCloseTo(1, 2);
  expect(nodes.map((n) => n.bytesPerS)).toEqual(speeds.map((s) => s.used_bytes_per_s));
  expect(speeds[1].compute_s).toBeGreaterThan(speeds[0].compute_s);

  // Placed with the measured speeds, b holds about half of a's (and c's) bytes; with Info's, the same.
  const placed = placeExperts({ ...input, nodes });
  const [a, b, c] = placed.nodeBytes;
  expect(b / a).toBeGreaterThan(0.4);
  expect(b / a).toBeLessThan(0.62);
  expect(b / c).toBeLessThan(0.62);
  const info = placeExperts(input).nodeBytes;
  expect(info[1] / info[0]).toBeGreaterThan(0.85);
});

test('a node with too little traffic keeps Info speed; the others are still measured', () => {
  const { input, current } = setup();
  // c answered 20 calls (< MIN_CALIBRATION_CALLS) although it was slow in them: noise, ignored.
  const t = traffic(current, { 'a:50051': 1, 'b:50051': 0.5, 'c:50051': 0.1 }, { 'a:50051': 1000, 'b:50051': 1000, 'c:50051': 20 });
  const { nodes, speeds } = measuredSpeeds(current, input, t);
  expect(speeds[2].measured_bytes_per_s).toBeNull();
  expect(nodes[2].bytesPerS).toBe(GB);
  expect(speeds[1].measured_bytes_per_s! / GB).toBeCloseTo(0.5, 2);
  // With c on Info's scale, a and b keep their measured ratio (b half as fast) on that scale too:
  // divided by their mean measured/Info ratio (0.75), so measured per-call overhead does not make them look slow next to c.
  expect(speeds[1].used_bytes_per_s / speeds[0].used_bytes_per_s).toBeCloseTo(0.5, 2);
  expect((speeds[0].used_bytes_per_s + speeds[1].used_bytes_per_s) / 2 / GB).toBeCloseTo(1, 2);
  expect(nodes[1].bytesPerS).toBe(speeds[1].used_bytes_per_s);

  // Nobody served enough (a fresh coordinator): every speed is Info's and the plan is Info's plan.
  const none = measuredSpeeds(current, input, t.map((x) => ({ ...x, calls: 5 })));
  expect(none.speeds.every((s) => s.measured_bytes_per_s === null)).toBe(true);
  expect(none.nodes).toEqual(input.nodes);
  expect(placeExperts({ ...input, nodes: none.nodes }).map).toEqual(placeExperts(input).map);
  // Enough calls but under half a second of compute in all: still too little.
  const short = measuredSpeeds(current, input, t.map((x) => ({ ...x, computeUs: 1000 })));
  expect(short.speeds.every((s) => s.measured_bytes_per_s === null)).toBe(true);
  // No traffic at all (a node missing from the counters).
  expect(measuredSpeeds(current, input, []).speeds.every((s) => s.measured_bytes_per_s === null)).toBe(true);
});

test('turbosparse rebalance prints each node\'s Info, measured and used speed', () => {
  const plan: RebalancePlan = {
    dry_run: true, routing: 'collected', replicas: 1, moves: [], before: [], after: [],
    predicted: { before_ms: 2, after_ms: 1.5, gain: 0.25 }, warnings: [],
    speeds: [
      { name: 'a', address: 'a:50051', info_bytes_per_s: 2e9, measured_bytes_per_s: 1.25e9, used_bytes_per_s: 1.25e9, calls: 900, compute_s: 3.5 },
      { name: 'b', address: 'b:50051', info_bytes_per_s: 2e9, measured_bytes_per_s: null, used_bytes_per_s: 2e9, calls: 12, compute_s: 0.01 },
    ],
  };
  const text = formatPlan(plan);
  expect(text).toContain('node a: Info 2.000 GB/s, measured 1.250 GB/s (900 calls, 3.50 s), used 1.250 GB/s');
  expect(text).toContain('node b: Info 2.000 GB/s, measured - (too little traffic: 12 calls, 0.01 s), used 2.000 GB/s');
});

describe('the rebalancer measures speeds from real expert-node processes (2 nodes)', () => {
  const dims = { hiddenSize: 64, intermediateSize: 128, numLayers: 2, numExperts: 4 };
  let dir: string;
  let folder: ModelFolder;
  let cluster: LocalCluster;
  let remote: RemoteExperts | undefined;

  beforeAll(async () => {
    dir = fs.mkdtempSync(path.join(os.tmpdir(), 'ts-measured-speeds-'));
    await makeDemoModel(dir, SMALL_DEMO);
    folder = await ModelFolder.open(dir);
    cluster = await LocalCluster.start({ modelDir: dir, dims, nodes: 2, nodeCommand: sourceNodeCommand(), device: 'cpu', threads: 1 });
  }, 60_000);
  afterAll(async () => {
    await remote?.close();
    await cluster?.stop();
    await folder?.close();
    if (dir) fs.rmSync(dir, { recursive: true, force: true });
  });

  test('compute time is summed per node; a dry run shows each node\'s Info and measured speed; fresh counters keep Info\'s', async () => {
    remote = await RemoteExperts.connect({ shardMap: cluster.shardMap, model: dims });
    const rebalancer = new Rebalancer({
      experts: remote, model: { ...dims, topK: folder.config.topK }, pairs: modelPairs(folder), calibration: { minCalls: 40, minComputeS: 0 },
    });
    // Before any traffic: nothing measured, Info's speeds used.
    const fresh = await rebalancer.start({ dryRun: true });
    expect(fresh.speeds).toHaveLength(2);
    expect(fresh.speeds.every((s) => s.measured_bytes_per_s === null && s.used_bytes_per_s === s.info_bytes_per_s && s.calls === 0)).toBe(true);

    for (let seed = 1; seed <= 120; seed++) await remote.runExperts(randomBatch(dims, seed % 2, 1 + (seed % 7), seed));
    const stats = remote.stats();
    for (const n of stats) {
      expect(n.calls).toBeGreaterThanOrEqual(40);
      expect(n.computeUs).toBeGreaterThan(0);
    }
    const plan = await rebalancer.start({ dryRun: true });
    expect(plan.speeds.map((s) => s.address).sort()).toEqual(stats.map((n) => n.address).sort());
    for (const s of plan.speeds) {
      const n = stats.find((x) => x.address === s.address)!;
      expect(s.calls).toBe(n.calls);
      expect(s.compute_s).toBeCloseTo(n.computeUs / 1e6, 9);
      expect(s.measured_bytes_per_s).not.toBeNull();
      expect(Number.isFinite(s.measured_bytes_per_s!) && s.measured_bytes_per_s! > 0).toBe(true);
      expect(s.used_bytes_per_s).toBe(s.measured_bytes_per_s);
    }
    if (process.env.SHOW_SPEEDS) console.log(formatPlan(plan));
    expect(formatPlan(plan)).toMatch(/node \S+: Info [\d.]+ GB\/s, measured [\d.]+ GB\/s \(\d+ calls, [\d.]+ s\), used/);
  }, 30_000);
});
