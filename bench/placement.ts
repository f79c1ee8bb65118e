// Routing-aware placement vs the byte-balanced shard map on a mixed-speed cluster (issue 16's
// acceptance bench). A skewed demo model (`make-demo-model --router-skew S`: some experts of each
// layer hot, a different one per layer), N expert-node processes of which some run F times slower
// (`expert-node --slowdown F`), then:
//   1. profile: requests through the engine with experts in process, routes and active neurons
//      counted by the same RoutingCollector `serve` and `turbosparse profile` use -> routing.json;
//   2. the nodes' own Info (measured sparse-FFN speed) -> node descriptions; memory per node =
//      --memory-factor x the model's expert bytes / N (room for some redundant copies);
//   3. the byte-balanced map (what cluster:N uses) and placeExperts' map, with their predictions;
//   4. both maps over the SAME nodes (every node holds every pair; a map only picks whom to call),
//      interleaved for --rounds rounds in one run: per layer the measured slowest and mean node
//      time per (step, layer) (call latency as the coordinator sees it, and the nodes' compute_us),
//      and tokens/s.
// Prints a table and one JSON line.
//   node -r test/cluster/ts-register-cached.js bench/placement.ts [--layers 8] [--nodes 3]
//        [--slowdown 1,1,3] [--router-skew 1.5] [--concurrency 16] [--tokens 16] [--rounds 3]
//        [--profile-requests 32] [--memory-factor 1.25] [--speeds nominal|info|calibrated] [--link loopback|1gbe|...]
//        [--model DIR] [--routing-out FILE] [--cost-model calls|routes] [--baseline balanced|routes] [--json]
// --cost-model: the placed map's cost model (placement.ts: calls = a pair pays per call the union of
// its routes' neurons, the default; routes = every route its active bytes, the model before calls).
// --baseline routes: the map compared against is the routes-model placement instead of the byte-balanced
// one (labelled "routes" in the output), to see the two cost models against each other in one run.
// --speeds nominal (default): node i's speed = the median over nodes of (measured speed x slowdown),
// divided by its --slowdown: the nodes' self-benchmarks run at start, all at once, ~150 ms each, and
// on a small shared machine they measured 0.06 to 3.4 GB/s for identical nodes. --speeds info: as
// measured (what `rebalance` uses on real machines). --speeds calibrated: nominal, then one untimed round
// with the placed map corrects each node's speed by its measured busy time over the model's, and re-places.
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import type { ExpertBackend, ExpertBatch, ExpertNodeHealth, ExpertOutput, StepContext } from '../core/expert-backend';
import { UserError } from '../core/errors';
import { Registry } from '../core/metrics';
import type { NodeDescription } from '../core/placement/node-descriptions';
import { describeNodesFromInfo, type LayerPrediction, placeExperts, type PlacementInput, predictLayers, predictNodes } from '../core/placement/placement';
import { formatRoutingStats, type RoutingStats } from '../core/placement/routing-stats';
import { balancedShardMap, expertBytes, type ShardMap, uniformPairs } from '../core/shard-map';
import { TextTokenizer } from '../core/tokenizer';
import type { Engine } from '../coordinator/engine';
import { ExpertClient } from '../coordinator/expert-client';
import { loadEngine } from '../coordinator/load-engine';
import { quantile } from '../coordinator/call-latency';
import { LocalCluster } from '../coordinator/local-cluster';
import { LocalExperts } from '../coordinator/local-experts';
import { RemoteExperts } from '../coordinator/remote-experts';
import { GREEDY } from '../coordinator/sampler';
import { Scheduler } from '../coordinator/scheduler';
import { RoutingCollector } from '../coordinator/telemetry/routing-collector';
import { benchModelDir } from './bench-shapes';
import { LinkProcess, describeLink, parseLink } from './link-emulator';
import { arg } from './models';

const log = (line: string) => process.stderr.write(`${line}\n`);

