// Placement: which node holds which (layer, expert) pairs, from the measured
// routing (how hot each pair is, how many of its neurons run) and the nodes'
// memory and speed. Used by `shard-map --nodes-file`, `rebalance` and `plan`.
//
// The cost model, per token routed through a layer:
//   a pair's load   = callsPerToken x union(r) x its stored bytes, r = routes per call
//                     (routing.json's routed_tokens / calls), union(r) = 1 - (1 - activeFraction)^r:
//                     the weight bytes of the neurons any of one call's r rows needs, read once per
//                     call (the rows of a call share them in cache: bench/route-cost.ts measured a call's
//                     time proportional to that union, 1 route 0.70 ms, 16 routes 3.4 ms, not 11);
//                     without `calls` in the file (or costModel 'routes'): topK x routedShare x
//                     activeFraction x bytes, every route paying its own active bytes (r = 1);
//   a node's time   = its pairs' loads / its bytes per second (a replicated pair's
//                     load is split over its copies in proportion to their speed),
//                     plus REMOTE_CALL_MS when it is a remote node with work in that layer;
//   a layer's time  = its slowest node (every node of a layer runs in parallel).
// The placement minimises the sum over layers of the slowest node.
import type { InfoResponse__Output } from '../wire/expert-proto';
import { UserError } from '../errors';
import { type ExpertPair, pairKey } from '../expert-spec';
import type { PairWithBytes, ShardMap } from '../shard-map';
import { LOCAL_ADDRESS, type NodeDescription } from './node-descriptions';
import { activeFractions, routedShares, routesPerCall, type RoutingStats } from './routing-stats';

export interface PlacementInput {
  model: { numLayers: number; numExperts: number; hiddenSize: number; intermediateSize: number; topK: number };
  /** Each (layer, expert) with its stored weight bytes (core/shard-map.ts). */
  pairs: PairWithBytes[];
  /** Absent: every expert equally hot, active fraction DEFAULT_ACTIVE_FRACTION. */
  routing?: RoutingStats;
  /** In output order; may include one node with address LOCAL_ADDRESS. */
  nodes: NodeDescription[];
  /** Minimum copies of every pair, each on a different node (default 1). */
  replicas?: number;
  /**
   * 'calls' (default): a pair costs per call the union of its routes' neurons, from routing.json's
   * `calls`; 'routes': every route its own active bytes (the model before `calls`; bench comparisons).
   */
  costModel?: 'calls' | 'routes';
}

/** Per token routed through the layer. */
export interface LayerPrediction { layer: number; slowestMs: number; meanMs: number }

export interface PlacementResult {
  /** Nodes in input order; a node that ends up holding nothing is left out (a shard map lists no empty node). */
  map: ShardMap;
  /** Expert bytes each input node holds, in input order. */
  nodeBytes: number[];
  layers: LayerPrediction[];
}

/** Without routing stats: the fraction of an expert's neurons the predictors mark active (TurboSparse's ~15%). */
export const DEFAULT_ACTIVE_FRACTION = 0.15;

/**
 * What one call to a remote node adds to a layer, in ms: a round trip on 1 GbE (2 x ~100 us) plus
 * encode/decode. The coordinator's own (local) experts skip it, so a layer held all locally saves it.
 */
export const REMOTE_CALL_MS = 0.3;

const GiB = 2 ** 30;
/** 21.00 GiB, 336.0 MiB, 240.0 KiB (also the CLI's, through cli/shard-map.ts). */
export function formatBytes(n: number): string {
  if (n >= GiB) return `${(n / GiB).toFixed(2)} GiB`;
  if (n >= 2 ** 20) return `${(n / 2 ** 20).toFixed(1)} MiB`;
  return `${(n / 1024).toFixed(1)} KiB`;
}

/** The problem in flat arrays: p.load[l][e] in bytes read per token through layer l. */
interface Problem {
  layers: number;
  experts: number;
  replicas: number;
  speed: number[];
  mem: number[];
  local: boolean[];
  bytes: number[][];
  load: number[][];
}

