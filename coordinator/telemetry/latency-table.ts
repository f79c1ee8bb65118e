// The per-expert latency table printed after `generate`/`demo` and by
// `turbosparse stats --url`: per node (experts held, calls, p50/p99/mean latency,
// active fraction, wire bytes per token, errors, health, transport), per expert p50/p99, and
// the hottest experts. Built from the status JSON so both print exactly the same thing.
import type { StatusJson, StatusNode } from './status';

type Cell = string;

function table(header: Cell[], rows: Cell[][], leftCols: number): string {
  const all = [header, ...rows];
  const widths = header.map((_, c) => Math.max(...all.map((r) => r[c].length)));
  const line = (r: Cell[]) => r.map((cell, c) => (c < leftCols ? cell.padEnd(widths[c]) : cell.padStart(widths[c]))).join('  ').trimEnd();
  return [line(header), ...rows.map(line)].join('\n');
}

const f = (x: number | null | undefined, digits = 3): string => (x === null || x === undefined ? '-' : x.toFixed(digits));
const pct = (x: number | null | undefined): string => (x === null || x === undefined ? '-' : `${(100 * x).toFixed(1)}%`);
/** Wire bytes per token row sent to the node; '-' without wire traffic (experts in process). */
const perToken = (bytes: number | undefined, tokens: number | undefined): string => (bytes && tokens ? (bytes / tokens).toFixed(0) : '-');

/** (layer, expert) pairs the shard map gives the node, with the SPEC when it is short. */
function heldExperts(n: StatusNode): string {
  if (n.experts_held === undefined) return '-';
  const spec = n.experts_spec !== undefined && n.experts_spec.length <= 24 ? ` (${n.experts_spec})` : '';
  return `${n.experts_held}${spec}`;
}

export interface LatencyTableOptions {
  /** Per-expert rows printed at most (the slowest by p99 first when cut). Default 32 (the demo model has 4 x 8). */
  maxExperts?: number;
}

export function formatLatencyTable(s: StatusJson, opts: LatencyTableOptions = {}): string {
  const out: string[] = [];
  const nodes = s.nodes.filter((n) => (n.calls ?? 0) > 0 || n.address !== n.node || !n.healthy);
  out.push('expert latency per node (coordinator round trip; recent calls):');
  if (nodes.length === 0) out.push('  no expert calls yet');
  else {
    out.push(
      table(
        ['node', 'experts', 'calls', 'p50 ms', 'p99 ms', 'mean ms', 'compute p50', 'active', 'sent B/tok', 'recv B/tok', 'errors', 'state', 'via'],
        nodes.map((n) => [
          n.address !== n.node ? `${n.node} ${n.address}` : n.node,
          heldExperts(n),
          String(n.calls ?? 0),
          f(n.p50_ms),
          f(n.p99_ms),
          f(n.mean_ms),
          f(n.compute_p50_ms),
          pct(n.active_fraction),
          perToken(n.bytes_out, n.tokens),
          perToken(n.bytes_in, n.tokens),
          String((n.errors ?? 0) + (n.retries ? ` (${n.retries} retried)` : '')),
          n.healthy ? 'up' : 'DOWN',
          n.transport ?? '-',
        ]),
        2,
      ),
    );
  }

  const experts = s.experts.filter((e) => e.calls > 0);
  if (experts.length > 0) {
    const max = opts.maxExperts ?? 32;
    const shown = experts.length <= max ? experts : [...experts].sort((a, b) => (b.p99_ms ?? 0) - (a.p99_ms ?? 0)).slice(0, max);
    out.push('');
    out.push(
      experts.length <= max
        ? 'per expert (layer:expert):'
        : `per expert (layer:expert), the ${max} slowest by p99 of ${experts.length}:`,
    );
    out.push(
      table(
        ['expert', 'calls', 'tokens', 'p50 ms', 'p99 ms', 'compute p50', 'active', 'share'],
        shown.map((e) => [
          `${e.layer}:${e.expert}`,
          String(e.calls),
          String(e.tokens),
          f(e.p50_ms),
          f(e.p99_ms),
          f(e.compute_p50_ms),
          pct(e.active_fraction),
          pct(e.share),
        ]),
        1,
      ),
    );
  }
  if (s.hottest.length > 0) {
    out.push('');
    out.push(`hottest experts: ${s.hottest.slice(0, 5).map((h) => `${h.layer}:${h.expert} (${pct(h.share)})`).join(', ')}`);
  }
  const t = s.throughput;
  if (t.total_generated > 0 || t.tokens_per_s > 0) {
    out.push(`throughput: ${t.tokens_per_s.toFixed(1)} tokens/s over the last ${t.window_s} s, ${t.total_generated} generated in all`);
  }
  return out.join('\n');
}
