// `turbosparse rebalance --url URL [--routing routing.json] [--dry-run] [--wait]`:
// asks a running coordinator (serve) for a new placement of its experts from
// the measured routing and its nodes' Info, prints the moves and the predicted
// gain, and (unless --dry-run) lets it move the pairs live (POST /v1/admin/rebalance).
// Also the serve side's wiring: the rebalancer, its admin route, --rebalance-every.
import type { Command } from 'commander';
import { UserError } from '../core/errors';
import type { StoreDType } from '../core/native';
import { loadRoutingStats, type RoutingStats } from '../core/placement/routing-stats';
import type { AdminRoute } from '../coordinator/http/admin-routes';
import type { RebalancePlan, RebalanceStatus } from '../coordinator/rebalancer';
import type { Serving } from './serving';
import { resolveApiKey, type ApiKeyFlags } from './api-key';
import { coordinatorFetch } from './coordinator-http';
import { floatOption, intOption } from './options';

interface RebalanceFlags extends ApiKeyFlags {
  url: string;
  routing?: string;
  dryRun?: boolean;
  wait?: boolean;
  replicas?: number;
  json?: boolean;
  timeout: number;
}

export function registerRebalance(program: Command): void {
  program
    .command('rebalance')
    .description('move experts between the nodes of a running coordinator (turbosparse serve) to match the measured routing')
    .requiredOption('--url <url>', 'the coordinator\'s base URL, e.g. http://127.0.0.1:8000')
    .option('--routing <file>', 'routing.json to plan from (default: the routing the coordinator measured since it started)')
    .option('--dry-run', 'print the plan only; move nothing')
    .option('--wait', 'wait until every move is done (or failed) and print how each ended')
    .option('--replicas <n>', 'copies of every pair, on different nodes (default: as now)', intOption('--replicas', 1))
    .option('--json', 'print the plan (and with --wait the final status) as JSON')
    .option('--timeout <s>', 'with --wait: give up waiting after this long (the moves go on)', floatOption('--timeout', 1, 86400), 600)
    .option('--api-key <key>', 'API key, when the server needs one (default: $TURBOSPARSE_API_KEY)')
    .option('--api-key-file <file>', 'read the API key from FILE (keeps it out of `ps`)')
    .action(async (flags: RebalanceFlags) => {
      await runRebalance(flags);
    });
}

export async function runRebalance(flags: RebalanceFlags, out: (text: string) => void = (t) => process.stdout.write(t)): Promise<void> {
  const apiKey = resolveApiKey(flags);
  const routing: RoutingStats | undefined = flags.routing === undefined ? undefined : loadRoutingStats(flags.routing);
  const body = { ...(routing ? { routing } : {}), ...(flags.dryRun ? { dry_run: true } : {}), ...(flags.replicas ? { replicas: flags.replicas } : {}) };
  const plan = (await request(flags.url, 'POST', body, apiKey)) as RebalancePlan;
  if (!Array.isArray(plan.moves) || !plan.predicted) throw new UserError(`${flags.url} did not answer a rebalance plan: is this a turbosparse coordinator?`);
  if (flags.json && !flags.wait) return out(`${JSON.stringify(plan, null, 2)}\n`);
  if (!flags.json) out(formatPlan(plan));
  if (!flags.wait || flags.dryRun || plan.moves.length === 0) {
    if (flags.json) out(`${JSON.stringify(plan, null, 2)}\n`);
    return;
  }
  const end = Date.now() + flags.timeout * 1000;
  let status: RebalanceStatus;
  for (;;) {
    status = (await request(flags.url, 'GET', undefined, apiKey)) as RebalanceStatus;
    if (status.state === 'done' || status.state === 'failed' || status.state === 'idle') break;
    if (Date.now() > end) throw new UserError(`rebalance still ${status.state} after ${flags.timeout} s (it goes on; see GET /v1/admin/rebalance)`);
    await new Promise((r) => setTimeout(r, 250));
  }
  if (flags.json) return out(`${JSON.stringify({ plan, status }, null, 2)}\n`);
  const failed = status.moves.filter((m) => m.phase === 'failed');
  out(`rebalance ${status.state}: ${status.moves.length - failed.length} of ${status.moves.length} move(s) done\n`);
  for (const m of failed) out(`  failed: layer ${m.layer} expert ${m.expert} ${m.from ?? '(new copy)'} -> ${m.to ?? '(removed)'}: ${m.error ?? ''}\n`);
  if (status.state === 'failed') throw new UserError(`rebalance failed: ${status.error ?? 'see the moves above'}`);
}