/** holders[l][e]: the nodes holding (l, e), ascending; used[i]: bytes on node i. */
interface State {
  holders: number[][][];
  used: number[];
}

/** Node times of one layer (ms); holds[i]: node i holds some pair of the layer. */
function layerTimes(p: Problem, holders: number[][], l: number): { times: number[]; holds: boolean[] } {
  const n = p.speed.length;
  const work = new Array<number>(n).fill(0);
  const holds = new Array<boolean>(n).fill(false);
  for (let e = 0; e < p.experts; e++) {
    const h = holders[e];
    if (h.length === 0) continue;
    let total = 0;
    for (const i of h) total += p.speed[i];
    for (const i of h) {
      work[i] += (p.load[l][e] * p.speed[i]) / total;
      holds[i] = true;
    }
  }
  const times = work.map((w, i) => (holds[i] ? (w / p.speed[i]) * 1000 + (!p.local[i] && w > 0 ? REMOTE_CALL_MS : 0) : 0));
  return { times, holds };
}

/** The layer's slowest node time and the sum of squares (a tie-break that prefers evener layers). */
function layerScore(p: Problem, holders: number[][], l: number): { max: number; sq: number } {
  const { times } = layerTimes(p, holders, l);
  let max = 0;
  let sq = 0;
  for (const t of times) {
    if (t > max) max = t;
    sq += t * t;
  }
  return { max, sq };
}

function slowestNode(times: number[]): number {
  let k = 0;
  for (let i = 1; i < times.length; i++) if (times[i] > times[k]) k = i;
  return k;
}

/** a better than b by more than float noise. */
function better(a: { max: number; sq: number }, b: { max: number; sq: number }): boolean {
  const eps = 1e-9 * Math.max(1, b.max);
  if (a.max < b.max - eps) return true;
  if (a.max > b.max + eps) return false;
  return a.sq < b.sq - 1e-9 * Math.max(1, b.sq);
}

function addSorted(list: number[], i: number): void {
  list.push(i);
  list.sort((a, b) => a - b);
}

function removeFrom(list: number[], i: number): void {
  list.splice(list.indexOf(i), 1);
}

/** The fraction of an expert's neurons one call with `routes` rows touches, each row's mask `fraction` of them at random. */
export function callUnion(fraction: number, routes: number): number {
  return 1 - Math.pow(1 - fraction, routes);
}

