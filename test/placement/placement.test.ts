// placeExperts / predictLayers / describeNodesFromInfo on hand-checkable cases: the cost model's
// numbers, skew moving hot pairs apart, speed-proportional load, memory limits, replicas on
// different nodes, the coordinator's whole layers, determinism and the infeasible error.
import { pairKey } from '../../core/expert-spec';
import type { NodeDescription } from '../../core/placement/node-descriptions';
import {
  callUnion, describeNodesFromInfo, placeExperts, type PlacementInput, predictLayers, REMOTE_CALL_MS,
} from '../../core/placement/placement';
import { ROUTING_FORMAT, type RoutingStats } from '../../core/placement/routing-stats';
import { balancedShardMap, type ShardMap, uniformPairs, validateShardMap } from '../../core/shard-map';
import type { InfoResponse__Output } from '../../core/wire/expert-proto';

const GB = 1e9;
const MB = 1e6;

function model(layers: number, experts: number, topK = 2) {
  return { numLayers: layers, numExperts: experts, hiddenSize: 64, intermediateSize: 128, topK };
}

function node(name: string, gbps: number, memoryBytes = 1e12, address = `${name}:50051`): NodeDescription {
  return { name, address, memoryBytes, device: 'cpu', bytesPerS: gbps * GB };
}

/** routing.json with routed_tokens[layer][expert] and one active fraction. */
function routing(m: ReturnType<typeof model>, routed: number[][], active = 0.1): RoutingStats {
  return {
    format: ROUTING_FORMAT, version: 1, source: 'profile', created: '2026-12-03T00:00:00.000Z',
    model: { name: 't', layers: m.numLayers, experts: m.numExperts, top_k: m.topK, hidden_size: m.hiddenSize, intermediate_size: m.intermediateSize },
    tokens: 1000,
    pairs: routed.flatMap((row, layer) => row.map((r, expert) => ({ layer, expert, routed_tokens: r, active_fraction: active }))),
    nodes: [],
  };
}

/** node address -> the pair keys it holds. */
function holdings(map: ShardMap): Map<string, string[]> {
  return new Map(map.nodes.map((n) => [n.address, n.experts.map((p) => pairKey(p.layer, p.expert))]));
}

/** Per pair: how many nodes hold it, and on which. */
function holders(map: ShardMap): Map<string, string[]> {
  const out = new Map<string, string[]>();
  for (const n of map.nodes) for (const p of n.experts) out.set(pairKey(p.layer, p.expert), [...(out.get(pairKey(p.layer, p.expert)) ?? []), n.address]);
  return out;
}

test('the cost model: load = topK x share x active x bytes; a node = its load / speed + the call; a layer = its slowest node', () => {
  const m = model(1, 2, 1);
  const input: PlacementInput = {
    model: m, pairs: uniformPairs(m, 100 * MB), routing: routing(m, [[3, 1]], 0.2),
    nodes: [node('a', 1), node('b', 1)],
  };
  // Expert 0: 1 x 0.75 x 0.2 x 100 MB = 15 MB at 1 GB/s = 15 ms; expert 1: 5 ms.
  const map: ShardMap = { nodes: [{ address: 'a:50051', experts: [{ layer: 0, expert: 0 }] }, { address: 'b:50051', experts: [{ layer: 0, expert: 1 }] }] };
  const [layer] = predictLayers(map, input);
  expect(layer.slowestMs).toBeCloseTo(15 + REMOTE_CALL_MS, 9);
  expect(layer.meanMs).toBeCloseTo((15 + 5) / 2 + REMOTE_CALL_MS, 9);
  // A replicated pair's load is split by speed: copies of expert 0 on a (1 GB/s) and on c (3 GB/s) take 3.75 ms each.
  const replicated: ShardMap = { nodes: [{ address: 'a:50051', experts: [{ layer: 0, expert: 0 }, { layer: 0, expert: 1 }] }, { address: 'c:50051', experts: [{ layer: 0, expert: 0 }] }] };
  const [r] = predictLayers(replicated, { ...input, nodes: [node('a', 1), node('c', 3)] });
  expect(r.slowestMs).toBeCloseTo(3.75 + 5 + REMOTE_CALL_MS, 9);
  expect(r.meanMs).toBeCloseTo((3.75 + 5 + 3.75) / 2 + REMOTE_CALL_MS, 9);
  // A node the map names but the input does not describe is an error.
  expect(() => predictLayers({ nodes: [{ address: 'x:1', experts: [{ layer: 0, expert: 0 }] }] }, input)).toThrow(/x:1 is not among the described nodes/);
});

