// Per expert-node statistics kept by the remote backend, and the table the
// README's main command prints after a generation.
import { SampleWindow } from './telemetry/sample-window';

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
  /** Token rows and (token, expert) routes sent in successful calls. */
  tokens: number;
  routes: number;
  /** Round trip per successful call, as seen by the coordinator. */
  latencyMeanMs: number;
  latencyP50Ms: number;
  latencyP99Ms: number;
  /** Node-reported time in its queue and in the kernels, mean per call. */
  queueMeanUs: number;
  computeMeanUs: number;
  /** Mean over routes of (neurons computed / intermediate size). */
  activeFraction: number;
  bytesSent: number;
  bytesReceived: number;
}

/** Accumulates one node's numbers; percentiles over the last `window` calls. */
export class NodeStatsAccumulator {
  calls = 0;
  failures = 0;
  tokens = 0;
  routes = 0;
  activeNeurons = 0;
  bytesSent = 0;
  bytesReceived = 0;
  private latencySumUs = 0;
  private queueSumUs = 0;
  private computeSumUs = 0;
  private readonly latencyUs: SampleWindow;

  constructor(window = 4096) {
    this.latencyUs = new SampleWindow(window);
  }

  addCall(c: { latencyUs: number; queueUs: number; computeUs: number; tokens: number; routes: number;
    activeNeurons: number; bytesSent: number; bytesReceived: number }): void {
    this.calls++;
    this.tokens += c.tokens;
    this.routes += c.routes;
    this.activeNeurons += c.activeNeurons;
    this.bytesSent += c.bytesSent;
    this.bytesReceived += c.bytesReceived;
    this.latencySumUs += c.latencyUs;
    this.queueSumUs += c.queueUs;
    this.computeSumUs += c.computeUs;
    this.latencyUs.push(c.latencyUs);
  }

  addFailure(): void {
    this.failures++;
  }

  snapshot(intermediateSize: number): Pick<NodeStats, 'calls' | 'failures' | 'tokens' | 'routes' | 'latencyMeanMs' |
    'latencyP50Ms' | 'latencyP99Ms' | 'queueMeanUs' | 'computeMeanUs' | 'activeFraction' | 'bytesSent' | 'bytesReceived'> {
    const [p50Us, p99Us] = this.latencyUs.count ? this.latencyUs.quantiles([0.5, 0.99]) : [0, 0];
    const per = (x: number) => (this.calls ? x / this.calls : 0);
    return {
      calls: this.calls,
      failures: this.failures,
      tokens: this.tokens,
      routes: this.routes,
      latencyMeanMs: per(this.latencySumUs) / 1000,
      latencyP50Ms: p50Us / 1000,
      latencyP99Ms: p99Us / 1000,
      queueMeanUs: per(this.queueSumUs),
      computeMeanUs: per(this.computeSumUs),
      activeFraction: this.routes ? this.activeNeurons / (this.routes * intermediateSize) : 0,
      bytesSent: this.bytesSent,
      bytesReceived: this.bytesReceived,
    };
  }
}

/**
 * A plain-text table, one line per node: experts held, calls, mean/p99
 * latency, mean active fraction, bytes sent/received per token.
 */
export function formatNodeTable(stats: NodeStats[]): string {
  const header = ['node', 'experts', 'calls', 'mean ms', 'p99 ms', 'active', 'sent B/tok', 'recv B/tok', 'state'];
  const rows = stats.map((s) => {
    const spec = s.expertsSpec.length <= 24 ? ` (${s.expertsSpec})` : '';
    return [
      s.name ? `${s.name} ${s.address}` : s.address,
      `${s.expertsHeld}${spec}`,
      s.failures ? `${s.calls} (+${s.failures} failed)` : `${s.calls}`,
      s.calls ? s.latencyMeanMs.toFixed(2) : '-',
      s.calls ? s.latencyP99Ms.toFixed(2) : '-',
      s.calls ? `${(100 * s.activeFraction).toFixed(1)}%` : '-',
      s.tokens ? (s.bytesSent / s.tokens).toFixed(0) : '-',
      s.tokens ? (s.bytesReceived / s.tokens).toFixed(0) : '-',
      s.healthy ? 'up' : 'DOWN',
    ];
  });
  const all = [header, ...rows];
  const widths = header.map((_, c) => Math.max(...all.map((r) => r[c].length)));
  // Text columns left-aligned, numbers right-aligned.
  const line = (r: string[]) => r.map((cell, c) => (c < 2 || c === 8 ? cell.padEnd(widths[c]) : cell.padStart(widths[c]))).join('  ').trimEnd();
  return [line(header), ...rows.map(line)].join('\n');
}