/** The engine's expert backend, swapped between phases; counts routing while `collector` is set. */
class SwappableExperts implements ExpertBackend {
  readonly name = 'bench';
  current: ExpertBackend | null = null;
  collector: RoutingCollector | null = null;
  stats(): ExpertNodeHealth[] {
    return this.current?.stats?.() ?? [];
  }
  async runExperts(batch: ExpertBatch, ctx?: StepContext): Promise<ExpertOutput> {
    const out = await this.current!.runExperts(batch, ctx);
    this.collector?.record(batch.layer, batch.nRows, batch.groups, out.active);
    return out;
  }
  async close(): Promise<void> {
    await this.current?.close();
  }
}

/** `c` requests of `tokens` tokens (distinct 8-token prompts from `first`) at once through the scheduler; tokens/s. */
async function generate(engine: Engine, tok: TextTokenizer, c: number, tokens: number, first: number): Promise<number> {
  const scheduler = new Scheduler(engine, tok, { metrics: new Registry(), kvBudgetBytes: 2 ** 40, maxRunning: 1024 });
  const v = engine.config.vocabSize;
  const prompt = (i: number) => [1, 10 + (i % 200), 20 + ((i * 7) % 200), 30 + ((i * 13) % 100), 40, 50, 60, 70].map((id) => id % v);
  try {
    const t0 = performance.now();
    const results = await Promise.all(scheduler.submitAll(Array.from({ length: c }, (_, i) => ({
      promptIds: prompt(first + i), sampling: GREEDY, maxTokens: tokens, stopIds: [],
    }))).map((h) => h.result));
    const seconds = (performance.now() - t0) / 1000;
    return results.reduce((s, r) => s + r.tokenIds.length, 0) / seconds;
  } finally {
    await scheduler.close();
  }
}

/** Per (step, layer) call set: each node's call latency and compute (us). */
class LayerTimes {
  private readonly calls = new Map<string, { layer: number; latency: Map<string, number>; compute: Map<string, number> }>();
  record(key: string, layer: number, node: string, latencyUs: number, computeUs: number): void {
    let c = this.calls.get(key);
    if (!c) this.calls.set(key, (c = { layer, latency: new Map(), compute: new Map() }));
    // A node called twice in one layer (replicas of several groups) is busy for the sum.
    c.latency.set(node, Math.max(c.latency.get(node) ?? 0, latencyUs));
    c.compute.set(node, (c.compute.get(node) ?? 0) + computeUs);
  }
  clear(): void {
    this.calls.clear();
  }
  /**
   * Per layer, each node's compute summed over the whole run, then the slowest and the mean node
   * (ms per step): the load balance the placement aims at, without the per-step noise of which
   * experts a few tokens happened to pick.
   */
  busyPerLayer(layers: number): LayerPrediction[] {
    const busy = Array.from({ length: layers }, () => new Map<string, number>());
    const steps = new Array<number>(layers).fill(0);
    for (const c of this.calls.values()) {
      steps[c.layer]++;
      for (const [node, us] of c.compute) busy[c.layer].set(node, (busy[c.layer].get(node) ?? 0) + us);
    }
    return busy.map((m, l) => {
      const t = [...m.values()].map((us) => us / Math.max(1, steps[l]) / 1000);
      return { layer: l, slowestMs: t.length ? Math.max(...t) : 0, meanMs: t.length ? t.reduce((a, b) => a + b, 0) / t.length : 0 };
    });
  }

  /** Each node's compute over all layers, ms per step (steps = call sets of layer 0). */
  busyPerNode(): Record<string, number> {
    const out: Record<string, number> = {};
    let steps = 0;
    for (const c of this.calls.values()) {
      if (c.layer === 0) steps++;
      for (const [node, us] of c.compute) out[node] = (out[node] ?? 0) + us;
    }
    for (const k of Object.keys(out)) out[k] = out[k] / Math.max(1, steps) / 1000;
    return out;
  }