test('calls: a pair routed in many small calls costs more than one with the same routes in few large calls (its rows share the weights)', () => {
  const m = model(1, 2, 1);
  const stats = routing(m, [[400, 400]], 0.2);
  stats.pairs[0].calls = 400; // 1 route per call
  stats.pairs[1].calls = 100; // 4 routes per call
  const input: PlacementInput = { model: m, pairs: uniformPairs(m, 100 * MB), routing: stats, nodes: [node('a', 1), node('b', 1)] };
  const map: ShardMap = { nodes: [{ address: 'a:50051', experts: [{ layer: 0, expert: 0 }] }, { address: 'b:50051', experts: [{ layer: 0, expert: 1 }] }] };
  // Per token: 0.5 routes to each. Expert 0: 0.5 calls x 0.2 x 100 MB = 10 MB -> 10 ms at 1 GB/s.
  // Expert 1: 0.125 calls x (1 - 0.8^4 = 0.5904) x 100 MB = 7.38 MB -> 7.38 ms.
  expect(callUnion(0.2, 4)).toBeCloseTo(0.5904, 12);
  const [layer] = predictLayers(map, input);
  expect(layer.slowestMs).toBeCloseTo(10 + REMOTE_CALL_MS, 9);
  expect(layer.meanMs).toBeCloseTo((10 + 7.38) / 2 + REMOTE_CALL_MS, 9);
  // The old model (and a file without calls) charges every route alike: both 10 ms.
  const [old] = predictLayers(map, { ...input, costModel: 'routes' });
  expect(old.meanMs).toBeCloseTo(10 + REMOTE_CALL_MS, 9);
  delete stats.pairs[0].calls;
  delete stats.pairs[1].calls;
  expect(predictLayers(map, input)[0].meanMs).toBeCloseTo(10 + REMOTE_CALL_MS, 9);
  // Placement follows: with a 2x faster node and four pairs of equal routes, the fast node takes the
  // pairs of many small calls (the costly ones) and both nodes end up within 20% of each other.
  const m4 = model(1, 4, 1);
  const st4 = routing(m4, [[250, 250, 250, 250]], 0.2);
  st4.pairs.forEach((p, e) => { p.calls = e < 2 ? 250 : 25; });
  const placed = placeExperts({ model: m4, pairs: uniformPairs(m4, 100 * MB), routing: st4, nodes: [node('fast', 2), node('slow', 1)] });
  expect(holdings(placed.map).get('fast:50051')).toEqual(expect.arrayContaining([pairKey(0, 0), pairKey(0, 1)]));
  const [pl] = placed.layers;
  expect(pl.slowestMs / pl.meanMs).toBeLessThan(1.2);
});

test('skewed shares move the hot pairs apart (never two hot pairs on one node) and beat the byte-balanced map', () => {
  const m = model(4, 8);
  // Experts 0 and 2 get 40% each of every layer's routes; byte balancing (alternating) puts them together.
  const routed = Array.from({ length: 4 }, () => [400, 50, 400, 50, 25, 25, 25, 25]);
  const input: PlacementInput = { model: m, pairs: uniformPairs(m, 100 * MB), routing: routing(m, routed), nodes: [node('a', 1, 1.6e9), node('b', 1, 1.6e9)] };
  const r = placeExperts(input);
  validateShardMap(r.map, m);
  const h = holders(r.map);
  for (let l = 0; l < 4; l++) {
    expect(h.get(pairKey(l, 0))).toHaveLength(1);
    expect(h.get(pairKey(l, 0))).not.toEqual(h.get(pairKey(l, 2)));
  }
  // Each layer: total load 2 x 0.1 x 100 MB = 20 MB; split evenly 10 ms per node is reachable (8 + 1 + 0.5 + 0.5 each).
  for (const layer of r.layers) expect(layer.slowestMs).toBeCloseTo(10 + REMOTE_CALL_MS, 6);
  const balanced = predictLayers(balancedShardMap(input.pairs, ['a:50051', 'b:50051']), input);
  const sum = (ls: { slowestMs: number }[]) => ls.reduce((s, l) => s + l.slowestMs, 0);
  expect(sum(r.layers)).toBeLessThan(sum(balanced));
  expect(r.nodeBytes).toEqual([1.6e9, 1.6e9]);
});

