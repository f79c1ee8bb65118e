// `turbosparse batch submit|status|results`: batch generation through the BullMQ queue.
//   submit FILE.jsonl        one request per line -> prints one job id per line
//   status ID...             state, tokens generated, attempts
//   results ID... [--out F]  waits (progress bar on stderr), then one JSON line per job
//                            (--format openai: OpenAI Batch API output lines)
// IDs may be given as @FILE or --ids-file FILE (one id per line) or - (stdin); an id
// that is not on the queue is a user error (exit 2).
// BullMQ, ioredis and the progress bar load inside the actions, so other commands start fast.
import fs from 'node:fs';
import type { SingleBar } from 'cli-progress';
import type { Command } from 'commander';
import { UserError } from '../core/errors';
import type { JobData } from '../coordinator/queue/job';
import type { GenerationProducer, JobStatus, ProducerOptions } from '../coordinator/queue/producer';
import { readJobLines } from './job-lines';
import { intOption } from './options';

interface CommonFlags {
  redis?: string;
  queue?: string;
}

function addCommon(cmd: Command): Command {
  return cmd
    .option('--redis <url>', 'Redis URL (default: $REDIS_URL or redis://127.0.0.1:6379)')
    .option('--queue <name>', 'queue name (default: generation)');
}

async function withProducer<T>(flags: CommonFlags, extra: Partial<ProducerOptions>, fn: (p: GenerationProducer) => Promise<T>): Promise<T> {
  const { checkRedis, connectRedis, redisUrlFrom } = await import('../coordinator/queue/connection');
  const { GenerationProducer } = await import('../coordinator/queue/producer');
  const url = redisUrlFrom(flags.redis);
  const connection = connectRedis(url, 'producer');
  connection.on('error', () => undefined); // reported by checkRedis / the failing command
  try {
    await checkRedis(connection, url);
    const producer = new GenerationProducer({ connection, queueName: flags.queue, ...extra });
    try {
      return await fn(producer);
    } finally {
      await producer.close();
    }
  } finally {
    connection.disconnect();
  }
}

/** Job ids from the arguments: ids, @FILE (one per line) or - (stdin), and --ids-file FILE. */
function readIds(args: string[], idsFile?: string): string[] {
  const ids: string[] = [];
  for (const a of [...args, ...(idsFile !== undefined ? [`@${idsFile}`] : [])]) {
    if (a === '-' || a.startsWith('@')) {
      const file = a === '-' ? 0 : a.slice(1);
      let text: string;
      try {
        text = fs.readFileSync(file, 'utf8');
      } catch (e) {
        throw new UserError(`${a}: cannot read job ids (${(e as NodeJS.ErrnoException).code ?? (e as Error).message})`);
      }
      ids.push(...text.split(/\s+/).filter(Boolean));
    } else ids.push(a);
  }
  if (ids.length === 0) throw new UserError('give at least one job id (or --ids-file FILE / @FILE with one id per line)');
  return ids;
}

/** Exit 2 with one line when an id is not on the queue: a typo or an expired result is not a result. */
function rejectUnknown(statuses: { id: string; state: string }[], queue: string): void {
  const unknown = statuses.filter((s) => s.state === 'unknown').map((s) => s.id);
  if (unknown.length === 0) return;
  const named = unknown.slice(0, 3).join(', ') + (unknown.length > 3 ? ` and ${unknown.length - 3} more` : '');
  throw new UserError(`unknown job id(s) on queue ${queue}: ${named} (never submitted there, or removed after the results TTL; see --queue/--redis)`);
}

/** Parses and validates every line first, so a bad line submits nothing. */
export async function readJobsFile(file: string): Promise<JobData[]> {
  const lines = await readJobLines(file, {
    cannotRead: (reason) => `${file}: cannot read (${reason})`,
    notJson: (where, reason) => `${where}: not valid JSON (${reason})`,
    noLines: `${file}: no requests (expected one JSON request per line)`,
  });
  return lines.map((l) => l.data);
}

