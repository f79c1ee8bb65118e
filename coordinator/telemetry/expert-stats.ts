// Exact recent statistics per expert, per node and per layer, for the latency
// table printed after `generate`/`demo`, the status page and `turbosparse stats`.
// Prometheus histograms (metrics.ts) answer "over time, in Grafana"; this
// answers "p50/p99 right now" from a bounded window of the latest samples.
import type { ExpertCallRecord } from './expert-calls';
import { SampleWindow } from './sample-window';

class Series {
  calls = 0;
  errors = 0;
  retries = 0;
  tokens = 0;
  slots = 0;
  active = 0;
  bytesIn = 0;
  bytesOut = 0;
  computeS = 0;
  readonly latency: SampleWindow;
  readonly compute: SampleWindow;
  /** Active fraction of recent calls (slot-weighted per call). */
  readonly fraction: SampleWindow;
  constructor(cap: number) {
    this.latency = new SampleWindow(cap);
    this.compute = new SampleWindow(cap);
    this.fraction = new SampleWindow(cap);
  }
}

/** One row of the per-node / per-expert tables (times in milliseconds). */
export interface SeriesSummary {
  calls: number;
  errors: number;
  retries: number;
  /** Token rows sent (per node) or routed token slots (per expert). */
  tokens: number;
  p50_ms: number | null;
  p99_ms: number | null;
  mean_ms: number | null;
  compute_p50_ms: number | null;
  /** Neurons computed / neurons a dense FFN would compute, over the recent window. */
  active_fraction: number | null;
  bytes_in: number;
  bytes_out: number;
}

export interface NodeSummary extends SeriesSummary {
  node: string;
  /** Distinct (layer, expert) pairs seen on this node. */
  experts_seen: number;
}

export interface ExpertSummary extends SeriesSummary {
  layer: number;
  expert: number;
  /** Share of all routed slots (hotness). */
  share: number;
}

export interface LayerSummary {
  layer: number;
  active_fraction: number | null;
  p50_ms: number | null;
  calls: number;
}

export interface Throughput {
  window_s: number;
  /** Generated (decode) tokens per second over the window. */
  tokens_per_s: number;
  /** Prompt tokens prefilled per second over the window. */
  prefill_tokens_per_s: number;
  steps_per_s: number;
  /** Mean sequences per step over the window. */
  mean_batch: number;
  total_generated: number;
  total_prefilled: number;
}

export interface ExpertStatsSnapshot {
  nodes: NodeSummary[];
  experts: ExpertSummary[];
  layers: LayerSummary[];
  throughput: Throughput;
  totals: { calls: number; errors: number; retries: number; slots: number };
}

const ms = (s: number): number | null => (Number.isFinite(s) ? Math.round(s * 1e6) / 1e3 : null);
const frac = (x: number): number | null => (Number.isFinite(x) ? Math.round(x * 1e4) / 1e4 : null);

export class ExpertStats {
  /** [layer][expert], across nodes (replicas add up). Arrays, not keyed maps: this runs per call. */
  private readonly byExpert: (Series | undefined)[][] = [];
  private readonly byNode = new Map<string, { s: Series; seen: boolean[][]; seenCount: number }>();
  private readonly layerFraction: SampleWindow[] = [];
  private readonly layerLatency: SampleWindow[] = [];
  private readonly layerCalls: number[] = [];
  /** Steps of the throughput window; entries before `stepsHead` have left it (dropped in batches). */
  private steps: { t: number; decode: number; prefill: number; seqs: number }[] = [];
  private stepsHead = 0;
  private totalGenerated = 0;
  private totalPrefilled = 0;
  private totalSlots = 0;
  private totalCalls = 0;
  private totalErrors = 0;
  private totalRetries = 0;

  constructor(
    readonly intermediateSize: number,
    readonly opts: { window?: number; throughputWindowS?: number; now?: () => number } = {},
  ) {}

  private get cap(): number {
    return this.opts.window ?? 512;
  }
  private now(): number {
    return this.opts.now ? this.opts.now() : performance.now();
  }