test('a 2x faster node gets about 2x the load', () => {
  const m = model(2, 12);
  const input: PlacementInput = { model: m, pairs: uniformPairs(m, 100 * MB), nodes: [node('slow', 1), node('fast', 2)] };
  const r = placeExperts(input);
  // Uniform routing without stats: each pair's load is equal, 12 pairs per layer: 8 on fast, 4 on slow balances exactly.
  const h = holdings(r.map);
  for (let l = 0; l < 2; l++) {
    expect(h.get('fast:50051')!.filter((k) => k.startsWith(`${l}:`))).toHaveLength(8);
    expect(h.get('slow:50051')!.filter((k) => k.startsWith(`${l}:`))).toHaveLength(4);
  }
  for (const layer of r.layers) expect(layer.slowestMs).toBeCloseTo(layer.meanMs, 9);
});

test('memory limits: never exceeded, and a tight fast node still serves every layer (look-ahead)', () => {
  const m = model(4, 4);
  // fast holds 4 pairs, slow 12: the fast node's room is shared out over the layers instead of going to layer 0.
  const input: PlacementInput = { model: m, pairs: uniformPairs(m, 100 * MB), nodes: [node('fast', 10, 400 * MB), node('slow', 1, 1200 * MB)] };
  const r = placeExperts(input);
  validateShardMap(r.map, m);
  expect(r.nodeBytes[0]).toBeLessThanOrEqual(400 * MB);
  expect(r.nodeBytes[1]).toBeLessThanOrEqual(1200 * MB);
  const fast = holdings(r.map).get('fast:50051')!;
  expect(fast.map((k) => k.split(':')[0]).sort()).toEqual(['0', '1', '2', '3']);
  // Every layer alike: a pair's load is 2 x 1/4 x 0.15 x 100 MB = 7.5 MB: one on fast (0.75 ms), three on slow (22.5 ms).
  for (const layer of r.layers) expect(layer.slowestMs).toBeCloseTo(22.5 + REMOTE_CALL_MS, 6);
});

test('replicas: every pair on R different nodes; memory left goes to copies of hot pairs that lower a layer', () => {
  const m = model(2, 4);
  const pairs = uniformPairs(m, 100 * MB);
  const nodes = [node('a', 1, 800 * MB), node('b', 1, 800 * MB), node('c', 1, 800 * MB)];
  const r = placeExperts({ model: m, pairs, nodes, replicas: 2 });
  for (const [, on] of holders(r.map)) {
    expect(on.length).toBeGreaterThanOrEqual(2);
    expect(new Set(on).size).toBe(on.length);
  }
  r.nodeBytes.forEach((b) => expect(b).toBeLessThanOrEqual(800 * MB));
  // One pair is 90% of its layer: alone on a node it sets the layer's time; copies split it.
  const hot = routing(m, [[900, 50, 25, 25], [900, 50, 25, 25]]);
  const one = placeExperts({ model: m, pairs, nodes, routing: hot });
  expect(holders(one.map).get(pairKey(0, 0))!.length).toBeGreaterThanOrEqual(2);
  const unreplicated: ShardMap = { nodes: [
    { address: 'a:50051', experts: [{ layer: 0, expert: 0 }, { layer: 1, expert: 0 }] },
    { address: 'b:50051', experts: [{ layer: 0, expert: 1 }, { layer: 1, expert: 1 }] },
    { address: 'c:50051', experts: [{ layer: 0, expert: 2 }, { layer: 0, expert: 3 }, { layer: 1, expert: 2 }, { layer: 1, expert: 3 }] },
  ] };
  const before = predictLayers(unreplicated, { model: m, pairs, nodes, routing: hot });
  expect(one.layers[0].slowestMs).toBeLessThan(before[0].slowestMs * 0.7);
  // The coordinator does not split a pair's routes by speed: an extra copy never goes to a slower node.
  const mixed = [node('a', 2, 800 * MB), node('b', 2, 800 * MB), node('c', 1, 800 * MB)];
  const spread = placeExperts({ model: m, pairs, nodes: mixed, routing: hot });
  for (const [, on] of holders(spread.map)) if (on.length > 1) expect(on).not.toContain('c:50051');
  expect([...holders(spread.map).values()].some((on) => on.length > 1)).toBe(true);
  expect(() => placeExperts({ model: m, pairs, nodes, replicas: 4 })).toThrow(/^--replicas 4 needs at least 4 nodes/);
});