export function registerBatch(program: Command): void {
  const batch = program.command('batch').description('batch generation jobs through Redis (BullMQ queue "generation")');

  addCommon(
    batch
      .command('submit')
      .description('submit one job per line of FILE.jsonl (a /v1/completions or /v1/chat/completions body); prints job ids')
      .argument('<file>', 'JSONL file: request bodies, optionally with "endpoint", or OpenAI Batch lines {"url", "body"}')
      .option('--attempts <n>', 'tries per job for transient failures', intOption('--attempts', 1), 5)
      .option('--backoff <ms>', 'first retry delay (doubles each retry)', intOption('--backoff', 1), 2000)
      .option('--results-ttl <s>', 'keep results this long', intOption('--results-ttl', 1), 86400),
  ).action(async (file: string, flags: CommonFlags & { attempts: number; backoff: number; resultsTtl: number }) => {
    const jobs = await readJobsFile(file);
    await withProducer(flags, { attempts: flags.attempts, backoffMs: flags.backoff, resultsTtlSeconds: flags.resultsTtl }, async (p) => {
      let existing = 0;
      let retried = 0;
      for (const data of jobs) {
        const r = await p.submit(data);
        if (r.existing) existing++;
        if (r.retried) retried++;
        process.stdout.write(`${r.id}\n`);
      }
      // Only new jobs count as submitted: an identical request already on the queue is that job.
      const again = existing ? `, ${existing} already there (the same request: not duplicated${retried ? `; ${retried} failed one(s) retried` : ''})` : '';
      process.stderr.write(`${jobs.length - existing} submitted to ${p.queue.name}${again}\n`);
    });
  });

  addCommon(
    batch
      .command('status')
      .description('show state, tokens generated and attempts of jobs')
      .argument('[ids...]', 'job ids, @FILE or -')
      .option('--ids-file <file>', 'job ids from FILE, one per line (what `batch submit` printed)')
      .option('--json', 'one JSON object per line'),
  ).action(async (args: string[], flags: CommonFlags & { json?: boolean; idsFile?: string }) => {
    const ids = readIds(args, flags.idsFile);
    await withProducer(flags, {}, async (p) => {
      const statuses = await p.status(ids);
      rejectUnknown(statuses, p.queue.name);
      for (const s of statuses) {
        process.stdout.write(
          flags.json
            ? JSON.stringify(s) + '\n'
            : `${s.id}  ${s.state.padEnd(9)}  ${String(s.progress).padStart(6)} tokens  ${s.attemptsMade} attempt(s)${s.failedReason ? `  ${s.failedReason}` : ''}\n`,
        );
      }
    });
  });

  addCommon(
    batch
      .command('results')
      .description('wait for jobs to finish (progress bar on stderr), then print one JSON line per job')
      .argument('[ids...]', 'job ids, @FILE or -')
      .option('--ids-file <file>', 'job ids from FILE, one per line (what `batch submit` printed)')
      .option('--format <format>', 'json: {id, custom_id, state, response|error} per job; openai: OpenAI Batch API output lines {id, custom_id, response: {status_code, request_id, body}, error}', 'json')
      .option('--out <file>', 'write the JSON lines here instead of stdout')
      .option('--no-wait', 'report now, without waiting for unfinished jobs'),
  ).action(async (args: string[], flags: CommonFlags & { out?: string; wait: boolean; idsFile?: string; format: string }) => {
    if (flags.format !== 'json' && flags.format !== 'openai') throw new UserError(`--format ${flags.format}: expected json or openai`);
    const ids = readIds(args, flags.idsFile);
    const { SingleBar } = await import('cli-progress');
    const { openaiBatchLine } = await import('../coordinator/queue/producer');
    await withProducer(flags, {}, async (p) => {
      let bar: SingleBar | null = null;
      // The first poll also checks the ids (one status read, not two): an unknown one exits before the bar.
      let checked = false;
      const onUpdate = (s: JobStatus[]) => {
        if (!checked) {
          checked = true;
          rejectUnknown(s, p.queue.name);
        }
        const done = s.filter((x) => x.state === 'completed' || x.state === 'failed' || x.state === 'unknown').length;
        const payload = { tokens: s.reduce((a, x) => a + x.progress, 0), failed: s.filter((x) => x.state === 'failed').length };
        if (!bar) {
          bar = new SingleBar({
            format: 'jobs {bar} {value}/{total} | {tokens} tokens generated | {failed} failed | {duration_formatted}',
            stream: process.stderr,
            hideCursor: true,
          });
          bar.start(s.length, done, payload);
        } else bar.update(done, payload);
      };
      let outcomes;
      try {
        outcomes = flags.wait ? await p.waitFor(ids, onUpdate) : await p.results(ids);
        if (!flags.wait) rejectUnknown(outcomes, p.queue.name);
      } finally {
        (bar as SingleBar | null)?.stop();
      }
      const lines = outcomes.map((o) => JSON.stringify(flags.format === 'openai' ? openaiBatchLine(o) : o)).join('\n') + '\n';
      if (flags.out) {
        fs.writeFileSync(flags.out, lines);
        process.stderr.write(`wrote ${outcomes.length} result(s) to ${flags.out}\n`);
      } else process.stdout.write(lines);
      const bad = outcomes.filter((o) => o.state !== 'completed');
      if (bad.length > 0) {
        process.stderr.write(`${bad.length} job(s) did not complete: ${bad.map((o) => `${o.id} (${o.state})`).join(', ')}\n`);
        process.exitCode = 1;
      }
    });
  });
}
