// Per expert-node counters kept by the remote backend (RemoteExperts.stats()): health,
// the experts a node holds, calls, tokens, active fraction, bytes on the wire. Latency
// percentiles per node and per expert are the observability's (telemetry/expert-stats.ts).

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
  bytesSent = 0;
  bytesReceived = 0;

  addCall(c: { tokens: number; routes: number; activeNeurons: number; bytesSent: number; bytesReceived: number }): void {
    this.calls++;
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
    'bytesSent' | 'bytesReceived'> {
    return {
      calls: this.calls,
      failures: this.failures,
      hedged: this.hedged,
      tokens: this.tokens,
      routes: this.routes,
      activeFraction: this.routes ? this.activeNeurons / (this.routes * intermediateSize) : 0,
      bytesSent: this.bytesSent,
      bytesReceived: this.bytesReceived,
    };
  }
}