test('the coordinator (address local) takes whole layers when that beats the network call', () => {
  const m = model(4, 4);
  const pairs = uniformPairs(m, 10 * MB);
  // Tiny loads: a layer costs 4 x 0.15 x 0.5 x 10 MB / 100 GB/s = 0.03 ms locally, far under one remote call.
  const local = node('coordinator', 100, 80 * MB, 'local');
  const r = placeExperts({ model: m, pairs, nodes: [node('a', 100), node('b', 100), local] });
  const mine = holdings(r.map).get('local')!;
  // Room for two whole layers: both all local (no call), the other two on the network.
  const layersLocal = [0, 1, 2, 3].filter((l) => [0, 1, 2, 3].every((e) => mine.includes(pairKey(l, e))));
  expect(layersLocal).toHaveLength(2);
  expect(mine).toHaveLength(8);
  for (const l of layersLocal) expect(r.layers[l].slowestMs).toBeLessThan(REMOTE_CALL_MS);
  for (const l of [0, 1, 2, 3].filter((x) => !layersLocal.includes(x))) expect(r.layers[l].slowestMs).toBeGreaterThan(REMOTE_CALL_MS);
  // A slow coordinator (slower than a call plus the spread) keeps no whole layer.
  const slowLocal = { ...local, bytesPerS: 1e6 };
  const s = placeExperts({ model: m, pairs, nodes: [node('a', 100), node('b', 100), slowLocal] });
  const held = holdings(s.map).get('local') ?? [];
  expect([0, 1, 2, 3].some((l) => [0, 1, 2, 3].every((e) => held.includes(pairKey(l, e))))).toBe(false);
});

test('deterministic: the same input gives the same map', () => {
  const m = model(6, 8);
  const routed = Array.from({ length: 6 }, (_, l) => Array.from({ length: 8 }, (_, e) => ((l * 7 + e * 13) % 11) * 10 + 1));
  const input: PlacementInput = {
    model: m, pairs: uniformPairs(m, 50 * MB), routing: routing(m, routed),
    nodes: [node('a', 1, 900 * MB), node('b', 2, 900 * MB), node('c', 3, 900 * MB), { ...node('me', 2, 400 * MB), address: 'local' }],
  };
  const a = placeExperts(input);
  const b = placeExperts(JSON.parse(JSON.stringify(input)));
  expect(b).toEqual(a);
  validateShardMap(a.map, m);
  a.nodeBytes.forEach((bytes, i) => expect(bytes).toBeLessThanOrEqual(input.nodes[i].memoryBytes));
  // Its prediction is the one predictLayers gives for its map.
  expect(predictLayers(a.map, input).map((l) => l.slowestMs)).toEqual(a.layers.map((l) => l.slowestMs));
});

