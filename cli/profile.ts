// `turbosparse profile --model DIR --prompts FILE.jsonl --out routing.json`: runs
// prompts through the engine with in-process experts (the same scheduler and
// OpenAI-API path `serve` uses) and writes the routing statistics they produce:
// routes and active neurons per (layer, expert), in-process expert latency. A shard
// map can then be planned before any server runs (shard-map --routing, plan).
//
// Prompt lines: {"prompt": "..."} (completions), {"messages": [...]} (chat, through
// the model's chat template), or any `batch submit` line (a request body, optionally
// with "endpoint", or an OpenAI Batch line {"url", "body"}), so the prompts users
// serve can be profiled as they are.
import fs from 'node:fs';
import type { Command } from 'commander';
import { UserError } from '../core/errors';
import { formatRoutingStats, routedShares, type RoutingStats } from '../core/placement/routing-stats';
import type { JobData } from '../coordinator/queue/job';
import { readJobLines, type JobLine } from './job-lines';
import { addKernelOptions, intOption } from './options';
import { checkOutputFile } from './output-file';
import type { ServingFlags } from './serving';

export interface ProfileFlags {
  model: string;
  prompts: string;
  out: string;
  maxTokens: number;
  concurrency: number;
  device: ServingFlags['device'];
  threads: number;
  weights: ServingFlags['weights'];
  dense?: boolean;
}

/** Fields of a served request that do not change what the model computes, dropped here. */
const IGNORED_FIELDS = ['model', 'stream', 'stream_options', 'user', 'metadata', 'custom_id'];

export function registerProfile(program: Command): void {
  const cmd = program
    .command('profile')
    .description('run prompts through the model (experts in process) and write their routing statistics (routing.json)')
    .requiredOption('--model <dir>', 'Hugging Face model folder')
    .requiredOption('--prompts <file>', 'JSONL: {"prompt": ...}, {"messages": [...]} or `batch submit` lines')
    .requiredOption('--out <file>', 'routing.json to write')
    .option('--max-tokens <n>', 'tokens generated per prompt at most (a line\'s own max_tokens when smaller)', intOption('--max-tokens', 1), 64)
    .option('--concurrency <c>', 'prompts generated at once (one continuous batch)', intOption('--concurrency', 1), 4);
  addKernelOptions(cmd, 'dense-with-mask expert FFN (same tokens; every neuron counts as active)');
  cmd.action(async (flags: ProfileFlags) => {
    await runProfile(flags);
  });
}

/** Every line of the prompts file as a request body with its endpoint; `file:line` in every error. */
export async function readPromptLines(file: string): Promise<JobLine[]> {
  const expected = 'expected {"prompt": "..."} or {"messages": [...]}';
  return readJobLines(file, {
    cannotRead: (reason) => `--prompts ${file}: cannot read it (${reason})`,
    notJson: (where, reason) => `${where}: not valid JSON (${reason}); ${expected}`,
    noLines: `--prompts ${file}: no prompts (expected one JSON object per line)`,
    check: (v, where) =>
      typeof v === 'object' && v !== null && !Array.isArray(v) && !('url' in v) && !('prompt' in v) && !('messages' in v)
        ? `${where}: no "prompt" or "messages"; ${expected}`
        : undefined,
  });
}

/** The body with at most `maxTokens` generated and nothing that only matters to a client. */
function capped(data: JobData, maxTokens: number): JobData {
  const body: JobData = { ...data };
  for (const k of IGNORED_FIELDS) delete body[k];
  const own = [body.max_tokens, body.max_completion_tokens].find((v): v is number => typeof v === 'number');
  delete body.max_completion_tokens;
  body.max_tokens = own === undefined ? maxTokens : Math.min(own, maxTokens);
  return body;
}

export async function runProfile(flags: ProfileFlags): Promise<RoutingStats> {
  // File mistakes are one line before the model loads.
  const lines = await readPromptLines(flags.prompts);
  checkOutputFile('--out', flags.out, 'routing.json');
  const { loadServing } = await import('./serving');
  const { OpenAIApi } = await import('../coordinator/api/openai-api');
  const { ApiError } = await import('../coordinator/api/errors');
  const { buildRoutingStats } = await import('../coordinator/telemetry/routing-route');
  const log = (line: string) => process.stderr.write(line + '\n');
  const serving = await loadServing({
    model: flags.model,
    experts: 'local',
    device: flags.device,
    threads: flags.threads,
    weights: flags.weights,
    dense: flags.dense,
    kvBudgetMb: 4096,
    kvGrowTokens: 256,
    // Every prompt token goes through the routers (a cached prefix would skip them).
    prefixCache: false,
    maxQueue: flags.concurrency,
    maxRunning: flags.concurrency,
    prefillChunk: 256,
  }, log);
  try {
    const api = new OpenAIApi({ scheduler: serving.scheduler, tokenizer: serving.tokenizer, modelName: serving.modelName, chatTemplate: serving.chatTemplate });
    // Validated and tokenized first: a bad line fails before any generation.
    const prepared = lines.map(({ where, data }) => {
      try {
        return api.prepare(data.endpoint, capped(data, flags.maxTokens));
      } catch (e) {
        if (e instanceof ApiError) throw new UserError(`${where}: ${e.message}`);
        throw e;
      }
    });
    const t0 = performance.now();
    let next = 0;
    let generated = 0;
    const worker = async () => {
      while (next < prepared.length) {
        const p = prepared[next++];
        const res = (await api.run(p)) as { usage?: { completion_tokens?: number } };
        generated += res.usage?.completion_tokens ?? 0;
      }
    };
    await Promise.all(Array.from({ length: Math.min(flags.concurrency, prepared.length) }, worker));
    const stats = buildRoutingStats(serving.observability, 'profile');
    fs.writeFileSync(flags.out, formatRoutingStats(stats));
    const seconds = (performance.now() - t0) / 1000;
    log(`profiled ${prepared.length} prompt(s) in ${seconds.toFixed(1)} s: ${stats.tokens} tokens through every layer's router ` +
      `(${generated} generated); wrote ${flags.out}`);
    log(hottestLine(stats));
    return stats;
  } finally {
    await serving.close();
  }
}

/** Per layer, the hottest expert's share of routes over the mean share: how skewed the routing is. */
export function routingSkew(stats: RoutingStats): { layer: number; expert: number; share: number; ratio: number }[] {
  return routedShares(stats).map((row, layer) => {
    let expert = 0;
    for (let e = 1; e < row.length; e++) if (row[e] > row[expert]) expert = e;
    return { layer, expert, share: row[expert], ratio: row[expert] * row.length };
  });
}

function hottestLine(stats: RoutingStats): string {
  const skew = routingSkew(stats);
  const cells = skew.map((s) => `L${s.layer} e${s.expert} ${s.ratio.toFixed(2)}x`);
  return `hottest expert per layer (share of routes / mean share): ${cells.join(', ')}`;
}
