// The coordinator's Prometheus metrics (served at /metrics by the HTTP server).
// Per node: calls, bytes, errors, retries, and call latency, compute time and active-neuron
// ratio histograms; the same histograms per (layer, expert, node) only with
// `--metrics-detail expert` (MetricsDetail below). Tokens per (layer, expert, node) always (one
// series per pair); per step: tokens, batch size, layer time. Queue depth and KV-cache gauges
// come from the scheduler (coordinator/scheduler.ts) and the batch worker, on the same
// registry; process_* and nodejs_* from core/runtime-metrics.ts. Names end in their unit.
import {
  exponentialBuckets,
  linearBuckets,
  metrics as defaultRegistry,
  type CounterChild,
  type HistogramChild,
  type Registry,
} from '../../core/metrics';
import { registerRuntimeMetrics } from '../../core/runtime-metrics';
import type { ExpertCallRecord } from './expert-calls';

/**
 * `--metrics-detail`: which labels the expert-call histograms carry. `node` (the default): per
 * node, a few hundred series whatever the model. `expert`: per (layer, expert, node), about 100
 * series per pair a node holds: 32 layers x 8 experts is ~25k series (~50k with 2 replicas),
 * more than a Prometheus should take from one process without deciding to.
 */
export type MetricsDetail = 'node' | 'expert';
export const METRICS_DETAIL_CHOICES: readonly MetricsDetail[] = ['node', 'expert'];

/** 50 us .. ~13 s in x1.5 steps: loopback calls are ~100 us, a Mixtral-width prefill chunk is seconds. */
export const LATENCY_BUCKETS = exponentialBuckets(50e-6, 1.5, 32);
/** Active-neuron fraction in 2.5% steps up to 50%, then coarse (TurboSparse runs ~10-15%). */
export const FRACTION_BUCKETS = [...linearBuckets(0.025, 0.025, 20), 0.6, 0.7, 0.8, 0.9, 1];

export type CoordinatorMetrics = ReturnType<typeof coordinatorMetrics>;

export function coordinatorMetrics(reg: Registry = defaultRegistry, detail: MetricsDetail = 'node') {
  registerRuntimeMetrics(reg);
  const pairLabels = ['layer', 'expert', 'node'];
  const expertLabels = detail === 'expert' ? pairLabels : ['node'];
  const per = detail === 'expert' ? 'per (layer, expert, node)' : 'per node (per (layer, expert, node) with --metrics-detail expert)';
  return {
    registry: reg,
    detail,
    callSeconds: reg.histogram({
      name: 'turbosparse_expert_call_seconds',
      help: `Round trip of an expert call, ${per}; a call covering several experts counts for each`,
      labelNames: expertLabels,
      buckets: LATENCY_BUCKETS,
    }),
    computeSeconds: reg.histogram({
      name: 'turbosparse_expert_compute_seconds',
      help: `Expert compute time reported by the node, ${per}, shared among a call's experts by active neurons`,
      labelNames: expertLabels,
      buckets: LATENCY_BUCKETS,
    }),
    activeRatio: reg.histogram({
      name: 'turbosparse_expert_active_ratio',
      help: `Neurons computed / neurons of a dense FFN, per expert call slot group, ${per}`,
      labelNames: expertLabels,
      buckets: FRACTION_BUCKETS,
    }),
    expertTokens: reg.counter({
      name: 'turbosparse_expert_tokens_total',
      help: 'Token slots routed to an expert, per (layer, expert, node)',
      labelNames: pairLabels,
    }),
    nodeCallSeconds: reg.histogram({
      name: 'turbosparse_node_call_seconds',
      help: 'Round trip of one message to an expert node (all its experts of one layer)',
      labelNames: ['node'],
      buckets: LATENCY_BUCKETS,
    }),
    nodeTokens: reg.counter({ name: 'turbosparse_node_tokens_total', help: 'Token rows sent to an expert node', labelNames: ['node'] }),
    bytesIn: reg.counter({
      name: 'turbosparse_expert_in_bytes_total',
      help: 'Request bytes sent to an expert node (hidden rows, routes, masks)',
      labelNames: ['node'],
    }),
    bytesOut: reg.counter({
      name: 'turbosparse_expert_out_bytes_total',
      help: 'Reply bytes received from an expert node',
      labelNames: ['node'],
    }),
    errors: reg.counter({
      name: 'turbosparse_expert_errors_total',
      help: 'Failed expert calls, by node and code',
      labelNames: ['node', 'code'],
    }),
    retries: reg.counter({
      name: 'turbosparse_expert_retries_total',
      help: 'Expert calls retried on a replica (failover), by the node that took over',
      labelNames: ['node'],
    }),
    hedges: reg.counter({
      name: 'turbosparse_expert_hedges_total',
      help: 'Expert calls sent to a replica because the first node was late (hedging; the first answer wins), by the replica',
      labelNames: ['node'],
    }),
    stepTokens: reg.counter({
      name: 'turbosparse_step_tokens_total',
      help: 'Token rows through the forward pass, by phase (decode rows = generated tokens)',
      labelNames: ['phase'],
    }),
    batchSequences: reg.gauge({ name: 'turbosparse_batch_sequences', help: 'Sequences in the latest engine step' }),
    batchRows: reg.gauge({ name: 'turbosparse_batch_rows', help: 'Token rows in the latest engine step' }),
    layerSeconds: reg.histogram({
      name: 'turbosparse_layer_seconds',
      help: 'Wall time of one layer of one step (attention, router, predictor, experts)',
      labelNames: ['layer'],
      buckets: LATENCY_BUCKETS,
    }),
  };
}

