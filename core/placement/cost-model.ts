// The planner's cost model: predicted decode step time and tokens/s of a model
// on a set of nodes (a shard map) over a link, at a number of concurrent
// sequences, in a decode-only steady state (every running sequence adds one row
// per step; no prefill). One step is
//   coordinator compute for c rows (attention, router, predictors, lm_head)
//   + per layer: the slowest node call = per-call overhead + compute of its routed rows,
//     + the link: round trip + every call's bytes out and back through the coordinator's one NIC.
// tokens/s = c / step time. Expected values come from sampling the routing (seeded, so a plan
// is reproducible): which experts c tokens pick decides the rows per node and the slowest node.
//
// The constants (COST_CONSTANTS) were measured in this project's benchmarks; each says where.
// They describe this project's software (the per-call overhead of gRPC + our codec, the
// coordinator's per-layer glue) on the 2-vCPU build VM, so on bigger machines they err on the slow side.
import { UserError } from '../errors';
import { mulberry32 as rng } from '../mulberry32';
import { replicaTable, type ShardMap } from '../shard-map';
import type { WireEncoding } from '../wire/rows';
import { rowWireBytes } from '../wire/rows';
import { maskWireBytes } from '../wire/masks';
import type { LinkSpec } from './link-presets';
import { LOCAL_ADDRESS, type NodeDescription } from './node-descriptions';
import { callUnion } from './placement';
import { type RoutingStats, activeFractions, routedShares } from './routing-stats';

export interface CostConstants {
  /**
   * Software cost of one remote node call apart from its bytes (request build + encode, gRPC/HTTP2 both
   * ways, decode, combine), µs. bench/RESULTS.md "A lean call path": cluster:2 demo f32 loopback, per-layer
   * overhead p50 at concurrency 1 = 1561 µs (median of 3 rounds at 9fa0c35) with ~12.7 KB per call, and
   * 3699 µs at concurrency 16 with ~153 KB per call (bench/cluster.ts call_bytes): the line through both
   * points is 1368 µs + 15.2 ns per byte.
   */
  callOverheadUs: number;
  /** Per byte of a call (out + back): copies, framing, JS on both sides, ns. From the same two points. */
  callOverheadNsPerByte: number;
  /**
   * A remote node's own time per call beyond its kernel (decode, queue hop, the native call's thread handoff,
   * encode), µs, plus per route. Measured as the node-reported queue + compute of bench/cluster.ts cluster:2 on a
   * 16-layer model of hidden 64 (kernel time negligible; RESULTS.md "Capacity planner"): 560 µs per call at
   * concurrency 1 (~1.4 routes per call); 1681 µs at 16 (~16 routes per call): 70 µs per further route.
   */
  nodeCallUs: number;
  nodeRouteUs: number;
  /** The same for the coordinator's own experts (in process, no queue): 180 µs per layer, same model, `local`. */
  localCallUs: number;
  /**
   * Coordinator glue per layer that does not scale with weight bytes (norms, rope, attention over a short
   * context, router top-k, grouping, JS between native calls), µs. Measured: bench/cluster.ts `local` on a
   * 16-layer model of hidden 64 (weights negligible), step time minus expert time, per layer (see RESULTS.md
   * "Capacity planner").
   */
  coordinatorLayerUs: number;
  /** Coordinator per step (scheduler, sampling, embedding), µs. Same measurement, the part not per layer. */
  coordinatorStepUs: number;
  /**
   * Coordinator software cost per row (sequence) per step beyond weight reads (sampling, the scheduler's
   * per-sequence work, embedding), µs, and per row per layer (attention over the cache, rope, norms, the
   * router's top-k, grouping, JS per row), µs. Measured by bench/coordinator-cost.ts (zero-cost experts, the
   * scheduler driving decode steps at 1, 4, 16 rows, 4 and 16 layers, contexts 8 and 64; step time minus the
   * weight reads above, least squares; RESULTS.md "Coordinator cost per row"). Its quietest run (load 4.0,
   * 16:57, experts waiting 2 ms per layer) fitted 164 µs per step, 0 per row, 986 µs + 63 µs per row per layer:
   * the per-layer and per-step glue above agree with it within its noise, so they stay; 63 µs per row per layer
   * is the missing term (0 per row per step). Noisier runs fitted 158-471 µs per row per layer: on a shared VM
   * calibrate with `plan --calibration FILE`, which sets all four coordinator terms from the bench.
   */
  coordinatorRowUs: number;
  coordinatorRowLayerUs: number;
  /**
   * Cost of each extra row of a dense matmul over the first, as a fraction of the first row's weight
   * read, on a CPU: the kernels are compute-bound per row (AVX2 bf16 -> f32 FMA). Measured with
   * core/native matmul 4096 x 4096 bf16, 1 and 16 rows: 10.7 ms and 57.5 ms (1 thread) -> 0.29; the
   * predictor (r=256, I=3584): 0.92 and 4.10 ms -> 0.23. 0.27 taken.
   */
  cpuExtraRowFraction: number;
  /** The same on a GPU: weight reads dominate up to batches far above 16 (assumed, not measured here). */
  cudaExtraRowFraction: number;
  /**
   * Fixed latency of one sparse-FFN kernel call on a GPU, µs: bench/RESULTS.md "Streaming sparse FFN",
   * H200, one call without PDL overlap = 27.95 µs.
   */
  cudaCallUs: number;
  /** Neurons the predictors mark active when no routing.json says (the placement default). */
  defaultActiveFraction: number;
  /** Routing samples per layer for the expected slowest node. */
  samples: number;
}