  /** Per layer: the mean over its (step, layer) call sets of the slowest and of the mean node, ms. */
  perLayer(layers: number, which: 'latency' | 'compute'): LayerPrediction[] {
    const slow = new Array<number>(layers).fill(0);
    const mean = new Array<number>(layers).fill(0);
    const n = new Array<number>(layers).fill(0);
    for (const c of this.calls.values()) {
      const t = [...c[which].values()];
      slow[c.layer] += Math.max(...t);
      mean[c.layer] += t.reduce((a, b) => a + b, 0) / t.length;
      n[c.layer]++;
    }
    return slow.map((s, l) => ({ layer: l, slowestMs: n[l] ? s / n[l] / 1000 : 0, meanMs: n[l] ? mean[l] / n[l] / 1000 : 0 }));
  }
}

interface MapRun {
  map: 'balanced' | 'placed';
  tokens_per_s: number[];
  latency: LayerPrediction[];
  compute: LayerPrediction[];
  /** busyPerLayer: each node's compute over the run. */
  busy: LayerPrediction[];
  /** Node name -> its compute over all layers, ms per step. */
  busy_per_node: Record<string, number>;
}

const sum = (ls: LayerPrediction[], k: 'slowestMs' | 'meanMs') => ls.reduce((s, l) => s + l[k], 0);
const median = (xs: number[]) => quantile(xs, 0.5);

