// `turbosparse stats --url URL`: the per-expert latency table (p50/p99 per node
// and per expert, hottest experts) of a running coordinator, read from its status
// JSON (GET /status.json), the same table `generate` and `demo` print at the end.
import type { Command } from 'commander';
import { UserError } from '../core/errors';
import { formatLatencyTable } from '../coordinator/telemetry/latency-table';
import type { StatusJson } from '../coordinator/telemetry/status';
import { resolveApiKey, type ApiKeyFlags } from './api-key';
import { intOption } from './options';

interface StatsFlags extends ApiKeyFlags {
  url: string;
  json?: boolean;
  watch?: number;
  maxExperts: number;
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
    .action(async (flags: StatsFlags) => {
      await runStats(flags);
    });
}

/** GET the status JSON of the coordinator at `base` (its /status.json; /v1/status with an API key). */
export async function fetchStatus(base: string, apiKey?: string): Promise<StatusJson> {
  let root: URL;
  try {
    root = new URL(base.endsWith('/') ? base : `${base}/`);
  } catch {
    throw new UserError(`--url ${base} is not a URL; use e.g. http://127.0.0.1:8000`);
  }
  if (root.protocol !== 'http:' && root.protocol !== 'https:') throw new UserError(`--url ${base}: use an http:// or https:// URL`);
  const url = new URL(apiKey ? 'v1/status' : 'status.json', root);
  let res: Response;
  try {
    res = await fetch(url, { headers: apiKey ? { authorization: `Bearer ${apiKey}` } : {}, signal: AbortSignal.timeout(10_000) });
  } catch (e) {
    const cause = (e as { cause?: { code?: string; message?: string } }).cause;
    throw new UserError(`cannot reach ${url.href} (${cause?.code ?? cause?.message ?? (e as Error).message}): is \`turbosparse serve\` running there?`);
  }
  if (res.status === 401) {
    const refused = apiKey ? '; the key given was refused' : '';
    throw new UserError(`${url.href} needs an API key: pass --api-key KEY or --api-key-file FILE (or set TURBOSPARSE_API_KEY)${refused}`);
  }
  if (!res.ok) throw new UserError(`${url.href} answered HTTP ${res.status}: is this a turbosparse coordinator (turbosparse serve)?`);
  let body: unknown;
  try {
    body = await res.json();
  } catch {
    throw new UserError(`${url.href} did not answer JSON: is this a turbosparse coordinator?`);
  }
  const s = body as Partial<StatusJson>;
  if (typeof s.version !== 'number' || !Array.isArray(s.nodes) || !Array.isArray(s.experts)) {
    throw new UserError(`${url.href} did not answer a turbosparse status (no version/nodes/experts): is this a turbosparse coordinator?`);
  }
  return s as StatusJson;
}

export async function runStats(flags: StatsFlags): Promise<void> {
  const apiKey = resolveApiKey(flags);
  for (;;) {
    const s = await fetchStatus(flags.url, apiKey);
    if (flags.json) process.stdout.write(JSON.stringify(s) + '\n');
    else {
      const head = `${s.model.name} at ${flags.url}: ${s.model.layers} layers x ${s.model.experts} experts, experts ${s.experts_backend}, up ${s.uptime_s} s`;
      process.stdout.write(`${head}\n\n${formatLatencyTable(s, { maxExperts: flags.maxExperts })}\n`);
    }
    if (!flags.watch) return;
    await new Promise((r) => setTimeout(r, flags.watch! * 1000));
    if (!flags.json) process.stdout.write('\n');
  }
}
