// The batch workflow end to end with real processes and a real Redis:
// `batch submit` -> `worker` processes -> `batch results`. A worker that gets
// SIGTERM hands its job back; a worker killed with -9 mid-job loses it to another
// worker after the stall interval, and the result is stored exactly once. Resubmitting adds
// nothing; results keep custom_id, --format openai, --ids-file; an unknown id is exit 2.
import { spawn, type ChildProcess } from 'node:child_process';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { Queue } from 'bullmq';
import type { Redis } from 'ioredis';
import { ChatTemplate } from '../../core/chat-template';
import { makeDemoModel } from '../../core/demo-model';
import { Registry } from '../../core/metrics';
import { TextTokenizer } from '../../core/tokenizer';
import { OpenAIApi } from '../../coordinator/api/openai-api';
import { connectRedis } from '../../coordinator/queue/connection';
import { GenerationWorker } from '../../coordinator/queue/worker';
import { Scheduler } from '../../coordinator/scheduler';
import { loadTestEngine, waitFor } from '../serve/helpers';
import { startRedis, uniqueQueue, type TestRedis } from './redis';

const ROOT = path.resolve(__dirname, '..', '..');
const DEMO = { layers: 2, hidden: 64, intermediate: 128, heads: 4, kvHeads: 2, experts: 4, topK: 2, vocab: 300, predictorRank: 16, shards: 1 };

/** The `turbosparse` CLI from the TypeScript sources. */
function cli(args: string[]): ChildProcess {
  const entry = `require(${JSON.stringify(path.join(ROOT, 'cli', 'main.ts'))}).main(['node', 'turbosparse', ...process.argv.slice(1)])`;
  return spawn(process.execPath, ['-r', path.join(ROOT, 'test', 'cluster', 'ts-register-cached.js'), '-e', entry, ...args], {
    cwd: ROOT,
    stdio: ['ignore', 'pipe', 'pipe'],
  });
}

async function run(args: string[]): Promise<{ code: number | null; stdout: string; stderr: string }> {
  const child = cli(args);
  children.push(child);
  let stdout = '';
  let stderr = '';
  child.stdout!.on('data', (d) => (stdout += d));
  child.stderr!.on('data', (d) => (stderr += d));
  const code = await new Promise<number | null>((r) => child.on('exit', r));
  return { code, stdout, stderr };
}

interface WorkerProc {
  child: ChildProcess;
  stderr: () => string;
  exited: Promise<number | null>;
}

async function startWorker(extra: string[] = []): Promise<WorkerProc> {
  const child = cli(['worker', '--model', dir, '--redis', redis.url, '--queue', queue, '--device', 'cpu', '--threads', '1',
    '--concurrency', '1', '--stalled-interval', '500', '--progress-interval', '50', ...extra]);
  children.push(child);
  let err = '';
  child.stderr!.on('data', (d) => (err += d));
  const exited = new Promise<number | null>((r) => child.on('exit', r));
  await waitFor(() => err.includes('worker: taking jobs') || child.exitCode !== null, 60000, 'the worker to start');
  if (child.exitCode !== null) throw new Error(`worker exited: ${err}`);
  return { child, stderr: () => err, exited };
}

let redis: TestRedis;
let dir: string;
let queue: string;
let conn: Redis;
let q: Queue;
const children: ChildProcess[] = [];

beforeAll(async () => {
  redis = await startRedis();
  dir = fs.mkdtempSync(path.join(os.tmpdir(), 'ts-batch-'));
  await makeDemoModel(path.join(dir), DEMO);
  queue = uniqueQueue('generation');
  conn = connectRedis(redis.url, 'producer');
  q = new Queue(queue, { connection: conn });
});
afterAll(async () => {
  const live = children.filter((c) => c.exitCode === null && c.signalCode === null);
  const exits = live.map((c) => new Promise((r) => c.once('exit', r)));
  for (const c of live) c.kill('SIGKILL');
  await Promise.all(exits);
  await q?.obliterate({ force: true }).catch(() => undefined);
  await q?.close();
  conn?.disconnect();
  await redis?.stop();
  fs.rmSync(dir, { recursive: true, force: true });
});