export const COST_CONSTANTS: CostConstants = {
  callOverheadUs: 1368,
  callOverheadNsPerByte: 15.2,
  nodeCallUs: 560,
  nodeRouteUs: 70,
  localCallUs: 180,
  coordinatorLayerUs: 900,
  coordinatorStepUs: 500,
  coordinatorRowUs: 0,
  coordinatorRowLayerUs: 63,
  cpuExtraRowFraction: 0.27,
  cudaExtraRowFraction: 0.01,
  cudaCallUs: 28,
  defaultActiveFraction: 0.15,
  samples: 256,
};

/** The model's weights as the planner sees them: bytes each part reads. */
export interface ModelCost {
  numLayers: number;
  numExperts: number;
  topK: number;
  hiddenSize: number;
  intermediateSize: number;
  /** Per layer: attention (q, k, v, o), router and norms, as stored. */
  layerDenseBytes: number[];
  /** [layer][expert]: the predictor's fc1 + fc2, as stored. */
  predictorBytes: number[][];
  /** [layer][expert]: the expert's w1 + w3 + w2, as stored on its node. */
  expertBytes: number[][];
  /** lm_head (the embedding is a row lookup per token: not read whole). */
  lmHeadBytes: number;
  /** K and V of one token in one layer (the KV cache's dtype). */
  kvBytesPerToken: number;
  /** Active fraction when no routing.json says (a demo model's config records its own). */
  activeFraction?: number;
}

export interface CoordinatorSpec {
  /** Bytes of dense weights its kernels read per second (one row). */
  bytesPerS: number;
  device: string;
}

export interface CostInput {
  model: ModelCost;
  map: ShardMap;
  /** Node descriptions by shard-map address (every map node must have one). */
  nodes: NodeDescription[];
  coordinator: CoordinatorSpec;
  /** null: loopback (no link). */
  link: LinkSpec | null;
  wire: WireEncoding;
  routing?: RoutingStats;
  /** Tokens of context each sequence's attention reads per layer (KV cache). */
  contextTokens?: number;
  constants?: Partial<CostConstants>;
}

export interface StepPrediction {
  concurrency: number;
  tokensPerS: number;
  stepMs: number;
  /** Attention, router, predictors, lm_head and the per-layer glue. */
  coordinatorMs: number;
  /** The link: round trips and bytes / bandwidth (0 on loopback or when every expert is local). */
  linkMs: number;
  /** The per-call software cost of remote calls (on the slowest call's path). */
  callOverheadMs: number;
  /** Compute of the slowest node's routed rows, summed over layers. */
  expertMs: number;
  /** Mean bytes of one step out of / into the coordinator's NIC. */
  bytesOutPerStep: number;
  bytesBackPerStep: number;
}


/** k distinct experts drawn in proportion to `share` (the router's top-k, as a distribution). */
function drawExperts(share: number[], k: number, rand: () => number, out: number[]): void {
  out.length = 0;
  let left = share.reduce((a, b) => a + b, 0);
  for (let j = 0; j < k; j++) {
    let x = rand() * left;
    let pick = -1;
    for (let e = 0; e < share.length; e++) {
      if (out.includes(e)) continue;
      pick = e;
      x -= share[e];
      if (x < 0) break;
    }
    out.push(pick);
    left -= share[pick];
  }
}

/** Bytes of a request's fixed fields and of one route's fields besides its mask (ids, weight, length prefixes). */
const REQUEST_FIXED_BYTES = 40;
const ROUTE_FIXED_BYTES = 12;
const RESPONSE_FIXED_BYTES = 24;