function buildProblem(input: PlacementInput): Problem {
  const { model, nodes } = input;
  const replicas = input.replicas ?? 1;
  const L = model.numLayers;
  const E = model.numExperts;
  if (nodes.length === 0) throw new UserError('placement: at least one node is needed (--nodes-file lists none)');
  if (!Number.isInteger(replicas) || replicas < 1) throw new UserError(`--replicas ${replicas}: must be a whole number >= 1`);
  if (replicas > nodes.length) {
    throw new UserError(`--replicas ${replicas} needs at least ${replicas} nodes (replicas live on different nodes), got ${nodes.length}`);
  }
  const seen = new Set<string>();
  nodes.forEach((n) => {
    if (seen.has(n.address)) throw new UserError(`placement: node address ${n.address} appears twice (list each node once)`);
    seen.add(n.address);
    if (!(n.bytesPerS > 0)) throw new UserError(`placement: node ${n.name} (${n.address}) has no speed (bytesPerS ${n.bytesPerS}); give it gbps > 0`);
    if (!(n.memoryBytes > 0)) throw new UserError(`placement: node ${n.name} (${n.address}) has no memory for experts; give it memory_gib > 0`);
  });
  if (nodes.filter((n) => n.address === LOCAL_ADDRESS).length > 1) {
    throw new UserError(`placement: only one node may be the coordinator (address "${LOCAL_ADDRESS}")`);
  }
  const bytes = Array.from({ length: L }, () => new Array<number>(E).fill(Number.NaN));
  for (const pr of input.pairs) {
    if (pr.layer >= L || pr.expert >= E || pr.layer < 0 || pr.expert < 0) {
      throw new UserError(`placement: pair layer ${pr.layer} expert ${pr.expert} is outside the model (${L} layers x ${E} experts)`);
    }
    if (!Number.isNaN(bytes[pr.layer][pr.expert])) throw new UserError(`placement: pair layer ${pr.layer} expert ${pr.expert} is listed twice`);
    bytes[pr.layer][pr.expert] = pr.bytes;
  }
  for (let l = 0; l < L; l++) {
    for (let e = 0; e < E; e++) {
      if (Number.isNaN(bytes[l][e])) throw new UserError(`placement: the model's pair layer ${l} expert ${e} has no size (every pair must be listed)`);
    }
  }
  let shares: number[][];
  let fractions: number[][];
  const r = input.routing;
  if (r) {
    const m = r.model;
    if (m.layers !== L || m.experts !== E || m.top_k !== model.topK || m.hidden_size !== model.hiddenSize ||
      m.intermediate_size !== model.intermediateSize) {
      throw new UserError(`--routing: the stats describe another model (${m.layers} layers x ${m.experts} experts, top-${m.top_k}, ` +
        `hidden ${m.hidden_size}, intermediate ${m.intermediate_size}; this one: ${L} x ${E}, top-${model.topK}, hidden ` +
        `${model.hiddenSize}, intermediate ${model.intermediateSize}): collect them on this model`);
    }
    shares = routedShares(r);
    fractions = activeFractions(r, DEFAULT_ACTIVE_FRACTION);
  } else {
    shares = Array.from({ length: L }, () => new Array<number>(E).fill(1 / E));
    fractions = Array.from({ length: L }, () => new Array<number>(E).fill(DEFAULT_ACTIVE_FRACTION));
  }
  const perCall = r && input.costModel !== 'routes' ? routesPerCall(r) : null;
  const load = bytes.map((row, l) => row.map((b, e) => {
    const routes = model.topK * shares[l][e]; // per token through the layer
    const k = perCall?.[l][e] ?? null;
    // r routes per call: routes / r calls, each reading the union of r masks (independent rows).
    return k !== null && k > 0 ? (routes / k) * callUnion(fractions[l][e], k) * b : routes * fractions[l][e] * b;
  }));
  return {
    layers: L, experts: E, replicas,
    speed: nodes.map((n) => n.bytesPerS),
    mem: nodes.map((n) => n.memoryBytes),
    local: nodes.map((n) => n.address === LOCAL_ADDRESS),
    bytes, load,
  };
}

/** One clear error when the copies cannot fit in the nodes' memory at all. */
/** The experts do not fit the nodes' memory (`plan` then shows the byte-balanced map and says so). */
export class PlacementDoesNotFitError extends UserError {}

function checkFits(p: Problem, nodes: NodeDescription[]): void {
  let need = 0;
  let largest = 0;
  for (const row of p.bytes) for (const b of row) { need += b * p.replicas; largest = Math.max(largest, b); }
  const have = p.mem.reduce((a, b) => a + b, 0);
  const copies = p.replicas > 1 ? ` (${p.replicas} copies of every pair)` : '';
  if (need > have) {
    throw new PlacementDoesNotFitError(`placement: the experts need ${formatBytes(need)}${copies} but the nodes hold ${formatBytes(have)}: ` +
      `${formatBytes(need - have)} missing; add a node or raise memory_gib in --nodes-file${p.replicas > 1 ? ' (or lower --replicas)' : ''}`);
  }
  const roomy = p.mem.filter((m) => m >= largest).length;
  if (roomy < p.replicas) {
    const biggest = Math.max(...nodes.map((n) => n.memoryBytes));
    throw new PlacementDoesNotFitError(`placement: one (layer, expert) pair is ${formatBytes(largest)} but ${roomy === 0
      ? `the largest node holds ${formatBytes(biggest)}: ${formatBytes(largest - biggest)} missing`
      : `only ${roomy} node(s) have room for it and --replicas is ${p.replicas}`}; raise memory_gib in --nodes-file`);
  }
}