test('submit -> SIGTERM hands back -> kill -9 mid-job -> another worker completes it exactly once -> results', async () => {
  const long = { prompt: [1, 30, 31, 32], max_tokens: 2000, temperature: 0, ignore_eos: true, return_token_ids: true };
  const lines = [
    JSON.stringify(long),
    JSON.stringify({ endpoint: 'chat.completions', messages: [{ role: 'user', content: 'hi' }], max_tokens: 8, temperature: 0 }),
    JSON.stringify({ custom_id: 'x', method: 'POST', url: '/v1/completions', body: { prompt: 'abc', max_tokens: 5, temperature: 0 } }),
  ];
  const file = path.join(dir, 'requests.jsonl');
  fs.writeFileSync(file, lines.join('\n') + '\n');

  // A bad line submits nothing and names the line and field.
  const badFile = path.join(dir, 'bad.jsonl');
  fs.writeFileSync(badFile, lines[0] + '\n' + JSON.stringify({ prompt: 'x', top_p: 7 }) + '\n');
  const bad = await run(['batch', 'submit', badFile, '--redis', redis.url, '--queue', queue]);
  expect(bad.code).toBe(2);
  expect(bad.stderr).toMatch(/bad\.jsonl:2: top_p: /);

  // Submit and start two worker processes at once (process start-up dominates this test).
  const [sub, w1, w2] = await Promise.all([
    run(['batch', 'submit', file, '--redis', redis.url, '--queue', queue, '--backoff', '100']),
    startWorker(['--grace-period', '0.3']),
    startWorker(['--grace-period', '0.3']),
  ]);
  expect(sub.code).toBe(0);
  const ids = sub.stdout.trim().split('\n');
  expect(ids).toHaveLength(3);
  const idsFile = path.join(dir, 'ids.txt');
  fs.writeFileSync(idsFile, sub.stdout);
  const longId = ids[0];
  const started = (w: WorkerProc) => w.stderr().split(`job ${longId} started`).length - 1;
  const progress = async () => ((await q.getJob(longId))?.progress as number) ?? 0;

  // SIGTERM with a short grace period: the worker hands the long job back, unharmed...
  await waitFor(async () => started(w1) + started(w2) === 1 && (await progress()) > 0, 30000, 'a worker to make progress on the long job');
  const [a, b] = started(w1) === 1 ? [w1, w2] : [w2, w1];
  a.child.kill('SIGTERM');
  expect(await a.exited).toBe(0);
  expect(a.stderr()).toMatch(/released back to the queue/);
  // ...and the other worker takes it at once (no stall wait): kill -9 it in the middle of the job.
  await waitFor(() => started(b) === 1, 30000, 'the other worker to take the long job');
  const handedBackAt = await progress();
  await waitFor(async () => (await q.getJobState(longId)) === 'active', 30000, 'the job to be active');
  // Mid-job: as soon as b reports progress of its own (it counts from 0 again); the 2000 tokens
  // take over a second even on a fast machine.
  await waitFor(async () => (await progress()) !== handedBackAt, 30000, 'the other worker to make progress');
  b.child.kill('SIGKILL');
  await b.exited;
  expect(await q.getJobState(longId)).toBe('active'); // still locked by the dead worker

  // Another worker (this process, sharing the engine the reference run uses below) takes over.
  const engine = await loadTestEngine(dir);
  const tok = TextTokenizer.fromModel(engine.folder);
  const scheduler = new Scheduler(engine, tok, { metrics: new Registry() });
  const api = new OpenAIApi({ scheduler, tokenizer: tok, modelName: path.basename(dir), chatTemplate: ChatTemplate.fromModel(dir, engine.folder.tokenizerConfig) });
  const c = new GenerationWorker({ connection: connectRedis(redis.url, 'worker'), api, queueName: queue, stalledIntervalMs: 500, log: () => undefined });
  try {
    const res = await run(['batch', 'results', `@${idsFile}`, '--redis', redis.url, '--queue', queue, '--out', path.join(dir, 'out.jsonl')]);
    expect(res.code).toBe(0);
    const outcomes = fs.readFileSync(path.join(dir, 'out.jsonl'), 'utf8').trim().split('\n').map((l) => JSON.parse(l));
    expect(outcomes.map((o) => o.state)).toEqual(['completed', 'completed', 'completed']);
    expect(outcomes.map((o) => o.id)).toEqual(ids);
    expect(outcomes[1].response.object).toBe('chat.completion');
    expect(outcomes[2].response.object).toBe('text_completion');
    expect(outcomes[2].custom_id).toBe('x'); // an OpenAI Batch line's custom_id stays with its job

    // Submitting the same file again adds nothing, and says so; --format openai and --ids-file;
    // an id that is not on the queue is exit 2 with one line.
    const [again, openai, unknown] = await Promise.all([
      run(['batch', 'submit', file, '--redis', redis.url, '--queue', queue]),
      run(['batch', 'results', '--ids-file', idsFile, '--format', 'openai', '--no-wait', '--redis', redis.url, '--queue', queue]),
      run(['batch', 'status', ids[0], 'nosuchjob', '--redis', redis.url, '--queue', queue]),
    ]);
    expect(again.stderr).toBe(`0 submitted to ${queue}, 3 already there (the same request: not duplicated)\n`);
    expect(again.stdout).toBe(sub.stdout);
    expect(openai.code).toBe(0);
    const lines = openai.stdout.trim().split('\n').map((l) => JSON.parse(l));
    expect(lines.map((l) => l.custom_id)).toEqual([null, null, 'x']);
    expect(lines[2]).toMatchObject({ id: `batch_req_${ids[2]}`, response: { status_code: 200, request_id: ids[2], body: { object: 'text_completion' } }, error: null });
    expect(unknown.code).toBe(2);
    expect(unknown.stderr.trim().split('\n')).toEqual([expect.stringMatching(/unknown job id\(s\) on queue .*: nosuchjob /)]);
    expect(unknown.stdout).toBe('');

    // Stored exactly once: one "completed" event for the job, and its result equals a fresh run.
    const events = await conn.xrange(`bull:${queue}:events`, '-', '+');
    const completed = events.filter(([, f]) => f[f.indexOf('event') + 1] === 'completed' && f[f.indexOf('jobId') + 1] === longId);
    expect(completed).toHaveLength(1);
    const job = (await q.getJob(longId))!;
    expect(job.stalledCounter).toBe(1);
    expect(job.progress).toBe(2000);
    const ref: any = await api.run(api.prepare('completions', long));
    expect(outcomes[0].response.choices[0].token_ids).toEqual(ref.choices[0].token_ids);
    expect(outcomes[0].response.choices[0].text).toBe(ref.choices[0].text);
  } finally {
    await c.close();
    c.opts.connection.disconnect();
    await scheduler.close();
    await engine.close();
  }
}, 180000);