  recordCall(c: ExpertCallRecord): void {
    this.totalCalls++;
    let ns = this.byNode.get(c.node);
    if (!ns) this.byNode.set(c.node, (ns = { s: new Series(this.cap), seen: [], seenCount: 0 }));
    const node = ns.s;
    node.calls++;
    node.tokens += c.tokens;
    node.bytesIn += c.bytesIn;
    node.bytesOut += c.bytesOut;
    if (c.retry) {
      node.retries++;
      this.totalRetries++;
    }
    const L = c.layer;
    const row = (this.byExpert[L] ??= []);
    if (c.error) {
      node.errors++;
      this.totalErrors++;
      for (const e of c.experts) (row[e] ??= new Series(this.cap)).errors++;
      return;
    }
    const computeS = c.computeUs !== undefined ? c.computeUs / 1e6 : c.seconds;
    node.latency.push(c.seconds);
    node.compute.push(computeS);
    node.computeS += computeS;
    let totalActive = 0;
    for (let i = 0; i < c.active.length; i++) totalActive += c.active[i];
    const seenRow = (ns.seen[L] ??= []);
    let slots = 0;
    const I = this.intermediateSize;
    for (let i = 0; i < c.experts.length; i++) {
      const e = c.experts[i];
      if (!seenRow[e]) {
        seenRow[e] = true;
        ns.seenCount++;
      }
      const s = (row[e] ??= new Series(this.cap));
      const active = c.active[i] ?? 0;
      const n = c.slots[i];
      s.calls++;
      s.tokens += n;
      s.slots += n;
      s.active += active;
      s.latency.push(c.seconds);
      // Compute time of a multi-expert call is shared by active neurons (the sparse FFN's cost).
      const share = c.active.length > 0 ? active / Math.max(1, totalActive) : 1 / c.experts.length;
      s.compute.push(computeS * share);
      s.computeS += computeS * share;
      s.fraction.push(active / (n * I));
      slots += n;
    }
    this.totalSlots += slots;
    node.slots += slots;
    node.active += totalActive;
    if (slots > 0) node.fraction.push(totalActive / (slots * I));
    while (this.layerFraction.length <= L) {
      this.layerFraction.push(new SampleWindow(this.cap));
      this.layerLatency.push(new SampleWindow(this.cap));
      this.layerCalls.push(0);
    }
    if (slots > 0) this.layerFraction[L].push(totalActive / (slots * I));
    this.layerLatency[L].push(c.seconds);
    this.layerCalls[L]++;
  }

  /** One engine step: generated (decode) tokens, prompt rows, sequences in the batch. */
  recordStep(decodeTokens: number, prefillRows: number, sequences: number): void {
    this.totalGenerated += decodeTokens;
    this.totalPrefilled += prefillRows;
    const t = this.now();
    this.steps.push({ t, decode: decodeTokens, prefill: prefillRows, seqs: sequences });
    const horizon = t - (this.opts.throughputWindowS ?? 10) * 1000;
    while (this.stepsHead < this.steps.length && this.steps[this.stepsHead].t < horizon) this.stepsHead++;
    if (this.stepsHead > 1024 && this.stepsHead * 2 > this.steps.length) {
      this.steps = this.steps.slice(this.stepsHead);
      this.stepsHead = 0;
    }
  }

  private summary(s: Series): SeriesSummary {
    const [p50, p99] = s.latency.quantiles([0.5, 0.99]);
    const [c50] = s.compute.quantiles([0.5]);
    return {
      calls: s.calls,
      errors: s.errors,
      retries: s.retries,
      tokens: s.tokens,
      p50_ms: ms(p50),
      p99_ms: ms(p99),
      mean_ms: ms(s.latency.mean()),
      compute_p50_ms: ms(c50),
      active_fraction: frac(s.fraction.mean()),
      bytes_in: s.bytesIn,
      bytes_out: s.bytesOut,
    };
  }

  snapshot(): ExpertStatsSnapshot {
    const nodes: NodeSummary[] = [...this.byNode.entries()]
      .map(([node, ns]) => ({ node, experts_seen: ns.seenCount, ...this.summary(ns.s) }))
      .sort((a, b) => a.node.localeCompare(b.node, undefined, { numeric: true }));
    const experts: ExpertSummary[] = [];
    this.byExpert.forEach((row, layer) =>
      row?.forEach((s, expert) => {
        if (!s) return;
        const share = this.totalSlots > 0 ? Math.round((s.slots / this.totalSlots) * 1e4) / 1e4 : 0;
        experts.push({ layer, expert, share, ...this.summary(s) });
      }),
    );
    const layers: LayerSummary[] = this.layerFraction.map((w, layer) => ({
      layer,
      active_fraction: frac(w.mean()),
      p50_ms: ms(this.layerLatency[layer].quantiles([0.5])[0]),
      calls: this.layerCalls[layer],
    }));
    return { nodes, experts, layers, throughput: this.throughput(), totals: this.totals() };
  }