/** The layers by decreasing total load (the hottest get first pick of fast nodes' memory). */
function layerOrder(p: Problem): number[] {
  const total = p.load.map((row) => row.reduce((a, b) => a + b, 0));
  return Array.from({ length: p.layers }, (_, l) => l).sort((a, b) => total[b] - total[a] || a - b);
}

/** The layer's experts hottest first (ties: larger, then lower index). */
function expertOrder(p: Problem, l: number): number[] {
  return Array.from({ length: p.experts }, (_, e) => e)
    .sort((a, b) => p.load[l][b] - p.load[l][a] || p.bytes[l][b] - p.bytes[l][a] || a - b);
}

/**
 * LPT for one layer: each copy of each pair, hottest first, onto the node that keeps the layer's
 * slowest node (then the pair's own holders) lowest. `room(i, b)` says whether node i may take b more
 * bytes in this layer; `fallback` is tried when no node passes `room`. Returns the pair whose copy fits nowhere, if one does not.
 */
function placeLayer(p: Problem, s: State, l: number, room: (i: number, b: number) => boolean,
  fallback?: (i: number, b: number) => boolean): { layer: number; expert: number } | undefined {
  const n = p.speed.length;
  for (const e of expertOrder(p, l)) {
    const b = p.bytes[l][e];
    const h = s.holders[l][e];
    while (h.length < p.replicas) {
      let best = -1;
      let bestKey: [number, number] = [Infinity, Infinity];
      for (const test of fallback ? [room, fallback] : [room]) {
        for (let i = 0; i < n; i++) {
          if (h.includes(i) || !test(i, b)) continue;
          addSorted(h, i);
          const { times } = layerTimes(p, s.holders[l], l);
          removeFrom(h, i);
          const max = Math.max(...times);
          let own = 0;
          for (const j of [...h, i]) own = Math.max(own, times[j]);
          const eps = 1e-12 * Math.max(1, max);
          if (best < 0 || max < bestKey[0] - eps || (max <= bestKey[0] + eps && own < bestKey[1] - eps)) {
            best = i;
            bestKey = [max, own];
          }
        }
        if (best >= 0) break;
      }
      if (best < 0) return { layer: l, expert: e };
      addSorted(h, best);
      s.used[best] += b;
    }
  }
  return undefined;
}

/**
 * The coordinator's own node takes whole layers where that beats spreading them: a layer all on the
 * coordinator needs no network call at all. Layers by gain per byte, while its memory lasts.
 */
function placeLocalLayers(p: Problem, s: State): Set<number> {
  const done = new Set<number>();
  const localIndex = p.local.indexOf(true);
  if (localIndex < 0 || p.replicas > 1) return done; // with replicas every pair also has remote copies: the network is needed anyway
  const candidates: { l: number; gain: number; bytes: number }[] = [];
  for (let l = 0; l < p.layers; l++) {
    const layerBytes = p.bytes[l].reduce((a, b) => a + b, 0);
    const alone = (p.load[l].reduce((a, b) => a + b, 0) / p.speed[localIndex]) * 1000;
    // Spread over the remote nodes, memory aside: what the layer costs when it does need the network.
    const trial: State = { holders: s.holders.map((layer) => layer.map(() => [])), used: s.used.map(() => 0) };
    placeLayer(p, trial, l, (i) => !p.local[i]);
    const spread = layerScore(p, trial.holders[l], l).max;
    if (spread > alone) candidates.push({ l, gain: spread - alone, bytes: layerBytes });
  }
  candidates.sort((a, b) => b.gain / b.bytes - a.gain / a.bytes || a.l - b.l);
  for (const c of candidates) {
    if (s.used[localIndex] + c.bytes > p.mem[localIndex]) continue;
    for (let e = 0; e < p.experts; e++) s.holders[c.l][e] = [localIndex];
    s.used[localIndex] += c.bytes;
    done.add(c.l);
  }
  return done;
}