/** The predicted step at `concurrency` sequences. */
export function predictStep(input: CostInput, concurrency: number): StepPrediction {
  const k = { ...COST_CONSTANTS, ...input.constants };
  const m = input.model;
  const c = concurrency;
  const byAddress = new Map(input.nodes.map((n) => [n.address, n]));
  const nodes = input.map.nodes.map((n) => {
    const d = byAddress.get(n.address);
    if (!d) throw new Error(`cost model: no description for node ${n.address}`);
    return d;
  });
  const holders = replicaTable(input.map, m);
  const shares = input.routing ? routedShares(input.routing) : null;
  const fractions = input.routing ? activeFractions(input.routing, m.activeFraction ?? k.defaultActiveFraction) : null;
  const coordBeta = input.coordinator.device === 'cuda' ? k.cudaExtraRowFraction : k.cpuExtraRowFraction;
  /** Time to run `bytes` of dense weights over `rows` rows on the coordinator, µs. */
  const coordUs = (bytes: number, rows: number) => (bytes / input.coordinator.bytesPerS) * 1e6 * (1 + coordBeta * Math.max(0, rows - 1));
  const rowBytes = rowWireBytes(input.wire, m.hiddenSize);
  const linkBytesPerUs = input.link ? (input.link.mbit * 1e6) / 8 / 1e6 : Infinity;
  const context = input.contextTokens ?? 0;

  let coordinator = k.coordinatorStepUs + k.coordinatorRowUs * c + coordUs(m.lmHeadBytes, c);
  let link = 0;
  let overhead = 0;
  let expert = 0;
  let bytesOut = 0;
  let bytesBack = 0;
  const picked: number[] = [];
  const nNodes = nodes.length;
  const rows = new Array<number>(m.numExperts);
  const tokenSeen = new Int32Array(nNodes);
  const nodeTokens = new Array<number>(nNodes);
  const nodeRoutes = new Array<number>(nNodes);
  const nodeOut = new Array<number>(nNodes);
  const nodeCompute = new Array<number>(nNodes);
  const expertNode = new Array<number>(m.numExperts);
  for (let layer = 0; layer < m.numLayers; layer++) {
    coordinator += k.coordinatorLayerUs + k.coordinatorRowLayerUs * c + coordUs(m.layerDenseBytes[layer], c) +
      (c * context * m.kvBytesPerToken / input.coordinator.bytesPerS) * 1e6;
    const share = shares ? shares[layer] : new Array<number>(m.numExperts).fill(1);
    const rand = rng(0x9e3779b1 ^ (layer * 7919 + c));
    let sumCoord = 0;
    let sumLink = 0;
    let sumOverhead = 0;
    let sumExpert = 0;
    let sumOut = 0;
    let sumBack = 0;
    for (let s = 0; s < k.samples; s++) {
      rows.fill(0);
      nodeTokens.fill(0);
      nodeRoutes.fill(0);
      nodeOut.fill(0);
      nodeCompute.fill(0);
      tokenSeen.fill(-1);
      // Which experts hold rows this step: each group goes to the holder with the fewest routes so far
      // (a replicated pair spreads its load), chosen once per expert as the coordinator plans whole groups.
      expertNode.fill(-1);
      for (let t = 0; t < c; t++) {
        drawExperts(share, m.topK, rand, picked);
        for (const e of picked) {
          if (expertNode[e] < 0) {
            const hs = holders[layer][e];
            if (hs.length === 0) throw new Error(`cost model: no node holds layer ${layer} expert ${e}`);
            let best = hs[0];
            for (const h of hs) if (nodeRoutes[h] < nodeRoutes[best]) best = h;
            expertNode[e] = best;
          }
          const n = expertNode[e];
          rows[e]++;
          nodeRoutes[n]++;
          // A token whose experts share a node is sent to it once.
          if (tokenSeen[n] !== t) {
            tokenSeen[n] = t;
            nodeTokens[n]++;
          }
        }
      }
      for (let e = 0; e < m.numExperts; e++) {
        if (rows[e] === 0) continue;
        const f = fractions ? fractions[layer][e] : (m.activeFraction ?? k.defaultActiveFraction);
        sumCoord += coordUs(m.predictorBytes[layer][e], rows[e]);
        const n = expertNode[e];
        const node = nodes[n];
        const bytes = m.expertBytes[layer][e];
        // A CPU node walks each row's own active neurons (measured per-row cost); a GPU reads the union of
        // the group's neurons once (memory-bound), plus one kernel call's latency per group.
        nodeCompute[n] += node.device === 'cuda'
          ? callUnion(f, rows[e]) * bytes / node.bytesPerS * 1e6 + k.cudaCallUs
          : rows[e] * f * bytes / node.bytesPerS * 1e6;
        nodeOut[n] += rows[e] * (ROUTE_FIXED_BYTES + maskWireBytes(m.intermediateSize, Math.round(f * m.intermediateSize)).bytes);
      }
      let slowest = 0;
      let slowestOverhead = 0;
      let slowestCompute = 0;
      let out = 0;
      let back = 0;
      for (let n = 0; n < nNodes; n++) {
        if (nodeRoutes[n] === 0) continue;
        const local = nodes[n].address === LOCAL_ADDRESS;
        nodeCompute[n] += local ? k.localCallUs : k.nodeCallUs + k.nodeRouteUs * Math.max(0, nodeRoutes[n] - 1);
        let ov = 0;
        if (!local) {
          const o = REQUEST_FIXED_BYTES + nodeTokens[n] * rowBytes + nodeOut[n];
          const b = RESPONSE_FIXED_BYTES + nodeTokens[n] * rowBytes + nodeRoutes[n] * 2;
          out += o;
          back += b;
          ov = k.callOverheadUs + ((o + b) * k.callOverheadNsPerByte) / 1000;
        }
        if (ov + nodeCompute[n] > slowest) {
          slowest = ov + nodeCompute[n];
          slowestOverhead = ov;
          slowestCompute = nodeCompute[n];
        }
      }
      // The coordinator's one NIC: every call's request leaves through it, every answer comes back through it.
      const wire = out + back > 0 && input.link ? 2 * input.link.delayUs + (out + back) / linkBytesPerUs : 0;
      sumLink += wire;
      sumOverhead += slowestOverhead;
      sumExpert += slowestCompute;
      sumOut += out;
      sumBack += back;
    }
    coordinator += sumCoord / k.samples;
    link += sumLink / k.samples;
    overhead += sumOverhead / k.samples;
    expert += sumExpert / k.samples;
    bytesOut += sumOut / k.samples;
    bytesBack += sumBack / k.samples;
  }
  const stepUs = coordinator + link + overhead + expert;
  return {
    concurrency: c,
    tokensPerS: c / (stepUs / 1e6),
    stepMs: stepUs / 1000,
    coordinatorMs: coordinator / 1000,
    linkMs: link / 1000,
    callOverheadMs: overhead / 1000,
    expertMs: expert / 1000,
    bytesOutPerStep: bytesOut,
    bytesBackPerStep: bytesBack,
  };
}