test('infeasible: one clear error naming how much memory is missing', () => {
  const m = model(2, 4);
  const pairs = uniformPairs(m, 2 ** 30);
  expect(() => placeExperts({ model: m, pairs, nodes: [node('a', 1, 3 * 2 ** 30), node('b', 1, 3 * 2 ** 30)] })).toThrow(
    /^placement: the experts need 8\.00 GiB but the nodes hold 6\.00 GiB: 2\.00 GiB missing; add a node or raise memory_gib in --nodes-file$/);
  expect(() => placeExperts({ model: m, pairs, nodes: [node('a', 1, 6 * 2 ** 30), node('b', 1, 6 * 2 ** 30)], replicas: 2 })).toThrow(
    /need 16\.00 GiB \(2 copies of every pair\) but the nodes hold 12\.00 GiB: 4\.00 GiB missing.*lower --replicas/);
  // Enough in total, but a pair does not split: 1.5 GiB on each of 6 nodes holds one pair each, not 8.
  expect(() => placeExperts({ model: m, pairs, nodes: Array.from({ length: 6 }, (_, i) => node(`n${i}`, 1, 1.5 * 2 ** 30)) })).toThrow(
    /^placement: no node has room left for layer \d expert \d \(1\.00 GiB; the most any node has left is 512\.0 MiB\): about 512\.0 MiB missing on one node/);
  expect(() => placeExperts({ model: m, pairs, nodes: [node('a', 1, 2 ** 29), node('b', 1, 100 * 2 ** 30)], replicas: 2 })).toThrow(
    /only 1 node\(s\) have room for it and --replicas is 2/);
  const other = routing(model(3, 4), [[1, 1, 1, 1], [1, 1, 1, 1], [1, 1, 1, 1]]);
  expect(() => placeExperts({ model: m, pairs, nodes: [node('a', 1)], routing: other })).toThrow(/^--routing: the stats describe another model \(3 layers x 4 experts/);
});

test('describeNodesFromInfo: name, memory budget (0 = no limit, said), measured speed (0 = median of the others, said), device', () => {
  const info = (o: Partial<InfoResponse__Output>): InfoResponse__Output => ({
    modelId: 'm', hiddenSize: 64, intermediateSize: 128, numLayers: 2, numExperts: 4, experts: [], expertsSpec: '', dtype: 'f32',
    device: 'cpu', kernels: '', weightBytes: 0, version: '', memoryBudgetBytes: 0, ffnBytesPerS: 0, nodeName: '', ...o,
  });
  const warnings: string[] = [];
  const nodes = describeNodesFromInfo([
    { address: '10.0.0.1:50051', info: info({ nodeName: 'gpu-a', memoryBudgetBytes: 8 * 2 ** 30, ffnBytesPerS: 4e9, device: 'cuda' }) },
    { address: '10.0.0.2:50051', info: info({ memoryBudgetBytes: 0, ffnBytesPerS: 2e9 }) },
    { address: '10.0.0.3:50051', info: info({ memoryBudgetBytes: 2 ** 30, ffnBytesPerS: 0 }) },
  ], (line) => warnings.push(line));
  expect(nodes).toEqual([
    { name: 'gpu-a', address: '10.0.0.1:50051', memoryBytes: 8 * 2 ** 30, device: 'cuda', bytesPerS: 4e9 },
    { name: '10.0.0.2:50051', address: '10.0.0.2:50051', memoryBytes: Number.POSITIVE_INFINITY, device: 'cpu', bytesPerS: 2e9 },
    { name: '10.0.0.3:50051', address: '10.0.0.3:50051', memoryBytes: 2 ** 30, device: 'cpu', bytesPerS: 2e9 },
  ]);
  expect(warnings).toEqual([
    'node 10.0.0.2:50051 (10.0.0.2:50051) reports no memory budget (start it with one): placing as if it had no limit',
    'node 10.0.0.3:50051 (10.0.0.3:50051) reports no measured FFN speed: assuming 2.000 GB/s (the median of the others)',
  ]);
  // A node without a memory budget (no limit) still gets a valid placement.
  const m = model(2, 4);
  const r = placeExperts({ model: m, pairs: uniformPairs(m, 100 * MB), nodes });
  validateShardMap(r.map, m);
});

test('bounded fuzz: random models, routing, nodes and memory give a valid map within memory, or one UserError line', () => {
  // A small seeded generator (mulberry32): the same cases every run.
  let seed = 12345;
  const rand = () => {
    seed = (seed + 0x6d2b79f5) | 0;
    let t = Math.imul(seed ^ (seed >>> 15), 1 | seed);
    t = (t + Math.imul(t ^ (t >>> 7), 61 | t)) ^ t;
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
  const int = (lo: number, hi: number) => lo + Math.floor(rand() * (hi - lo + 1));
  let placed = 0;
  let refused = 0;
  for (let c = 0; c < 150; c++) {
    const m = model(int(1, 4), int(1, 6), 0);
    m.topK = int(1, m.numExperts);
    const pairs = uniformPairs(m, 1).map((p) => ({ ...p, bytes: int(1, 5) * MB }));
    const n = int(1, 4);
    const nodes = Array.from({ length: n }, (_, i) => ({
      ...node(`n${i}`, 0.5 + rand() * 4, int(1, 12) * MB * (rand() < 0.2 ? 100 : 1)),
      ...(i === n - 1 && rand() < 0.3 ? { address: 'local' } : {}),
    }));
    const routed = Array.from({ length: m.numLayers }, () => Array.from({ length: m.numExperts }, () => (rand() < 0.2 ? 0 : int(0, 1000))));
    const replicas = int(1, 3);
    const input: PlacementInput = { model: m, pairs, nodes, replicas, ...(rand() < 0.7 ? { routing: routing(m, routed, rand()) } : {}) };
    let r;
    try {
      r = placeExperts(input);
    } catch (e) {
      expect((e as Error).name).toBe('UserError');
      expect((e as Error).message).not.toContain('\n');
      refused++;
      continue;
    }
    placed++;
    validateShardMap(r.map, m);
    r.nodeBytes.forEach((b, i) => expect(b).toBeLessThanOrEqual(nodes[i].memoryBytes));
    const size = new Map(pairs.map((p) => [pairKey(p.layer, p.expert), p.bytes]));
    for (const mapNode of r.map.nodes) {
      const i = nodes.findIndex((x) => x.address === mapNode.address);
      expect(mapNode.experts.reduce((s, p) => s + size.get(pairKey(p.layer, p.expert))!, 0)).toBe(r.nodeBytes[i]);
    }
    for (const [, on] of holders(r.map)) {
      expect(on.length).toBeGreaterThanOrEqual(replicas);
      expect(new Set(on).size).toBe(on.length);
    }
    for (const l of r.layers) expect(Number.isFinite(l.slowestMs) && l.slowestMs >= l.meanMs - 1e-9).toBe(true);
  }
  // Both outcomes occur, so the case mix tests something.
  expect(placed).toBeGreaterThan(20);
  expect(refused).toBeGreaterThan(20);
});