/** The plan as lines: predicted per-token time before/after, then one line per move. */
export function formatPlan(plan: RebalancePlan): string {
  const lines: string[] = [];
  const pct = (plan.predicted.gain * 100).toFixed(1);
  lines.push(`${plan.dry_run ? 'plan (dry run)' : 'rebalancing'}: ${plan.moves.length} move(s), routing ${plan.routing}, ${plan.replicas} cop${plan.replicas === 1 ? 'y' : 'ies'} per pair`);
  lines.push(`predicted per token (sum over layers of the slowest node): ${plan.predicted.before_ms.toFixed(3)} ms -> ` +
    `${plan.predicted.after_ms.toFixed(3)} ms (${pct}% ${plan.predicted.gain >= 0 ? 'faster' : 'slower'})`);
  for (const w of plan.warnings) lines.push(`warning: ${w}`);
  for (const n of plan.speeds ?? []) {
    lines.push(`  node ${n.name}: Info ${gbps(n.info_bytes_per_s)} GB/s, measured ` +
      `${n.measured_bytes_per_s === null ? `- (too little traffic: ${n.calls} calls, ${n.compute_s.toFixed(2)} s)` : `${gbps(n.measured_bytes_per_s)} GB/s (${n.calls} calls, ${n.compute_s.toFixed(2)} s)`}` +
      `, used ${gbps(n.used_bytes_per_s)} GB/s`);
  }
  for (const m of plan.moves) lines.push(`  layer ${m.layer} expert ${m.expert}: ${m.from ?? '(new copy)'} -> ${m.to ?? '(removed)'}`);
  return `${lines.join('\n')}\n`;
}

function gbps(bytesPerS: number): string {
  return (bytesPerS / 1e9).toFixed(3);
}

async function request(base: string, method: 'GET' | 'POST', body: unknown, apiKey: string | undefined): Promise<unknown> {
  const { url, res } = await coordinatorFetch(base, 'v1/admin/rebalance', apiKey, { method, body, timeoutMs: 60_000 });
  const text = await res.text();
  // Before the JSON: a proxy's 401 page is still "needs an API key".
  if (res.status === 401) throw new UserError(`${url.href} needs an API key: pass --api-key KEY or --api-key-file FILE (or set TURBOSPARSE_API_KEY)`);
  let parsed: unknown;
  try {
    parsed = JSON.parse(text);
  } catch {
    throw new UserError(`${url.href} answered HTTP ${res.status} without JSON: is this a turbosparse coordinator?`);
  }
  if (!res.ok) {
    const message = (parsed as { error?: { message?: string } }).error?.message ?? text.slice(0, 200);
    throw new UserError(`${url.href}: HTTP ${res.status}: ${message}`);
  }
  return parsed;
}

/** Before serve loads anything: --rebalance-every needs expert nodes to move pairs between. */
export function checkRebalanceFlags(flags: { experts: string; rebalanceEvery?: number }): void {
  if (flags.rebalanceEvery !== undefined && flags.experts === 'local') {
    throw new UserError('--rebalance-every: needs expert nodes to move experts between (--experts cluster:N or a shard-map FILE)');
  }
}

/**
 * serve's rebalancing: the rebalancer over its remote experts (none for in-process experts),
 * planning from `collected` routing by default, `--rebalance-every MIN`, and its admin route.
 */
export async function serveRebalancing(serving: Serving, flags: { weights: StoreDType | 'auto'; rebalanceEvery?: number },
  log: (line: string) => void): Promise<AdminRoute> {
  const { adminRoutes } = await import('../coordinator/http/admin-routes');
  const { rebalancerFor } = await import('../coordinator/rebalancer');
  const { buildRoutingStats } = await import('../coordinator/telemetry/routing-route');
  const { modelPairs } = await import('./shard-map');
  const rebalancer = rebalancerFor(serving.engine, {
    pairs: modelPairs(serving.engine.folder, flags.weights),
    collected: () => buildRoutingStats(serving.observability, 'serve'),
    log,
  });
  if (flags.rebalanceEvery !== undefined) {
    if (!rebalancer) throw new UserError('--rebalance-every: needs expert nodes (--experts cluster:N or a shard-map FILE)');
    rebalancer.startPeriodic(flags.rebalanceEvery);
    log(`rebalancing every ${flags.rebalanceEvery} min when the predicted gain is 5% or more`);
  }
  return adminRoutes(rebalancer, log);
}