/** Every pair's required copies, layer by layer, each node's memory shared out over the layers still to place. */
function placeAll(p: Problem, s: State, skip: Set<number>): void {
  const order = layerOrder(p).filter((l) => !skip.has(l));
  let remaining = 0;
  for (const l of order) for (const b of p.bytes[l]) remaining += b * p.replicas;
  for (const l of order) {
    const layerBytes = p.bytes[l].reduce((a, b) => a + b, 0) * p.replicas;
    // Look-ahead: a node may give this layer its fair share of its memory left, so later layers
    // still find room on fast nodes; past that only when no node has quota left.
    const quota = p.mem.map((m, i) => (remaining > 0 ? ((m - s.used[i]) * layerBytes) / remaining : Infinity));
    const before = [...s.used];
    const withMemory = (i: number, b: number) => s.used[i] + b <= p.mem[i];
    const withQuota = (i: number, b: number) => withMemory(i, b) && s.used[i] - before[i] + b <= quota[i] * (1 + 1e-9);
    const stuck = placeLayer(p, s, l, withQuota, withMemory);
    if (stuck) {
      const b = p.bytes[stuck.layer][stuck.expert];
      const most = Math.max(...p.mem.map((m, i) => m - s.used[i]));
      throw new UserError(`placement: no node has room left for layer ${stuck.layer} expert ${stuck.expert} (${formatBytes(b)}; ` +
        `the most any node has left is ${formatBytes(most)}): about ${formatBytes(b - most)} missing on one node (pairs do not split); ` +
        'add a node or raise memory_gib in --nodes-file');
    }
    remaining -= layerBytes;
  }
}

/**
 * Local search in one layer: move a copy off the slowest node, or swap it with another node's pair,
 * while that lowers the layer's slowest node (then evens the layer).
 */
function improveLayer(p: Problem, s: State, l: number): void {
  const n = p.speed.length;
  const H = s.holders[l];
  for (let iter = 0; iter < 8 * p.experts * n; iter++) {
    const cur = layerScore(p, H, l);
    const k = slowestNode(layerTimes(p, H, l).times);
    let best: { score: { max: number; sq: number }; apply: () => void } | undefined;
    const consider = (apply: () => void, undo: () => void) => {
      apply();
      const score = layerScore(p, H, l);
      undo();
      if (better(score, best ? best.score : cur)) best = { score, apply };
    };
    for (let e = 0; e < p.experts; e++) {
      if (!H[e].includes(k)) continue;
      const be = p.bytes[l][e];
      for (let j = 0; j < n; j++) {
        if (j === k || H[e].includes(j)) continue;
        if (s.used[j] + be <= p.mem[j]) {
          const move = () => { removeFrom(H[e], k); addSorted(H[e], j); };
          const back = () => { removeFrom(H[e], j); addSorted(H[e], k); };
          consider(move, back);
        }
        for (let f = 0; f < p.experts; f++) {
          if (f === e || !H[f].includes(j) || H[f].includes(k)) continue;
          const bf = p.bytes[l][f];
          if (s.used[k] - be + bf > p.mem[k] || s.used[j] - bf + be > p.mem[j]) continue;
          const swap = () => { removeFrom(H[e], k); addSorted(H[e], j); removeFrom(H[f], j); addSorted(H[f], k); };
          const back = () => { removeFrom(H[e], j); addSorted(H[e], k); removeFrom(H[f], k); addSorted(H[f], j); };
          consider(swap, back);
        }
      }
    }
    if (!best) return;
    const before = H.map((h) => [...h]);
    best.apply();
    // Bytes follow the copies that changed node.
    for (let e = 0; e < p.experts; e++) {
      for (const i of before[e]) if (!H[e].includes(i)) s.used[i] -= p.bytes[l][e];
      for (const i of H[e]) if (!before[e].includes(i)) s.used[i] += p.bytes[l][e];
    }
  }
}