type ExpertChildren = {
  call: HistogramChild;
  compute: HistogramChild;
  fraction: HistogramChild;
  tokens: CounterChild;
};
type NodeChildren = {
  call: HistogramChild;
  tokens: CounterChild;
  bytesIn: CounterChild;
  bytesOut: CounterChild;
  experts: (ExpertChildren | undefined)[][]; // [layer][expert]
};

/**
 * Feeds expert calls into the histograms and counters. Label children are cached
 * per (node, layer, expert), so a call costs a few array lookups, not label-key strings.
 */
export class CallMetrics {
  private readonly nodes = new Map<string, NodeChildren>();
  constructor(
    readonly m: CoordinatorMetrics,
    readonly intermediateSize: number,
  ) {}

  private nodeChildren(node: string): NodeChildren {
    let n = this.nodes.get(node);
    if (!n) {
      const l = { node };
      n = {
        call: this.m.nodeCallSeconds.labels(l),
        tokens: this.m.nodeTokens.labels(l),
        bytesIn: this.m.bytesIn.labels(l),
        bytesOut: this.m.bytesOut.labels(l),
        experts: [],
      };
      this.nodes.set(node, n);
    }
    return n;
  }

  private expertChildren(n: NodeChildren, node: string, layer: number, expert: number): ExpertChildren {
    const row = (n.experts[layer] ??= []);
    let e = row[expert];
    if (!e) {
      const l = { layer, expert, node };
      // --metrics-detail node: every pair of a node shares the node's histogram series.
      const h = this.m.detail === 'expert' ? l : { node };
      e = row[expert] = {
        call: this.m.callSeconds.labels(h),
        compute: this.m.computeSeconds.labels(h),
        fraction: this.m.activeRatio.labels(h),
        tokens: this.m.expertTokens.labels(l),
      };
    }
    return e;
  }

  observe(c: ExpertCallRecord): void {
    const n = this.nodeChildren(c.node);
    n.bytesIn.inc(c.bytesIn);
    n.bytesOut.inc(c.bytesOut);
    if (c.hedge) this.m.hedges.labels({ node: c.node }).inc();
    else if (c.retry) this.m.retries.labels({ node: c.node }).inc();
    if (c.error) {
      this.m.errors.labels({ node: c.node, code: c.error }).inc();
      return;
    }
    n.call.observe(c.seconds);
    n.tokens.inc(c.tokens);
    const computeS = c.computeUs !== undefined ? c.computeUs / 1e6 : c.seconds;
    let totalActive = 0;
    for (const a of c.active) totalActive += a;
    for (let i = 0; i < c.experts.length; i++) {
      const e = this.expertChildren(n, c.node, c.layer, c.experts[i]);
      const active = c.active[i] ?? 0;
      e.call.observe(c.seconds);
      e.compute.observe(totalActive > 0 ? (computeS * active) / totalActive : computeS / c.experts.length);
      e.fraction.observe(active / (c.slots[i] * this.intermediateSize));
      e.tokens.inc(c.slots[i]);
    }
  }
}