/** The `kind` of a calibration file (bench/coordinator-cost.ts --out). */
export const CALIBRATION_KIND = 'turbosparse-coordinator-calibration';

/**
 * The coordinator's software costs measured on the user's own machine by bench/coordinator-cost.ts, with the
 * dense GB/s they were fitted against (the residual is step time minus weight reads at that speed, so the two
 * belong together). `plan --calibration FILE` applies it.
 */
export interface Calibration {
  kind: typeof CALIBRATION_KIND;
  measured: string;
  machine: string;
  model: string;
  coordinatorGbps: number;
  constants: Pick<CostConstants, 'coordinatorStepUs' | 'coordinatorRowUs' | 'coordinatorLayerUs' | 'coordinatorRowLayerUs'>;
}

const CALIBRATED_KEYS = ['coordinatorStepUs', 'coordinatorRowUs', 'coordinatorLayerUs', 'coordinatorRowLayerUs'] as const;

/**
 * A calibration file's JSON, checked; `file` names it in errors. A fit may come out slightly negative for a
 * term the machine does not show (noise): that is kept (the sum is what was measured), but the total per row
 * must not be, or the model would predict faster steps for more rows.
 */
export function parseCalibration(raw: unknown, file: string): Calibration {
  const fail = (what: string) => new UserError(`--calibration ${file}: ${what}; write it with bench/coordinator-cost.ts --out ${file}`);
  if (typeof raw !== 'object' || raw === null) throw fail('not a JSON object');
  const o = raw as Record<string, unknown>;
  if (o.kind !== CALIBRATION_KIND) throw fail(`"kind" must be "${CALIBRATION_KIND}"`);
  if (typeof o.coordinatorGbps !== 'number' || !(o.coordinatorGbps > 0)) throw fail('"coordinatorGbps" must be a number > 0');
  const k = o.constants as Record<string, unknown> | undefined;
  if (typeof k !== 'object' || k === null) throw fail('"constants" must be an object');
  for (const key of CALIBRATED_KEYS) {
    if (typeof k[key] !== 'number' || !Number.isFinite(k[key])) throw fail(`"constants.${key}" must be a number (µs)`);
  }
  const c = k as Calibration['constants'];
  if (c.coordinatorRowUs + c.coordinatorRowLayerUs < 0) throw fail('the per-row costs sum below 0 (a noisy fit: rerun the bench)');
  return {
    kind: CALIBRATION_KIND, measured: String(o.measured ?? ''), machine: String(o.machine ?? ''), model: String(o.model ?? ''),
    coordinatorGbps: o.coordinatorGbps, constants: { ...c },
  };
}
