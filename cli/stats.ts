// `turbosparse stats --url URL`: the per-expert latency table (p50/p99 per node
// and per expert, hottest experts) of a running coordinator, read from its status
// JSON (GET /status.json), the same table `generate` and `demo` print at the end,
// under a line of scheduler figures (running, waiting, KV cache, prefix cache).
// `--export routing.json` instead writes its routing statistics (GET /v1/stats/routing).
import fs from 'node:fs';
import type { Command } from 'commander';
import { UserError } from '../core/errors';
import { formatRoutingStats, parseRoutingStats, type RoutingStats } from '../core/placement/routing-stats';
import { formatLatencyTable } from '../coordinator/telemetry/latency-table';
import type { StatusJson } from '../coordinator/telemetry/status';
import { resolveApiKey, type ApiKeyFlags } from './api-key';
import { coordinatorFetch } from './coordinator-http';
import { intOption } from './options';

interface StatsFlags extends ApiKeyFlags {
  url: string;
  json?: boolean;
  watch?: number;
  maxExperts: number;
  export?: string;
}

export function registerStats(program: Command): void {
  program
    .command('stats')
    .description('print the per-expert latency table of a running coordinator (turbosparse serve)')
    .requiredOption('--url <url>', 'the coordinator\'s base URL, e.g. http://127.0.0.1:8000')
    .option('--api-key <key>', 'API key, when the server needs one for /v1/status (default: $TURBOSPARSE_API_KEY)')
    .option('--api-key-file <file>', 'read the API key from FILE (keeps it out of `ps`)')
    .option('--json', 'print the status JSON instead of the table')
    .option('--watch <s>', 'print again every S seconds until Ctrl-C', intOption('--watch', 1))
    .option('--max-experts <n>', 'per-expert rows at most (the slowest by p99 when cut)', intOption('--max-experts', 1), 32)
    .option('--export <file>', 'write the routing statistics (routes and active neurons per expert, node latency) to FILE ' +
      '(routing.json, for shard-map --routing and the planner) instead of printing the table')
    .action(async (flags: StatsFlags) => {
      await runStats(flags);
    });
}

/** GET the status JSON of the coordinator at `base` (its /status.json; /v1/status with an API key). */
export async function fetchStatus(base: string, apiKey?: string): Promise<StatusJson> {
  const { url, body } = await getJson(base, apiKey ? 'v1/status' : 'status.json', apiKey);
  const s = body as Partial<StatusJson>;
  if (typeof s.version !== 'number' || !Array.isArray(s.nodes) || !Array.isArray(s.experts)) {
    throw new UserError(`${url.href} did not answer a turbosparse status (no version/nodes/experts): is this a turbosparse coordinator?`);
  }
  return s as StatusJson;
}

/** GET the routing statistics of the coordinator at `base` (/v1/stats/routing), checked as routing.json. */
export async function fetchRoutingStats(base: string, apiKey?: string): Promise<RoutingStats> {
  const { url, text } = await getJson(base, 'v1/stats/routing', apiKey);
  return parseRoutingStats(text, url.href);
}

/** GET `rel` under the base URL; one-line errors for an unreachable server, a missing key, a non-JSON answer. */
async function getJson(base: string, rel: string, apiKey?: string): Promise<{ url: URL; text: string; body: unknown }> {
  const { url, res } = await coordinatorFetch(base, rel, apiKey, { timeoutMs: 10_000 });
  if (res.status === 401) {
    const refused = apiKey ? '; the key given was refused' : '';
    throw new UserError(`${url.href} needs an API key: pass --api-key KEY or --api-key-file FILE (or set TURBOSPARSE_API_KEY)${refused}`);
  }
  if (!res.ok) throw new UserError(`${url.href} answered HTTP ${res.status}: is this a turbosparse coordinator (turbosparse serve)?`);
  let text: string;
  let body: unknown;
  try {
    text = await res.text();
    body = JSON.parse(text);
  } catch {
    throw new UserError(`${url.href} did not answer JSON: is this a turbosparse coordinator?`);
  }
  return { url, text, body };
}

const mib = (b: number): string => `${(b / 2 ** 20).toFixed(1)} MiB`;

/** One line of scheduler figures from the status JSON's queue (those it has; null: no scheduler). */
export function formatQueueLine(q: StatusJson['queue'] | undefined): string | null {
  if (!q) return null;
  const parts: string[] = [];
  if (q.running !== null) parts.push(`running ${q.running}`);
  if (q.waiting !== null || q.jobs_waiting !== null) {
    parts.push(`waiting ${q.waiting ?? 0}${q.jobs_waiting !== null ? ` (+${q.jobs_waiting} queued jobs)` : ''}`);
  }
  if (q.kv_used_bytes !== null) parts.push(`KV ${mib(q.kv_used_bytes)}${q.kv_budget_bytes ? ` of ${mib(q.kv_budget_bytes)}` : ''}`);
  if (q.prefix_cache_bytes !== null || q.prefix_cache_queried_tokens !== null) {
    const hit = q.prefix_cache_queried_tokens ? `${((100 * (q.prefix_cache_hit_tokens ?? 0)) / q.prefix_cache_queried_tokens).toFixed(1)}%` : '-';
    parts.push(`prefix cache ${mib(q.prefix_cache_bytes ?? 0)} kept, ${hit} of prompt tokens hit`);
  }
  if (q.preemptions !== null) parts.push(`preemptions ${q.preemptions}`);
  return parts.length > 0 ? `scheduler: ${parts.join(', ')}` : null;
}

export async function runStats(flags: StatsFlags): Promise<void> {
  const apiKey = resolveApiKey(flags);
  if (flags.export !== undefined) {
    const stats = await fetchRoutingStats(flags.url, apiKey);
    try {
      fs.writeFileSync(flags.export, formatRoutingStats(stats));
    } catch (e) {
      throw new UserError(`--export ${flags.export}: cannot write it (${(e as NodeJS.ErrnoException).code ?? (e as Error).message})`);
    }
    process.stderr.write(`wrote ${flags.export}: ${stats.tokens} tokens, ${stats.pairs.length} (layer, expert) pairs, ${stats.nodes.length} node(s)\n`);
    return;
  }
  for (;;) {
    const s = await fetchStatus(flags.url, apiKey);
    if (flags.json) process.stdout.write(JSON.stringify(s) + '\n');
    else {
      const head = `${s.model.name} at ${flags.url}: ${s.model.layers} layers x ${s.model.experts} experts, experts ${s.experts_backend}, up ${s.uptime_s} s`;
      const queue = formatQueueLine(s.queue);
      process.stdout.write(`${head}\n${queue ? `${queue}\n` : ''}\n${formatLatencyTable(s, { maxExperts: flags.maxExperts })}\n`);
    }
    if (!flags.watch) return;
    await new Promise((r) => setTimeout(r, flags.watch! * 1000));
    if (!flags.json) process.stdout.write('\n');
  }
}
