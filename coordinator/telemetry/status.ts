// The status JSON (`GET /v1/status`): what the status page draws and what
// `turbosparse stats --url` prints. One plain object, versioned, so a page
// shipped with one release can read another's (fields are only ever added).
import type { Registry } from '../../core/metrics';
import type { ExpertStatsSnapshot, ExpertSummary, LayerSummary, NodeSummary, Throughput } from './expert-stats';
import type { EngineObservability, NodeHealthLike } from './observe';
import { rebalanceStatusOf, type RebalanceStatus } from '../rebalance-status';

export const STATUS_VERSION = 1;

export interface StatusNode extends Partial<NodeSummary> {
  node: string;
  address: string;
  healthy: boolean;
  last_error?: string;
  experts_held?: number;
  experts_spec?: string;
  /** How Run's calls reach the node (remote nodes). */
  transport?: 'socket' | 'grpc';
}

/** One heatmap cell (layer, expert): recent latency and sparsity; null when never called. */
export interface HeatCell {
  calls: number;
  p50_ms: number | null;
  p99_ms: number | null;
  active_fraction: number | null;
  share: number;
}

export interface StatusJson {
  version: number;
  service: string;
  time: string;
  uptime_s: number;
  model: { name: string; layers: number; experts: number; top_k: number; hidden: number; intermediate: number };
  experts_backend: string;
  nodes: StatusNode[];
  /** [layer][expert] */
  heatmap: (HeatCell | null)[][];
  layers: LayerSummary[];
  experts: ExpertSummary[];
  hottest: { layer: number; expert: number; share: number; tokens: number }[];
  throughput: Throughput;
  queue: {
    running: number | null;
    waiting: number | null;
    jobs_waiting: number | null;
    kv_used_bytes: number | null;
    kv_budget_bytes: number | null;
    /** KV bytes of finished sequences kept for their prefixes. */
    prefix_cache_bytes: number | null;
    /** Prompt tokens copied from the prefix cache / prompt tokens of sequences started, since start. */
    prefix_cache_hit_tokens: number | null;
    prefix_cache_queried_tokens: number | null;
    preemptions: number | null;
  };
  totals: ExpertStatsSnapshot['totals'];
  /** Speculative decoding since start (null when off): proposed tokens kept, and tokens per forward pass. */
  speculative: {
    proposer: string;
    forward_passes: number;
    draft_tokens: number;
    accepted_tokens: number;
    /** accepted / draft tokens. */
    acceptance: number | null;
    /** Tokens emitted per decode forward pass: 1 + accepted per pass. */
    tokens_per_forward_pass: number | null;
  } | null;
  /** Live rebalancing (coordinator/rebalancer.ts): absent without expert nodes. */
  rebalance?: RebalanceStatus;
}

/** A gauge's or counter's value summed over its series (those matching `labels`), or null when no such metric (e.g. no scheduler here). */
function metricValue(reg: Registry, name: string, labels: Record<string, string> = {}): number | null {
  const m = reg.get(name);
  if (!m || (m.type !== 'gauge' && m.type !== 'counter')) return null;
  const series = m.json().series.filter((s) => Object.entries(labels).every(([k, v]) => s.labels[k] === v));
  if (series.length === 0) return null;
  return series.reduce((a, s) => a + (s.value ?? 0), 0);
}

export function buildStatus(obs: EngineObservability, service = 'turbosparse-coordinator'): StatusJson {
  const c = obs.engine.config;
  // Refresh collect()-style gauges (scheduler queue, KV cache) and the deferred call bookkeeping
  // (EngineObservability flushes it from the registry's onCollect).
  obs.registry.json();
  const snap = obs.stats.snapshot();
  const byNode = new Map(snap.nodes.map((n) => [n.node, n]));
  const health: NodeHealthLike[] = obs.nodes();
  const nodes: StatusNode[] = health.map((h) => {
    const key = h.name ?? h.address;
    const s = byNode.get(key) ?? byNode.get(h.address);
    byNode.delete(key);
    byNode.delete(h.address);
    return {
      ...(s ?? {}),
      node: key,
      address: h.address,
      healthy: h.healthy,
      ...(h.lastError ? { last_error: h.lastError } : {}),
      ...(h.expertsHeld !== undefined ? { experts_held: h.expertsHeld } : {}),
      ...(h.expertsSpec !== undefined ? { experts_spec: h.expertsSpec } : {}),
      ...(h.transport ? { transport: h.transport } : {}),
    };
  });
  // Nodes seen in calls but not reported by the backend (e.g. "local").
  for (const s of byNode.values()) nodes.push({ ...s, address: s.node, healthy: true });

  const heatmap: (HeatCell | null)[][] = Array.from({ length: c.numLayers }, () => new Array<HeatCell | null>(c.numExperts).fill(null));
  for (const e of snap.experts) {
    if (e.layer < c.numLayers && e.expert < c.numExperts) {
      heatmap[e.layer][e.expert] = { calls: e.calls, p50_ms: e.p50_ms, p99_ms: e.p99_ms, active_fraction: e.active_fraction, share: e.share };
    }
  }
  const hottest = [...snap.experts]
    .sort((a, b) => b.tokens - a.tokens || a.layer - b.layer || a.expert - b.expert)
    .slice(0, 10)
    .map((e) => ({ layer: e.layer, expert: e.expert, share: e.share, tokens: e.tokens }));
  const reg = obs.registry;
  return {
    version: STATUS_VERSION,
    service,
    time: new Date().toISOString(),
    uptime_s: Math.round((Date.now() - obs.startedAt) / 100) / 10,
    model: { name: obs.modelName, layers: c.numLayers, experts: c.numExperts, top_k: c.topK, hidden: c.hiddenSize, intermediate: c.intermediateSize },
    experts_backend: obs.engine.experts.name,
    nodes,
    heatmap,
    layers: snap.layers,
    experts: snap.experts,
    hottest,
    throughput: snap.throughput,
    queue: {
      running: metricValue(reg, 'turbosparse_scheduler_running_sequences'),
      waiting: metricValue(reg, 'turbosparse_scheduler_waiting_requests'),
      jobs_waiting: metricValue(reg, 'turbosparse_queue_jobs', { state: 'waiting' }),
      kv_used_bytes: metricValue(reg, 'turbosparse_kv_cache_reserved_bytes'),
      kv_budget_bytes: metricValue(reg, 'turbosparse_kv_cache_budget_bytes'),
      prefix_cache_bytes: metricValue(reg, 'turbosparse_prefix_cache_bytes'),
      prefix_cache_hit_tokens: metricValue(reg, 'turbosparse_prefix_cache_hit_tokens_total'),
      prefix_cache_queried_tokens: metricValue(reg, 'turbosparse_prefix_cache_queried_tokens_total'),
      preemptions: metricValue(reg, 'turbosparse_scheduler_preemptions_total'),
    },
    totals: snap.totals,
    speculative: speculativeStatus(obs.engine),
    rebalance: rebalanceStatusOf(obs.engine),
  };
}

function speculativeStatus(engine: EngineObservability['engine']): StatusJson['speculative'] {
  if (!engine.proposer) return null;
  const s = engine.speculation;
  return {
    proposer: engine.proposer.name,
    forward_passes: s.forwardPasses,
    draft_tokens: s.draftTokens,
    accepted_tokens: s.acceptedTokens,
    acceptance: s.draftTokens > 0 ? s.acceptedTokens / s.draftTokens : null,
    tokens_per_forward_pass: s.forwardPasses > 0 ? (s.forwardPasses + s.acceptedTokens) / s.forwardPasses : null,
  };
}
