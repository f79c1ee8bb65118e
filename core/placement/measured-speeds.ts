// Node speeds measured from served traffic, for the rebalancer. A node's self-benchmark
// (Info's ffn_bytes_per_s) is often wrong under real traffic (shared cores, contention,
// batch shapes), and placement from wrong speeds stays unbalanced (bench/RESULTS.md:
// busy slowest/mean 1.30-1.35x with Info speeds, 1.17-1.18x with calibrated ones).
// Effective speed = the bytes the cost model says the node read under the current map
// and routing / the compute seconds the node reported for those calls.
import type { ShardMap } from '../shard-map';
import type { NodeDescription } from './node-descriptions';
import { type PlacementInput, predictNodes } from './placement';

/** A node's served traffic since the current map took effect (RemoteExperts.stats() differences). */
export interface NodeTraffic {
  address: string;
  calls: number;
  /** (token, expert) routes sent to it in successful calls. */
  routes: number;
  /** Compute time it reported for those calls, summed (us). */
  computeUs: number;
}

/** One node's speed as the plan shows it (bytes per second). */
export interface NodeSpeed {
  name: string;
  address: string;
  info_bytes_per_s: number;
  /** null: too little traffic measured (fewer than minCalls calls or minComputeS seconds). */
  measured_bytes_per_s: number | null;
  /**
   * What placement used: measured when known (divided by the measured nodes' mean measured/Info ratio
   * when other nodes keep Info's speed, so both are on one scale), else Info's.
   */
  used_bytes_per_s: number;
  calls: number;
  compute_s: number;
}

/** Below these a node's measurement is noise (a few calls, mostly fixed overhead): Info's speed is kept. */
export const MIN_CALIBRATION_CALLS = 200;
export const MIN_CALIBRATION_COMPUTE_S = 0.5;

/**
 * The input's nodes with measured speeds where a node served enough traffic under `current`.
 * Tokens through the model = all routes / (top-k x layers); a node's predicted bytes per token
 * come from predictNodes at its Info speed and at twice every speed (the difference is the
 * bytes / speed term alone: the per-call overhead cancels, and replica shares depend only on
 * speed ratios).
 */
export function measuredSpeeds(current: ShardMap, input: PlacementInput, traffic: NodeTraffic[],
  opts: { minCalls?: number; minComputeS?: number } = {}): { nodes: NodeDescription[]; speeds: NodeSpeed[] } {
  const minCalls = opts.minCalls ?? MIN_CALIBRATION_CALLS;
  const minComputeS = opts.minComputeS ?? MIN_CALIBRATION_COMPUTE_S;
  const byAddress = new Map(traffic.map((t) => [t.address, t]));
  const totalRoutes = traffic.reduce((s, t) => s + t.routes, 0);
  const tokens = totalRoutes / (input.model.topK * input.model.numLayers);
  const held = new Set(current.nodes.filter((n) => n.experts.length > 0).map((n) => n.address));
  // Only nodes of the current map can be predicted; others (none today) keep Info's speed.
  const mapped = input.nodes.filter((n) => held.has(n.address));
  const mapInput = { ...input, nodes: mapped };
  const at1 = mapped.length ? predictNodes(current, mapInput) : [];
  const at2 = mapped.length ? predictNodes(current, { ...mapInput, nodes: mapped.map((n) => ({ ...n, bytesPerS: 2 * n.bytesPerS })) }) : [];
  const bytesPerToken = new Map(mapped.map((n, i) => [n.address, ((at1[i] - at2[i]) / 1000) * 2 * n.bytesPerS]));
  const measured = input.nodes.map((n) => {
    const t = byAddress.get(n.address);
    const computeS = t ? t.computeUs / 1e6 : 0;
    const bytes = (bytesPerToken.get(n.address) ?? 0) * tokens;
    const enough = t !== undefined && t.calls >= minCalls && computeS >= minComputeS && bytes > 0;
    const speed = enough ? bytes / computeS : null;
    return { t, computeS, speed: speed !== null && Number.isFinite(speed) && speed > 0 ? speed : null };
  });
  // Measured speeds carry each call's fixed cost, so they sit below self-benchmarks: when some nodes
  // keep Info's speed, the measured ones keep Info's scale and only their ratios to each other change.
  const ratios = measured.flatMap((m, i) => (m.speed === null ? [] : [m.speed / input.nodes[i].bytesPerS]));
  const scale = measured.some((m) => m.speed === null) && ratios.length > 0 ? ratios.reduce((a, b) => a + b, 0) / ratios.length : 1;
  const speeds: NodeSpeed[] = input.nodes.map((n, i) => {
    const { t, computeS, speed } = measured[i];
    return {
      name: n.name, address: n.address, info_bytes_per_s: n.bytesPerS, measured_bytes_per_s: speed,
      used_bytes_per_s: speed === null ? n.bytesPerS : speed / scale, calls: t?.calls ?? 0, compute_s: computeS,
    };
  });
  return { nodes: input.nodes.map((n, i) => ({ ...n, bytesPerS: speeds[i].used_bytes_per_s })), speeds };
}