/**
 * Redundant experts (as EPLB): with memory left, copy the hottest pairs of a layer's slowest node onto
 * nodes with room and at least the holders' speed, best gain per byte over all layers first, while that
 * lowers a layer's slowest node.
 */
function replicateHot(p: Problem, s: State): void {
  const n = p.speed.length;
  type Candidate = { gain: number; perByte: number; e: number; j: number };
  const bestIn = (l: number): Candidate | undefined => {
    const H = s.holders[l];
    const cur = layerScore(p, H, l);
    const k = slowestNode(layerTimes(p, H, l).times);
    let best: Candidate | undefined;
    for (let e = 0; e < p.experts; e++) {
      if (!H[e].includes(k) || p.load[l][e] <= 0) continue;
      const b = p.bytes[l][e];
      // The coordinator sends a replicated pair's group to the copy with the fewest routes planned so far,
      // whatever its speed (remote-experts.ts), so an extra copy goes only where it is not slower than its holders.
      const fastestHolder = Math.max(...H[e].map((i) => p.speed[i]));
      for (let j = 0; j < n; j++) {
        if (H[e].includes(j) || s.used[j] + b > p.mem[j] || p.speed[j] < 0.95 * fastestHolder) continue;
        addSorted(H[e], j);
        const score = layerScore(p, H, l);
        removeFrom(H[e], j);
        // Worth a copy's memory only for a real gain (0.1% of the layer), not float noise.
        const gain = cur.max - score.max;
        if (gain <= 1e-3 * cur.max) continue;
        if (!best || gain / b > best.perByte * (1 + 1e-12)) best = { gain, perByte: gain / b, e, j };
      }
    }
    return best;
  };
  const cache: (Candidate | undefined)[] = Array.from({ length: p.layers }, (_, l) => bestIn(l));
  for (let iter = 0; iter < p.layers * p.experts * n; iter++) {
    let pick = -1;
    for (let l = 0; l < p.layers; l++) {
      const c = cache[l];
      if (c && (pick < 0 || c.perByte > cache[pick]!.perByte * (1 + 1e-12))) pick = l;
    }
    if (pick < 0) return;
    const { e, j } = cache[pick]!;
    const b = p.bytes[pick][e];
    addSorted(s.holders[pick][e], j);
    s.used[j] += b;
    // Only this layer changed, and node j's room: other layers' picks that no longer fit look again.
    cache[pick] = bestIn(pick);
    for (let l = 0; l < p.layers; l++) {
      const c = cache[l];
      if (l !== pick && c && c.j === j && s.used[j] + p.bytes[l][c.e] > p.mem[j]) cache[l] = bestIn(l);
    }
  }
}

function predictFrom(p: Problem, s: State): LayerPrediction[] {
  return Array.from({ length: p.layers }, (_, l) => {
    const { times, holds } = layerTimes(p, s.holders[l], l);
    let slowest = 0;
    let sum = 0;
    let count = 0;
    times.forEach((t, i) => {
      if (!holds[i]) return;
      slowest = Math.max(slowest, t);
      sum += t;
      count++;
    });
    return { layer: l, slowestMs: slowest, meanMs: count ? sum / count : 0 };
  });
}

/**
 * The placement for the nodes: whole layers on the coordinator where that pays, per-layer LPT within a
 * fair share of each node's memory, local search, then redundant copies of hot pairs with the memory
 * left. Deterministic: the same input gives the same map.
 */
export function placeExperts(input: PlacementInput): PlacementResult {
  const p = buildProblem(input);
  checkFits(p, input.nodes);
  const s: State = {
    holders: Array.from({ length: p.layers }, () => Array.from({ length: p.experts }, () => [] as number[])),
    used: p.mem.map(() => 0),
  };
  const localLayers = placeLocalLayers(p, s);
  placeAll(p, s, localLayers);
  for (let l = 0; l < p.layers; l++) improveLayer(p, s, l);
  replicateHot(p, s);
  for (let l = 0; l < p.layers; l++) improveLayer(p, s, l);
  const held = input.nodes.map(() => [] as ExpertPair[]);
  for (let l = 0; l < p.layers; l++) {
    for (let e = 0; e < p.experts; e++) for (const i of s.holders[l][e]) held[i].push({ layer: l, expert: e });
  }
  const map: ShardMap = {
    nodes: input.nodes.flatMap((node, i) => (held[i].length
      ? [{ address: node.address, name: node.name, experts: held[i] }]
      : [])),
  };
  return { map, nodeBytes: [...s.used], layers: predictFrom(p, s) };
}

