// The routing collector counts, per (layer, expert), every (token, expert) route and
// the neurons computed over them, exactly: by hand for a small batch, and inside a
// real engine (one batch and two overlapped lanes) against the layers' own records.
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { makeDemoModel } from '../../core/demo-model';
import { Registry } from '../../core/metrics';
import { parseRoutingStats, formatRoutingStats, routesPerCall } from '../../core/placement/routing-stats';
import { routedBatchFromSlots, routeOffsets } from '../../core/routed-batch';
import type { Engine } from '../../coordinator/engine';
import { loadEngine } from '../../coordinator/load-engine';
import { GREEDY } from '../../coordinator/sampler';
import { observeEngine } from '../../coordinator/telemetry';
import { RoutingCollector } from '../../coordinator/telemetry/routing-collector';
import { buildRoutingStats } from '../../coordinator/telemetry/routing-route';

test('a small batch: routes and active fractions per (layer, expert), exact', () => {
  const c = new RoutingCollector({ numLayers: 2, numExperts: 4, intermediateSize: 10 });
  // 3 rows, top-2: row0 -> (2, 0), row1 -> (0, 3), row2 -> (2, 3)
  const experts = Int32Array.from([2, 0, 0, 3, 2, 3]);
  const batch = routedBatchFromSlots({
    layer: 1, nRows: 3, hidden: new Float32Array(3), topK: 2, experts, weights: new Float32Array(6).fill(0.5),
    masks: new Uint8Array(6 * 8), maskRowBytes: 8,
  });
  // groups ascending: expert 0 rows [0, 1], expert 2 rows [0, 2], expert 3 rows [1, 2]
  expect(batch.groups.map((g) => [g.expert, [...g.rows]])).toEqual([[0, [0, 1]], [2, [0, 2]], [3, [1, 2]]]);
  expect([...routeOffsets(batch.groups)]).toEqual([0, 2, 4, 6]);
  const active = Int32Array.from([1, 3, 5, 5, 0, 2]); // per route, group order
  c.record(1, 3, batch.groups, active);
  c.record(1, 3, batch.groups, active);
  const s = c.snapshot({ source: 'profile', model: { name: 'm', top_k: 2, hidden_size: 1 }, now: new Date(0) });
  expect(s.tokens).toBe(0); // layer 0 never ran
  expect(c.layerTokens()).toEqual([0, 6]);
  const pair = (l: number, e: number) => s.pairs.find((p) => p.layer === l && p.expert === e)!;
  expect(pair(1, 0)).toEqual({ layer: 1, expert: 0, routed_tokens: 4, active_fraction: (2 * (1 + 3)) / (4 * 10), calls: 2 });
  expect(pair(1, 1)).toEqual({ layer: 1, expert: 1, routed_tokens: 0, active_fraction: null, calls: 0 });
  expect(pair(1, 2)).toEqual({ layer: 1, expert: 2, routed_tokens: 4, active_fraction: (2 * 10) / 40, calls: 2 });
  expect(pair(1, 3)).toEqual({ layer: 1, expert: 3, routed_tokens: 4, active_fraction: (2 * 2) / 40, calls: 2 });
  expect(s.pairs).toHaveLength(8);
  expect(s.model).toEqual({ name: 'm', layers: 2, experts: 4, top_k: 2, hidden_size: 1, intermediate_size: 10 });
  // The object is a valid routing.json.
  expect(parseRoutingStats(formatRoutingStats(s), 'mem').pairs).toEqual(s.pairs);
  // Routes per call: 4 routes in 2 calls; never routed: null.
  expect(routesPerCall(s)[1]).toEqual([2, null, 2, 2]);
  c.reset();
  expect(c.snapshot({ source: 'serve', model: { name: 'm', top_k: 2, hidden_size: 1 } }).pairs.every((p) => p.routed_tokens === 0)).toBe(true);
});

test('calls: optional (a file without them parses, routes per call unknown); inconsistent counts are one clear line', () => {
  const file = (pair: Record<string, unknown>) => JSON.stringify({
    format: 'turbosparse-routing', version: 1, source: 'serve', created: 'x',
    model: { name: 'm', layers: 1, experts: 2, top_k: 1, hidden_size: 4, intermediate_size: 8 }, tokens: 6,
    pairs: [{ layer: 0, expert: 0, routed_tokens: 6, active_fraction: 0.5, ...pair }, { layer: 0, expert: 1, routed_tokens: 0, active_fraction: null }],
    nodes: [],
  });
  expect(routesPerCall(parseRoutingStats(file({}), 'old.json'))).toEqual([[null, null]]);
  expect(routesPerCall(parseRoutingStats(file({ calls: 4 }), 'new.json'))).toEqual([[1.5, null]]);
  expect(() => parseRoutingStats(file({ calls: 7 }), 'r.json')).toThrow(/^routing stats r\.json: pairs\.0\.calls 7 with routed_tokens 6: a pair routed to has 1\.\.routed_tokens calls/);
  expect(() => parseRoutingStats(file({ calls: 0 }), 'r.json')).toThrow(/pairs\.0\.calls 0 with routed_tokens 6/);
  expect(() => parseRoutingStats(file({ calls: -1 }), 'r.json')).toThrow(/pairs\.0\.calls/);
});

