// Routing statistics of a running engine: per (layer, expert) the (token, expert)
// routes and the neurons computed over them, counted from every layer's RoutedBatch
// and ExpertOutput (ForwardHooks.onExperts), so it works for any expert backend.
// Counts are exact and cumulative since start (placement wants the whole workload,
// not a window); per-node latency comes from ExpertStats' node summaries.
//
// The per-layer cost is a loop over the groups and the `active` array into flat
// Float64Arrays: no maps, no allocation (it runs for every layer of every step).
import type { ExpertOutput } from '../../core/expert-backend';
import type { ExpertGroup } from '../../core/routed-batch';
import { ROUTING_FORMAT, type RoutingModel, type RoutingNodeStats, type RoutingStats } from '../../core/placement/routing-stats';
import type { NodeSummary } from './expert-stats';

export interface RoutingCollectorDims {
  numLayers: number;
  numExperts: number;
  intermediateSize: number;
}

export class RoutingCollector {
  /** [layer * experts + expert]: (token, expert) routes. Float64: exact integers far past 2^32. */
  private readonly routed: Float64Array;
  /** [layer * experts + expert]: neurons computed over those routes. */
  private readonly neurons: Float64Array;
  /** [layer * experts + expert]: layer calls (micro-batches) with >= 1 route to the pair: routes per call. */
  private readonly calls: Float64Array;
  /** [layer]: token rows through the layer's router. */
  private readonly rows: Float64Array;

  constructor(readonly dims: RoutingCollectorDims) {
    const n = dims.numLayers * dims.numExperts;
    this.routed = new Float64Array(n);
    this.neurons = new Float64Array(n);
    this.calls = new Float64Array(n);
    this.rows = new Float64Array(dims.numLayers);
  }

  /**
   * One layer of one (micro-)batch: its groups and the backend's `active` (neurons
   * computed per route, in group order). A failed layer is never recorded.
   */
  record(layer: number, nRows: number, groups: readonly ExpertGroup[], active: ExpertOutput['active']): void {
    const E = this.dims.numExperts;
    if (layer < 0 || layer >= this.dims.numLayers) return;
    this.rows[layer] += nRows;
    const base = layer * E;
    let j = 0;
    for (let g = 0; g < groups.length; g++) {
      const { expert, rows } = groups[g];
      const k = rows.length;
      let sum = 0;
      for (let i = 0; i < k; i++) sum += active[j + i] ?? 0;
      j += k;
      if (expert < 0 || expert >= E) continue;
      this.routed[base + expert] += k;
      this.neurons[base + expert] += sum;
      if (k > 0) this.calls[base + expert] += 1;
    }
  }

  /** Token rows through the first layer's router (every layer sees the same rows). */
  get tokens(): number {
    return this.dims.numLayers > 0 ? this.rows[0] : 0;
  }

  /** Token rows per layer (equal unless a step failed part-way through). */
  layerTokens(): number[] {
    return Array.from(this.rows);
  }

  reset(): void {
    this.routed.fill(0);
    this.neurons.fill(0);
    this.calls.fill(0);
    this.rows.fill(0);
  }

  /**
   * The routing.json object. `nodes`: ExpertStats' node summaries (recent-window
   * latency; calls and tokens since start), `addresses` maps a node's name to its address.
   */
  snapshot(opts: {
    source: RoutingStats['source'];
    model: Omit<RoutingModel, 'layers' | 'experts' | 'intermediate_size'>;
    nodes?: readonly NodeSummary[];
    addresses?: ReadonlyMap<string, string>;
    now?: Date;
  }): RoutingStats {
    const { numLayers: L, numExperts: E, intermediateSize: I } = this.dims;
    const pairs: RoutingStats['pairs'] = [];
    for (let l = 0; l < L; l++) {
      for (let e = 0; e < E; e++) {
        const r = this.routed[l * E + e];
        pairs.push({ layer: l, expert: e, routed_tokens: r, active_fraction: r > 0 ? Math.min(1, this.neurons[l * E + e] / (r * I)) : null,
          calls: this.calls[l * E + e] });
      }
    }
    const nodes: RoutingNodeStats[] = (opts.nodes ?? []).map((n) => ({
      node: n.node,
      address: opts.addresses?.get(n.node) ?? n.node,
      calls: n.calls,
      tokens: n.tokens,
      p50_ms: n.p50_ms,
      p99_ms: n.p99_ms,
      mean_ms: n.mean_ms,
    }));
    return {
      format: ROUTING_FORMAT,
      version: 1,
      source: opts.source,
      created: (opts.now ?? new Date()).toISOString(),
      model: { name: opts.model.name, layers: L, experts: E, top_k: opts.model.top_k, hidden_size: opts.model.hidden_size, intermediate_size: I },
      tokens: this.tokens,
      pairs,
      nodes,
    };
  }
}