async function main(): Promise<void> {
  const layers = Number(arg('layers', '8'));
  const nodeCount = Number(arg('nodes', '3'));
  const slowdowns = arg('slowdown', '1,1,3').split(',').map(Number);
  const skew = Number(arg('router-skew', '1.5'));
  const conc = Number(arg('concurrency', '16'));
  const tokens = Number(arg('tokens', '16'));
  const rounds = Number(arg('rounds', '3'));
  const profileRequests = Number(arg('profile-requests', '32'));
  const memoryFactor = Number(arg('memory-factor', '1.25'));
  const speeds = arg('speeds', 'nominal');
  const link = parseLink(arg('link', 'loopback'));
  const json = process.argv.includes('--json');
  const costModel = arg('cost-model', 'calls');
  const baseline = arg('baseline', 'balanced');
  if (costModel !== 'calls' && costModel !== 'routes') throw new UserError(`--cost-model ${costModel}: calls or routes`);
  if (baseline !== 'balanced' && baseline !== 'routes') throw new UserError(`--baseline ${baseline}: balanced or routes`);
  for (const [name, v] of [['layers', layers], ['nodes', nodeCount], ['concurrency', conc], ['tokens', tokens], ['rounds', rounds],
    ['profile-requests', profileRequests]] as const) {
    if (!Number.isInteger(v) || v < 1) throw new UserError(`--${name} must be a positive integer, got ${v}`);
  }
  if (slowdowns.length !== nodeCount || slowdowns.some((f) => !(f >= 1))) {
    throw new UserError(`--slowdown: give ${nodeCount} factors >= 1 (one per node), e.g. ${['1', '1', '3', '1'].slice(0, nodeCount).join(',')}`);
  }
  if (!(skew >= 0)) throw new UserError(`--router-skew ${skew}: a number >= 0`);
  if (!(memoryFactor >= 1)) throw new UserError(`--memory-factor ${memoryFactor}: at least 1 (the nodes must hold the model)`);
  if (speeds !== 'info' && speeds !== 'nominal' && speeds !== 'calibrated') throw new UserError(`--speeds ${speeds}: info, nominal or calibrated`);
  const dir = arg('model', '') || await benchModelDir('demo', layers, log, { routerSkew: skew });
  const nodeCommand = __filename.endsWith('.ts')
    ? [process.execPath, '-r', path.resolve(__dirname, '..', 'test', 'cluster', 'ts-register-cached.js'), path.resolve(__dirname, '..', 'cli', 'expert-node.ts')]
    : undefined;

  const backend = new SwappableExperts();
  const engine = await loadEngine({ modelDir: dir, device: 'cpu', log, experts: { kind: 'file', path: 'bench' }, remoteExperts: async () => backend });
  engine.overlap = 'off'; // one call per node per layer: clean per-layer times
  const tok = TextTokenizer.fromModel(engine.folder);
  const c = engine.config;
  const dims = { hiddenSize: c.hiddenSize, intermediateSize: c.intermediateSize, numLayers: c.numLayers, numExperts: c.numExperts };
  const pairs = uniformPairs(dims, expertBytes(c.hiddenSize, c.intermediateSize, 'bf16'));
  let proc: LinkProcess | null = null;
  let cluster: LocalCluster | null = null;
  const remotes: RemoteExperts[] = [];
  try {
    // ---- 1. routing stats, experts in process ----
    log(`profile: ${profileRequests} requests of ${tokens} tokens, experts in process`);
    backend.current = await LocalExperts.load(engine.folder, engine.backend, { store: 'auto', mode: 'sparse' });
    backend.collector = new RoutingCollector(dims);
    for (let i = 0; i < profileRequests; i += conc) await generate(engine, tok, Math.min(conc, profileRequests - i), tokens, 5000 + i);
    const routing: RoutingStats = backend.collector.snapshot({
      source: 'profile', model: { name: path.basename(dir), top_k: c.topK, hidden_size: c.hiddenSize },
    });
    backend.collector = null;
    await backend.current.close();
    backend.current = null;
    const routingOut = arg('routing-out', '') || path.join(os.tmpdir(), `turbosparse-bench-placement-routing-${process.pid}.json`);
    fs.writeFileSync(routingOut, formatRoutingStats(routing));
    log(`profile: ${routing.tokens} tokens; routing stats in ${routingOut}`);

    // ---- 2. the nodes: every one holds every pair; a map picks whom to call ----
    log(`cluster: ${nodeCount} nodes, slowdown ${slowdowns.join(',')}`);
    cluster = await LocalCluster.start({
      modelDir: dir, dims, nodes: nodeCount, device: 'cpu', nodeCommand, log, weights: 'bf16',
      perNode: slowdowns.map((f) => ({ slowdown: f, args: ['--experts', '*'] })),
    });
    if (link) proc = await LinkProcess.start(link);
    const addresses = await Promise.all(cluster.nodes.map((n) => (proc ? proc.proxy(n.address) : n.address)));
    const infos = await Promise.all(cluster.nodes.map(async (n, i) => {
      const client = new ExpertClient(n.address);
      try {
        return { address: addresses[i], info: await client.info(10_000) };
      } finally {
        client.close();
      }
    }));
    const total = pairs.reduce((s, p) => s + p.bytes, 0);
    // Memory comes from --memory-factor below, so the nodes' missing budgets are no news here.
    const speedWarnings = (line: string) => { if (!line.includes('no memory budget')) log(line); };
    let nodes: NodeDescription[] = describeNodesFromInfo(infos, speedWarnings).map((n) => ({ ...n, memoryBytes: (memoryFactor * total) / nodeCount }));
    if (speeds === 'nominal' || speeds === 'calibrated') {
      const base = median(nodes.map((n, i) => n.bytesPerS * slowdowns[i]));
      nodes = nodes.map((n, i) => ({ ...n, bytesPerS: base / slowdowns[i] }));
    }
    for (const n of nodes) log(`node ${n.name} ${n.address}: ${(n.bytesPerS / 1e9).toFixed(3)} GB/s, ${(n.memoryBytes / 2 ** 30).toFixed(2)} GiB for experts`);

    // ---- 3. both maps, predicted ----
    let input: PlacementInput = {
      model: { numLayers: c.numLayers, numExperts: c.numExperts, hiddenSize: c.hiddenSize, intermediateSize: c.intermediateSize, topK: c.topK },
      pairs, routing, nodes,
    };
    // Internally the baseline keeps the key "balanced"; printed as `base`.
    const maps: Record<'balanced' | 'placed', ShardMap> = {
      balanced: baseline === 'routes' ? placeExperts({ ...input, costModel: 'routes' }).map : balancedShardMap(pairs, addresses),
      placed: placeExperts({ ...input, costModel }).map,
    };
    // Predictions with the chosen model (the same for both maps, so they compare).
    if (speeds === 'calibrated') {
      // One untimed round with the placed map: each node's measured busy time / the model's time for it
      // says how much slower (or faster) it really is than its nominal speed; re-place with those speeds.
      const probe = new LayerTimes();
      const r = await RemoteExperts.connect({
        shardMap: maps.placed, model: dims, hedge: false, name: 'calibrate',
        observers: [{ onCallEnd: (call, res) => {
          if (res.ok) probe.record(`${call.stepId}:${call.layer}:${call.microBatch ?? ''}`, call.layer, call.node, res.latencyUs, res.computeUs + res.queueUs);
        } }],
      });
      try {
        backend.current = r;
        await generate(engine, tok, conc, 2, 8000);
        probe.clear();
        await generate(engine, tok, conc, tokens, 8500);
      } finally {
        backend.current = null;
        await r.close();
      }
      const busy = probe.busyPerNode();
      const pred = predictNodes(maps.placed, { ...input, costModel });
      const slow = nodes.map((n, i) => (pred[i] > 0 && busy[n.address] > 0 ? busy[n.address] / pred[i] : Number.NaN));
      const known = slow.filter((x) => !Number.isNaN(x));
      const ref = known.reduce((a, b) => a + b, 0) / Math.max(1, known.length);
      nodes = nodes.map((n, i) => ({ ...n, bytesPerS: Number.isNaN(slow[i]) ? n.bytesPerS : (n.bytesPerS * ref) / slow[i] }));
      for (const n of nodes) log(`calibrated: node ${n.name} ${(n.bytesPerS / 1e9).toFixed(3)} GB/s`);
      input = { ...input, nodes };
      maps.placed = placeExperts({ ...input, costModel }).map;
    }
    const predicted = { balanced: predictLayers(maps.balanced, { ...input, costModel }), placed: predictLayers(maps.placed, { ...input, costModel }) };

    // ---- 4. both maps, interleaved ----
    const times = { balanced: new LayerTimes(), placed: new LayerTimes() };
    const runs: Record<'balanced' | 'placed', MapRun> = {
      balanced: { map: 'balanced', tokens_per_s: [], latency: [], compute: [], busy: [], busy_per_node: {} },
      placed: { map: 'placed', tokens_per_s: [], latency: [], compute: [], busy: [], busy_per_node: {} },
    };
    const remote: Record<string, RemoteExperts> = {};
    for (const which of ['balanced', 'placed'] as const) {
      remote[which] = await RemoteExperts.connect({
        shardMap: maps[which], model: dims, hedge: false, name: which,
        observers: [{ onCallEnd: (call, r) => {
          if (!r.ok) return;
          const key = `${call.stepId}:${call.layer}:${call.microBatch ?? ''}`;
          times[which].record(key, call.layer, call.node, r.latencyUs, r.computeUs + r.queueUs);
        } }],
      });
      remotes.push(remote[which]);
    }
    // A warm-up request through each map (connections, node caches), untimed.
    for (const which of ['balanced', 'placed'] as const) {
      backend.current = remote[which];
      await generate(engine, tok, conc, 2, 9000);
      times[which].clear();
    }
    // The timed rounds' own routing: predictions with it separate the cost model's error from drift.
    backend.collector = new RoutingCollector(dims);
    for (let r = 0; r < rounds; r++) {
      const order = r % 2 === 0 ? (['balanced', 'placed'] as const) : (['placed', 'balanced'] as const);
      for (const which of order) {
        backend.current = remote[which];
        log(`round ${r + 1}/${rounds}: ${which}`);
        runs[which].tokens_per_s.push(await generate(engine, tok, conc, tokens, 100 * r));
      }
    }
    backend.current = null;
    const timedRouting = backend.collector.snapshot({ source: 'profile', model: { name: path.basename(dir), top_k: c.topK, hidden_size: c.hiddenSize } });
    backend.collector = null;
    const hindsight = { balanced: predictLayers(maps.balanced, { ...input, costModel, routing: timedRouting }), placed: predictLayers(maps.placed, { ...input, costModel, routing: timedRouting }) };
    const shareOf = (st: RoutingStats) => st.pairs.map((p) => p.routed_tokens / Math.max(1, st.tokens * c.topK));
    const timedShares = shareOf(timedRouting);
    const drift = shareOf(routing).reduce((a, x, i) => a + Math.abs(x - timedShares[i]), 0) / c.numLayers / 2;
    for (const which of ['balanced', 'placed'] as const) {
      runs[which].latency = times[which].perLayer(c.numLayers, 'latency');
      runs[which].compute = times[which].perLayer(c.numLayers, 'compute');
      runs[which].busy = times[which].busyPerLayer(c.numLayers);
      const name = new Map(nodes.map((n) => [n.address, n.name]));
      runs[which].busy_per_node = Object.fromEntries(Object.entries(times[which].busyPerNode()).map(([a, ms]) => [name.get(a) ?? a, ms]));
    }

    const tps = (w: 'balanced' | 'placed') => median(runs[w].tokens_per_s);
    const ratio = (ls: LayerPrediction[]) => sum(ls, 'slowestMs') / Math.max(1e-12, sum(ls, 'meanMs'));
    const machine = `${os.cpus().length} CPUs (${os.cpus()[0]?.model ?? 'unknown'}), ${(os.totalmem() / 2 ** 30).toFixed(0)} GiB`;
    if (!json) {
      // The baseline's label: the byte-balanced map, or the routes-model placement (--baseline routes).
      const say = (line: string) => console.log(baseline === 'routes' ? line.replaceAll('balanced', 'routes') : line);
      say(`cost model of the placed map and of the predictions: ${costModel}; baseline: ${baseline === 'routes' ? 'placement with the routes model' : 'byte-balanced map'}`);
      say(`placement bench ${new Date().toISOString()}: ${c.numLayers} layers hidden ${c.hiddenSize} x intermediate ${c.intermediateSize}, ` +
        `${c.numExperts} experts top-${c.topK}, router skew ${skew}; ${nodeCount} nodes, slowdown ${slowdowns.join(',')}; ` +
        `${describeLink(link)}; concurrency ${conc} x ${tokens} tokens, ${rounds} interleaved rounds; ${machine}`);
      const hottest = routing.pairs.reduce((m, p) => Math.max(m, p.routed_tokens), 0) / Math.max(1, routing.tokens * c.topK / c.numExperts);
      say(`routing: ${routing.tokens} profiled tokens; hottest pair ${hottest.toFixed(2)}x the mean share`);
      say('slowest / mean node, ms: per (step, layer) call latency and node compute; node compute summed over the run (busy, per step); predicted per token');
      say('layer  balanced latency  placed latency  balanced compute  placed compute     balanced busy       placed busy  predicted balanced  predicted placed');
      const f = (l: LayerPrediction) => `${l.slowestMs.toFixed(2)} / ${l.meanMs.toFixed(2)}`;
      for (let l = 0; l < c.numLayers; l++) {
        say(`${String(l).padEnd(5)}  ${f(runs.balanced.latency[l]).padStart(16)}  ${f(runs.placed.latency[l]).padStart(14)}  ` +
          `${f(runs.balanced.compute[l]).padStart(16)}  ${f(runs.placed.compute[l]).padStart(14)}  ${f(runs.balanced.busy[l]).padStart(16)}  ${f(runs.placed.busy[l]).padStart(16)}  ` +
          `${f(predicted.balanced[l]).padStart(18)}  ${f(predicted.placed[l]).padStart(16)}`);
      }
      const t = (ls: LayerPrediction[]) => `${sum(ls, 'slowestMs').toFixed(2)} / ${sum(ls, 'meanMs').toFixed(2)}`;
      say(`${'sum'.padEnd(5)}  ${t(runs.balanced.latency).padStart(16)}  ${t(runs.placed.latency).padStart(14)}  ${t(runs.balanced.compute).padStart(16)}  ` +
        `${t(runs.placed.compute).padStart(14)}  ${t(runs.balanced.busy).padStart(16)}  ${t(runs.placed.busy).padStart(16)}  ${t(predicted.balanced).padStart(18)}  ${t(predicted.placed).padStart(16)}`);
      say(`slowest / mean (latency): balanced ${ratio(runs.balanced.latency).toFixed(2)}, placed ${ratio(runs.placed.latency).toFixed(2)}; ` +
        `(compute): balanced ${ratio(runs.balanced.compute).toFixed(2)}, placed ${ratio(runs.placed.compute).toFixed(2)}; ` +
        `(busy): balanced ${ratio(runs.balanced.busy).toFixed(2)}, placed ${ratio(runs.placed.busy).toFixed(2)}; ` +
        `(predicted): balanced ${ratio(predicted.balanced).toFixed(2)}, placed ${ratio(predicted.placed).toFixed(2)}`);
      say(`tokens/s (median of ${rounds}): balanced ${tps('balanced').toFixed(2)} [${runs.balanced.tokens_per_s.map((x) => x.toFixed(2)).join(', ')}], ` +
        `placed ${tps('placed').toFixed(2)} [${runs.placed.tokens_per_s.map((x) => x.toFixed(2)).join(', ')}]: ${(tps('placed') / tps('balanced')).toFixed(2)}x`);
      say(`routing drift: profiled vs timed shares differ by ${(100 * drift).toFixed(1)}% of a layer's routes (total variation, mean over layers); ` +
        `predicted with the timed routing, slowest / mean: balanced ${ratio(hindsight.balanced).toFixed(2)}, placed ${ratio(hindsight.placed).toFixed(2)}`);
      const perNode = (w: 'balanced' | 'placed') => Object.entries(runs[w].busy_per_node).sort().map(([k, v]) => `${k} ${v.toFixed(1)}`).join(', ');
      say(`busy per node, ms per step over all layers: balanced ${perNode('balanced')}; placed ${perNode('placed')}`);
      // Each node's share of the summed busy time, measured vs predicted: who the model under- or overcharges.
      const shares = (w: 'balanced' | 'placed') => {
        const pred = predictNodes(maps[w], { ...input, costModel });
        const predSum = pred.reduce((a, b) => a + b, 0);
        const meas = nodes.map((n) => runs[w].busy_per_node[n.name] ?? 0);
        const measSum = meas.reduce((a, b) => a + b, 0);
        return nodes.map((n, i) => `${n.name} ${(100 * meas[i] / Math.max(1e-12, measSum)).toFixed(0)}% / ${(100 * pred[i] / Math.max(1e-12, predSum)).toFixed(0)}%`).join(', ');
      };
      say(`busy share per node, measured / predicted: balanced ${shares('balanced')}; placed ${shares('placed')}`);
      say(`placed map: ${maps.placed.nodes.map((n) => `${n.name ?? n.address} ${n.experts.length} pairs`).join(', ')}`);
    }
    console.log(JSON.stringify({
      bench: 'placement', date: new Date().toISOString(), machine, layers: c.numLayers, hidden: c.hiddenSize, intermediate: c.intermediateSize,
      experts: c.numExperts, top_k: c.topK, router_skew: skew, nodes: nodes.map((n, i) => ({ name: n.name, slowdown: slowdowns[i], gbps: n.bytesPerS / 1e9 })),
      speeds, cost_model: costModel, baseline, link: link ? { delay_us: link.delayUs, mbit: link.mbit } : 'loopback', concurrency: conc, tokens, rounds, profiled_tokens: routing.tokens,
      balanced: { ...runs.balanced, predicted: predicted.balanced, slowest_over_mean: ratio(runs.balanced.latency), busy_slowest_over_mean: ratio(runs.balanced.busy) },
      placed: { ...runs.placed, predicted: predicted.placed, slowest_over_mean: ratio(runs.placed.latency), busy_slowest_over_mean: ratio(runs.placed.busy),
        pairs_per_node: maps.placed.nodes.map((n) => n.experts.length) },
      speedup: tps('placed') / tps('balanced'), routing_drift: drift,
      hindsight_slowest_over_mean: { balanced: ratio(hindsight.balanced), placed: ratio(hindsight.placed) },
    }));
  } finally {
    for (const r of remotes) await r.close();
    await engine.close();
    await cluster?.stop();
    await proc?.close();
  }
}

main().catch((e) => {
  process.stderr.write(`${e instanceof UserError ? e.message : e instanceof Error ? e.stack : e}\n`);
  process.exitCode = 1;
});