describe('inside the engine', () => {
  let dir: string;
  let engine: Engine;
  beforeAll(async () => {
    dir = fs.mkdtempSync(path.join(os.tmpdir(), 'routing-collector-'));
    await makeDemoModel(dir, { layers: 2, hidden: 32, intermediate: 64, heads: 2, kvHeads: 1, experts: 4, topK: 2, vocab: 300, predictorRank: 8, shards: 1, seed: 7 });
    engine = await loadEngine({ modelDir: dir, device: 'cpu', threads: 1, log: () => undefined });
  }, 30_000);
  afterAll(async () => {
    await engine?.close();
    fs.rmSync(dir, { recursive: true, force: true });
  });

  test('counts equal the layers\' own records, one batch and two overlapped lanes; tokens x top_k routes per layer', async () => {
    const obs = observeEngine(engine, { registry: new Registry(), modelName: 'tiny' });
    const cfg = engine.config;
    const want = new Float64Array(cfg.numLayers * cfg.numExperts);
    const neurons = new Float64Array(cfg.numLayers * cfg.numExperts);
    // Steps in which a pair had routes: its calls are that (one batch) to twice that (two lanes).
    const stepsWith = new Float64Array(cfg.numLayers * cfg.numExperts);
    let rows = 0;
    for (const overlap of ['off', 'on'] as const) {
      engine.overlap = overlap;
      const seqs = [[1, 5, 9, 20, 33, 7], [1, 40, 41], [1, 100, 101, 102, 103, 104, 105]].map((ids) =>
        engine.newSequence(ids, { sampling: GREEDY, maxTokens: 4, stopIds: [] }));
      while (seqs.some((s) => !s.finished)) {
        const r = await engine.step(seqs.filter((s) => !s.finished), { prefillChunk: 4, record: true });
        rows += r.rows;
        r.layers!.forEach((rec, L) => {
          rec.experts.forEach((e, slot) => {
            want[L * cfg.numExperts + e]++;
            neurons[L * cfg.numExperts + e] += rec.active[slot];
          });
          for (const e of new Set(rec.experts)) stepsWith[L * cfg.numExperts + e]++;
        });
      }
      for (const s of seqs) engine.release(s);
    }
    const s = buildRoutingStats(obs, 'profile');
    expect(s.tokens).toBe(rows);
    expect(rows).toBeGreaterThan(20);
    for (const p of s.pairs) {
      const k = p.layer * cfg.numExperts + p.expert;
      expect(p.routed_tokens).toBe(want[k]);
      if (want[k] > 0) expect(p.active_fraction).toBeCloseTo(neurons[k] / (want[k] * cfg.intermediateSize), 12);
      else expect(p.active_fraction).toBeNull();
      expect(p.calls).toBeGreaterThanOrEqual(stepsWith[k]);
      expect(p.calls).toBeLessThanOrEqual(Math.min(2 * stepsWith[k], want[k]));
    }
    // Some pair carried several routes in one call (prefill chunks of 4 rows, top-2 of 4 experts).
    expect(s.pairs.some((p) => p.routed_tokens > p.calls!)).toBe(true);
    for (let L = 0; L < cfg.numLayers; L++) {
      const sum = s.pairs.filter((p) => p.layer === L).reduce((a, p) => a + p.routed_tokens, 0);
      expect(sum).toBe(rows * cfg.topK);
    }
    // Some neurons were computed, and not every one of them (the predictors are sparse).
    const fractions = s.pairs.map((p) => p.active_fraction).filter((f): f is number => f !== null);
    expect(Math.max(...fractions)).toBeGreaterThan(0);
    expect(Math.max(...fractions)).toBeLessThan(1);
    // In-process experts: one node, "local", with the calls of every layer of every step.
    expect(s.nodes.map((n) => [n.node, n.address])).toEqual([['local', 'local']]);
    expect(s.nodes[0].calls).toBeGreaterThan(0);
    expect(s.nodes[0].p50_ms).not.toBeNull();
  }, 30_000);
});