/** The predicted per-layer times of any map of this model over these nodes (e.g. the byte-balanced one). */
export function predictLayers(map: ShardMap, input: PlacementInput): LayerPrediction[] {
  const { p, s } = mapState(map, input);
  return predictFrom(p, s);
}

/**
 * Each input node's predicted time summed over the layers, ms per token (0 for a node without pairs):
 * against measured per-node busy time it says whose speed or cost the model gets wrong (bench/placement.ts).
 */
export function predictNodes(map: ShardMap, input: PlacementInput): number[] {
  const { p, s } = mapState(map, input);
  const total = new Array<number>(p.speed.length).fill(0);
  for (let l = 0; l < p.layers; l++) layerTimes(p, s.holders[l], l).times.forEach((t, i) => { total[i] += t; });
  return total;
}

function mapState(map: ShardMap, input: PlacementInput): { p: Problem; s: State } {
  const p = buildProblem({ ...input, replicas: 1 });
  const index = new Map(input.nodes.map((n, i) => [n.address, i]));
  const s: State = {
    holders: Array.from({ length: p.layers }, () => Array.from({ length: p.experts }, () => [] as number[])),
    used: p.mem.map(() => 0),
  };
  const seen = new Set<string>();
  for (const node of map.nodes) {
    const i = index.get(node.address);
    if (i === undefined) {
      throw new UserError(`placement: the shard map's node ${node.address} is not among the described nodes ` +
        `(${input.nodes.map((n) => n.address).join(', ')}); describe every node of the map`);
    }
    for (const pr of node.experts) {
      if (pr.layer >= p.layers || pr.expert >= p.experts) {
        throw new UserError(`placement: the shard map's node ${node.address} names layer ${pr.layer} expert ${pr.expert}, outside the model`);
      }
      const key = `${i}/${pairKey(pr.layer, pr.expert)}`;
      if (seen.has(key)) continue;
      seen.add(key);
      addSorted(s.holders[pr.layer][pr.expert], i);
    }
  }
  return { p, s };
}

/**
 * Node descriptions from the nodes' own Info: node_name (else the address), memory_budget_bytes
 * (0 = unknown: no limit, said through `warn`), ffn_bytes_per_s (0 = unknown: the median of the
 * others, else 1 GB/s, said through `warn`), device.
 */
export function describeNodesFromInfo(nodes: { address: string; info: InfoResponse__Output }[],
  warn: (line: string) => void = () => {}): NodeDescription[] {
  const known = nodes.map((n) => Number(n.info.ffnBytesPerS) || 0).filter((v) => v > 0).sort((a, b) => a - b);
  const median = known.length ? known[Math.floor((known.length - 1) / 2)] : 1e9;
  return nodes.map(({ address, info }) => {
    const name = info.nodeName || address;
    let memoryBytes = Number(info.memoryBudgetBytes) || 0;
    if (memoryBytes <= 0) {
      warn(`node ${name} (${address}) reports no memory budget (start it with one): placing as if it had no limit`);
      memoryBytes = Number.POSITIVE_INFINITY;
    }
    let bytesPerS = Number(info.ffnBytesPerS) || 0;
    if (bytesPerS <= 0) {
      warn(`node ${name} (${address}) reports no measured FFN speed: assuming ${(median / 1e9).toFixed(3)} GB/s` +
        `${known.length ? ' (the median of the others)' : ''}`);
      bytesPerS = median;
    }
    return { name, address, memoryBytes, device: info.device || 'cpu', bytesPerS };
  });
}