  private totals(): ExpertStatsSnapshot['totals'] {
    return { calls: this.totalCalls, errors: this.totalErrors, retries: this.totalRetries, slots: this.totalSlots };
  }

  throughput(): Throughput {
    const windowS = this.opts.throughputWindowS ?? 10;
    const t = this.now();
    const recent = this.steps.slice(this.stepsHead).filter((s) => s.t >= t - windowS * 1000);
    // Rate over the span actually covered (a 2-second run is not diluted over 10 seconds).
    const spanS = recent.length > 1 ? Math.max((t - recent[0].t) / 1000, 1e-3) : windowS;
    // The first step of the window marks its start; its own tokens were made before it.
    const counted = recent.length > 1 ? recent.slice(1) : recent;
    const sum = (f: (s: (typeof recent)[number]) => number) => counted.reduce((a, s) => a + f(s), 0);
    const round = (x: number) => Math.round(x * 100) / 100;
    return {
      window_s: windowS,
      tokens_per_s: round(sum((s) => s.decode) / spanS),
      prefill_tokens_per_s: round(sum((s) => s.prefill) / spanS),
      steps_per_s: round(counted.length / spanS),
      mean_batch: counted.length > 0 ? round(sum((s) => s.seqs) / counted.length) : 0,
      total_generated: this.totalGenerated,
      total_prefilled: this.totalPrefilled,
    };
  }

  reset(): void {
    this.byExpert.length = 0;
    this.byNode.clear();
    this.layerFraction.length = 0;
    this.layerLatency.length = 0;
    this.layerCalls.length = 0;
    this.steps = [];
    this.stepsHead = 0;
    this.totalGenerated = this.totalPrefilled = this.totalSlots = this.totalCalls = this.totalErrors = this.totalRetries = 0;
  }
}

// ---- per-node counters the remote backend keeps (RemoteExperts.stats(), always on) ----
// The windows above are fed by call records while observability is attached; these
// cumulative counters answer stats(), the status page's health rows and /ready's view
// of a node whether or not anything observes the calls.

export interface NodeStats {
  address: string;
  name?: string;
  healthy: boolean;
  /** Why the node was last marked unhealthy. */
  lastError?: string;
  /** (layer, expert) pairs the shard map gives this node, and as a SPEC. */
  expertsHeld: number;
  expertsSpec: string;
  /** Calls answered successfully / failed (each failure was retried on a replica or failed the step). */
  calls: number;
  failures: number;
  /** Calls to this node still unanswered past its p99, so a replica was sent the same request. */
  hedged: number;
  /** Token rows and (token, expert) routes sent in successful calls. */
  tokens: number;
  routes: number;
  /** Mean over routes of (neurons computed / intermediate size). */
  activeFraction: number;
  /** Compute time the node reported for its successful calls, summed (us): the rebalancer's measured speeds. */
  computeUs: number;
  bytesSent: number;
  bytesReceived: number;
}

/** Accumulates one node's numbers. */
export class NodeStatsAccumulator {
  calls = 0;
  failures = 0;
  hedged = 0;
  tokens = 0;
  routes = 0;
  activeNeurons = 0;
  computeUs = 0;
  bytesSent = 0;
  bytesReceived = 0;

  addCall(c: { tokens: number; routes: number; activeNeurons: number; computeUs: number; bytesSent: number; bytesReceived: number }): void {
    this.calls++;
    this.computeUs += c.computeUs;
    this.tokens += c.tokens;
    this.routes += c.routes;
    this.activeNeurons += c.activeNeurons;
    this.bytesSent += c.bytesSent;
    this.bytesReceived += c.bytesReceived;
  }

  addFailure(): void {
    this.failures++;
  }

  addHedge(): void {
    this.hedged++;
  }

  snapshot(intermediateSize: number): Pick<NodeStats, 'calls' | 'failures' | 'hedged' | 'tokens' | 'routes' | 'activeFraction' |
    'computeUs' | 'bytesSent' | 'bytesReceived'> {
    return {
      calls: this.calls,
      failures: this.failures,
      hedged: this.hedged,
      tokens: this.tokens,
      routes: this.routes,
      activeFraction: this.routes ? this.activeNeurons / (this.routes * intermediateSize) : 0,
      computeUs: this.computeUs,
      bytesSent: this.bytesSent,
      bytesReceived: this.bytesReceived,
    };
  }
}
