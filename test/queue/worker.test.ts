// Batch jobs through BullMQ against a real Redis: a job's return value is the
// endpoint's response, progress counts tokens, ids dedupe, bad input fails at
// once, transient failures retry with backoff, shutdown finishes or hands back.
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { Queue } from 'bullmq';
import { Rng } from '../../coordinator/sampler';
import type { Redis } from 'ioredis';
import { makeDemoModel } from '../../core/demo-model';
import type { ExpertBackend } from '../../core/expert-backend';
import { Registry } from '../../core/metrics';
import { TextTokenizer } from '../../core/tokenizer';
import { ChatTemplate } from '../../core/chat-template';
import { Engine } from '../../coordinator/engine';
import { OpenAIApi } from '../../coordinator/api/openai-api';
import { Scheduler } from '../../coordinator/scheduler';
import { connectRedis } from '../../coordinator/queue/connection';
import { jobIdFor, type JobData } from '../../coordinator/queue/job';
import { GenerationProducer } from '../../coordinator/queue/producer';
import { GenerationWorker, lockDurationFor, minLockDurationMs, type GenerationWorkerOptions } from '../../coordinator/queue/worker';
import { mutatedBody } from '../helpers/hostile-bodies';
import { loadTestEngine, waitFor } from '../serve/helpers';
import { startRedis, uniqueQueue, type TestRedis } from './redis';

const DEMO = { layers: 2, hidden: 64, intermediate: 128, heads: 4, kvHeads: 2, experts: 4, topK: 2, vocab: 300, predictorRank: 16, shards: 1 };

let redis: TestRedis;
let dir: string;
let engine: Engine;
let tok: TextTokenizer;
const conns: Redis[] = [];
const closers: (() => Promise<void>)[] = [];

beforeAll(async () => {
  redis = await startRedis();
  dir = fs.mkdtempSync(path.join(os.tmpdir(), 'ts-queue-'));
  await makeDemoModel(dir, DEMO);
  engine = await loadTestEngine(dir);
  tok = TextTokenizer.fromModel(engine.folder);
});
afterEach(async () => {
  for (const c of closers.splice(0).reverse()) await c();
});
afterAll(async () => {
  for (const c of conns) c.disconnect();
  await engine?.close();
  await redis?.stop();
  fs.rmSync(dir, { recursive: true, force: true });
});

function conn(role: 'producer' | 'worker'): Redis {
  const c = connectRedis(redis.url, role);
  conns.push(c);
  return c;
}

function apiOn(e: Engine = engine): { api: OpenAIApi; scheduler: Scheduler } {
  const scheduler = new Scheduler(e, tok, { metrics: new Registry() });
  const api = new OpenAIApi({ scheduler, tokenizer: tok, modelName: 'demo', chatTemplate: ChatTemplate.fromModel(dir, engine.folder.tokenizerConfig) });
  closers.push(() => scheduler.close());
  return { api, scheduler };
}

function setup(queueName: string, opts: Partial<GenerationWorkerOptions> = {}, e?: Engine) {
  const { api, scheduler } = apiOn(e);
  const worker = new GenerationWorker({ connection: conn('worker'), api, queueName, progressIntervalMs: 10, log: () => undefined, ...opts });
  const producer = new GenerationProducer({ connection: conn('producer'), queueName, backoffMs: 50 });
  closers.push(async () => {
    await worker.close();
    await producer.queue.obliterate({ force: true });
    await producer.close();
  });
  return { worker, producer, api, scheduler };
}

/** The test engine with every expert call taking >= 3 ms, so that jobs overlap and are
 *  still running when a test acts on them, however fast the machine (the tiny demo
 *  model alone decodes 20 tokens in ~10 ms). */
function slowEngine(): Engine {
  const slow: ExpertBackend = {
    name: 'slow',
    runExperts: async (b, c) => {
      await new Promise((r) => setTimeout(r, 3));
      return engine.experts.runExperts(b, c);
    },
    close: async () => undefined,
  };
  return new Engine(engine.folder, engine.backend, engine.weights, slow);
}

/** What the HTTP endpoint answers for this body, minus the per-response id and time. */
async function direct(api: OpenAIApi, data: JobData): Promise<any> {
  return strip(await api.run(api.prepare(data.endpoint, data)));
}
function strip(r: any): any {
  const { id: _id, created: _c, ...rest } = r;
  return rest;
}

test('completions and chat jobs return the endpoint response; progress is tokens; C jobs share decode steps', async () => {
  const q = uniqueQueue('gen');
  const { worker, producer, api, scheduler } = setup(q, { concurrency: 4 }, slowEngine());
  await worker.waitUntilReady();
  let maxRunning = 0;
  scheduler.onStep = (s) => (maxRunning = Math.max(maxRunning, s.running));
  const jobs: JobData[] = [
    { endpoint: 'completions', prompt: 'the cluster', max_tokens: 16, temperature: 0, ignore_eos: true, return_token_ids: true },
    { endpoint: 'completions', prompt: [1, 40, 41, 42], max_tokens: 16, temperature: 0.7, seed: 3, ignore_eos: true },
    { endpoint: 'chat.completions', messages: [{ role: 'user', content: 'hello' }], max_tokens: 16, temperature: 0, ignore_eos: true },
    { endpoint: 'completions', prompt: ['a', 'b'], n: 2, max_tokens: 16, temperature: 0, ignore_eos: true },
  ];
  const ids = [];
  for (const j of jobs) ids.push((await producer.submit(j)).id);
  const out = await producer.waitFor(ids, undefined, 50);
  expect(out.map((o) => o.state)).toEqual(['completed', 'completed', 'completed', 'completed']);
  expect(maxRunning).toBeGreaterThanOrEqual(4);
  scheduler.onStep = null;
  for (let i = 0; i < jobs.length; i++) expect(strip(out[i].response)).toEqual(await direct(api, jobs[i]));
  expect((out[2].response as any).object).toBe('chat.completion');
  const status = await producer.status(ids);
  expect(status.map((s) => s.progress)).toEqual([16, 16, 16, 64]);
});

test('the job id is a hash of the request: resubmitting (any key order) does not duplicate work', async () => {
  const q = uniqueQueue('dedupe');
  const producer = new GenerationProducer({ connection: conn('producer'), queueName: q });
  closers.push(async () => {
    await producer.queue.obliterate({ force: true });
    await producer.close();
  });
  const a: JobData = { endpoint: 'completions', prompt: 'x', max_tokens: 2, temperature: 0 };
  const b = { temperature: 0, max_tokens: 2, prompt: 'x', endpoint: 'completions' } as JobData;
  const r1 = await producer.submit(a);
  const r2 = await producer.submit(b);
  expect(r1).toEqual({ id: jobIdFor(a), existing: false, retried: false });
  expect(r2).toEqual({ id: r1.id, existing: true, retried: false });
  // A producer's trace context rides along but is not part of the request.
  expect(jobIdFor({ ...a, trace_context: { traceparent: '00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01' } })).toBe(r1.id);
  expect(jobIdFor({ ...a, max_tokens: 3 })).not.toBe(r1.id);
  expect(await producer.queue.getJobCounts('waiting', 'active', 'completed')).toEqual({ waiting: 1, active: 0, completed: 0 });
});

test('bad input from a plain BullMQ producer fails at once with the validation message, no retries', async () => {
  const q = uniqueQueue('bad');
  const { worker, producer } = setup(q);
  await worker.waitUntilReady();
  const plain = new Queue(q, { connection: conn('producer') });
  closers.push(() => plain.close());
  const job = await plain.add('x', { endpoint: 'completions', prompt: 'hi', temperature: 'hot' }, { attempts: 5, backoff: { type: 'exponential', delay: 10 } });
  const ctx = await plain.add('y', { endpoint: 'completions', prompt: Array(5000).fill(3) }, { attempts: 5 });
  const bad = await plain.add('z', { endpoint: 'embeddings', input: 'hi' }, { attempts: 5 });
  const [s1, s2, s3] = (await producer.waitFor([job.id!, ctx.id!, bad.id!], undefined, 50)).map((o) => o);
  expect(s1).toEqual(expect.objectContaining({ state: 'failed', error: expect.stringMatching(/^temperature: /) }));
  expect(s2).toEqual(expect.objectContaining({ state: 'failed', error: expect.stringMatching(/maximum context length/) }));
  expect(s3).toEqual(expect.objectContaining({ state: 'failed', error: expect.stringMatching(/endpoint must be/) }));
  const st = await producer.status([job.id!, ctx.id!, bad.id!]);
  expect(st.map((s) => s.attemptsMade)).toEqual([1, 1, 1]);
});

test('a transient failure (expert node down) is retried with exponential backoff and then succeeds', async () => {
  const q = uniqueQueue('retry');
  let failures = 2;
  const flaky: ExpertBackend = {
    name: 'flaky',
    runExperts: (b, c) => (failures-- > 0 ? Promise.reject(new Error('expert node 127.0.0.1:1 unavailable')) : engine.experts.runExperts(b, c)),
    close: async () => undefined,
  };
  const { worker, producer } = setup(q, {}, new Engine(engine.folder, engine.backend, engine.weights, flaky));
  await worker.waitUntilReady();
  const failedAttempts: number[] = [];
  worker.worker.on('failed', (_j, _e) => failedAttempts.push(Date.now()));
  const t0 = Date.now();
  const { id } = await producer.submit({ endpoint: 'completions', prompt: 'x', max_tokens: 3, temperature: 0 });
  const [o] = await producer.waitFor([id], undefined, 20);
  expect(o.state).toBe('completed');
  expect((await producer.status([id]))[0].attemptsMade).toBe(3); // two failed tries + the one that completed
  expect(failedAttempts).toHaveLength(2);
  // Backoff 50 ms then 100 ms.
  expect(Date.now() - t0).toBeGreaterThanOrEqual(150);
});

test('a plain producer that set no attempts still gets retries with backoff; attempts: 1 means none', async () => {
  const q = uniqueQueue('plainretry');
  let failures = 2;
  const flaky: ExpertBackend = {
    name: 'flaky',
    runExperts: (b, c) => (failures-- > 0 ? Promise.reject(new Error('expert node 127.0.0.1:1 unavailable')) : engine.experts.runExperts(b, c)),
    close: async () => undefined,
  };
  const { worker, producer } = setup(q, { defaultAttempts: 3, defaultBackoffMs: 50 }, new Engine(engine.folder, engine.backend, engine.weights, flaky));
  await worker.waitUntilReady();
  const plain = new Queue(q, { connection: conn('producer') });
  closers.push(() => plain.close());
  const t0 = Date.now();
  const job = await plain.add('completions', { endpoint: 'completions', prompt: 'x', max_tokens: 3, temperature: 0 });
  const [o] = await producer.waitFor([job.id!], undefined, 20);
  expect(o.state).toBe('completed');
  expect((await plain.getJob(job.id!))!.attemptsStarted).toBe(3);
  // The worker's two retries count as attempts, as BullMQ's own retries do (see the test above).
  expect((await producer.status([job.id!]))[0].attemptsMade).toBe(3);
  expect(Date.now() - t0).toBeGreaterThanOrEqual(150); // 50 ms, then 100 ms
  // Out of tries: the third failure fails the job with the error.
  failures = 3;
  const again = await plain.add('completions', { endpoint: 'completions', prompt: 'y', max_tokens: 3, temperature: 0 });
  const [o2] = await producer.waitFor([again.id!], undefined, 20);
  expect(o2).toEqual(expect.objectContaining({ state: 'failed', error: expect.stringMatching(/unavailable/) }));
  expect((await plain.getJob(again.id!))!.attemptsStarted).toBe(3);
  expect((await producer.status([again.id!]))[0].attemptsMade).toBe(3);
  // A producer that asked for one attempt gets exactly one.
  failures = 1;
  const once = await plain.add('completions', { endpoint: 'completions', prompt: 'z', max_tokens: 3, temperature: 0 }, { attempts: 1 });
  const [o3] = await producer.waitFor([once.id!], undefined, 20);
  expect(o3.state).toBe('failed');
  expect((await plain.getJob(once.id!))!.attemptsStarted).toBe(1);
});

/**
 * The test engine behind a script of its next expert calls: 'fail' throws as an unreachable
 * node would, 'hold' waits until release() (`held` resolves when it waits); then normal calls.
 */
function scriptedEngine(...script: ('fail' | 'hold')[]): { engine: Engine; script: ('fail' | 'hold')[]; held: Promise<void>; release: () => void } {
  let reached!: () => void;
  let release!: () => void;
  const held = new Promise<void>((r) => (reached = r));
  const released = new Promise<void>((r) => (release = r));
  const scripted: ExpertBackend = {
    name: 'scripted',
    runExperts: async (b, c) => {
      const next = script.shift();
      if (next === 'fail') throw new Error('expert node 127.0.0.1:1 unavailable');
      if (next === 'hold') {
        reached();
        await released;
      }
      return engine.experts.runExperts(b, c);
    },
    close: async () => undefined,
  };
  return { engine: new Engine(engine.folder, engine.backend, engine.weights, scripted), script, held, release };
}

test('batch status shows the attempts while the worker retries a plain producer\'s job', async () => {
  const q = uniqueQueue('plainstatus');
  // A failing try makes one expert call: the first two tries fail, the third waits at its first call.
  const s = scriptedEngine('fail', 'fail', 'hold');
  const { worker, producer } = setup(q, { defaultAttempts: 5, defaultBackoffMs: 10 }, s.engine);
  await worker.waitUntilReady();
  const plain = new Queue(q, { connection: conn('producer') });
  closers.push(() => plain.close());
  const job = await plain.add('completions', { endpoint: 'completions', prompt: 'x', max_tokens: 3, temperature: 0 });
  await s.held;
  try {
    const during = (await producer.status([job.id!]))[0];
    expect(during.state).toBe('active');
    expect(during.attemptsMade).toBe(2); // two tries ended in the worker's retries
    expect((await plain.getJob(job.id!))!.attemptsMade).toBe(0); // which BullMQ does not count
  } finally {
    s.release(); // also when an assertion fails: the held job would keep the worker from closing
  }
  const [o] = await producer.waitFor([job.id!], undefined, 20);
  expect(o.state).toBe('completed');
  expect((await producer.status([job.id!]))[0].attemptsMade).toBe(3);
});

test('a job handed back at shutdown has not used up the worker\'s retries of a plain producer\'s job', async () => {
  const q = uniqueQueue('handback');
  // One retry allowed: the hand-back must not count as the first try.
  const opts = { defaultAttempts: 2, defaultBackoffMs: 10 };
  const s = scriptedEngine('hold');
  const a = setup(q, opts, s.engine);
  let signal: AbortSignal | undefined;
  const run = a.api.run.bind(a.api);
  a.api.run = (p, o) => {
    signal = o?.signal;
    return run(p, o);
  };
  await a.worker.waitUntilReady();
  const plain = new Queue(q, { connection: conn('producer') });
  closers.push(() => plain.close());
  const job = await plain.add('completions', { endpoint: 'completions', prompt: 'x', max_tokens: 3, temperature: 0 });
  await s.held; // running on worker a, inside its first step
  const stopped = a.worker.shutdown(0);
  // The grace period is over once the job's run is aborted; only then may its step finish.
  await new Promise<void>((r) => (signal!.aborted ? r() : signal!.addEventListener('abort', () => r(), { once: true })));
  s.release();
  await stopped;
  expect((await a.producer.status([job.id!]))[0]).toEqual(expect.objectContaining({ state: 'waiting', attemptsMade: 0 }));
  expect((await plain.getJob(job.id!))!.attemptsStarted).toBe(1);

  // Another worker: its first try fails, its one retry completes.
  s.script.push('fail');
  const b = setup(q, opts, s.engine);
  const [o] = await b.producer.waitFor([job.id!], undefined, 20);
  expect(o.state).toBe('completed');
  expect((await plain.getJob(job.id!))!.attemptsStarted).toBe(3);
  expect((await b.producer.status([job.id!]))[0].attemptsMade).toBe(2); // the retry and the completed try
});

test('shutdown finishes a job within the grace period, and hands back one that would take longer', async () => {
  const q = uniqueQueue('term');

  const a = setup(q, {}, slowEngine());
  await a.worker.waitUntilReady();
  const started = new Promise((r) => a.worker.worker.once('active', r)); // listening before the job exists
  const short = await a.producer.submit({ endpoint: 'completions', prompt: 'a', max_tokens: 20, temperature: 0, ignore_eos: true });
  await started;
  await a.worker.shutdown(30000);
  expect((await a.producer.status([short.id]))[0].state).toBe('completed');

  const b = setup(q, {}, slowEngine());
  await b.worker.waitUntilReady();
  const long = await b.producer.submit({ endpoint: 'completions', prompt: 'b', max_tokens: 4000, temperature: 0, ignore_eos: true });
  await waitFor(async () => (await b.producer.status([long.id]))[0].progress > 0, 10000, 'the long job to make progress');
  const t0 = Date.now();
  await b.worker.shutdown(200);
  expect(Date.now() - t0).toBeLessThan(5000);
  const s = (await b.producer.status([long.id]))[0];
  expect(s.state).toBe('waiting');
  expect(s.failedReason).toBeUndefined();
  expect(b.scheduler.stats.kvBytes).toBe(0);

  // Another worker picks it up and completes it.
  const c = setup(q);
  const [o] = await c.producer.waitFor([long.id], undefined, 50);
  expect(o.state).toBe('completed');
  expect((o.response as any).usage.completion_tokens).toBe(4000);
}, 60000);

test('results are kept for the results TTL, then removed', async () => {
  const q = uniqueQueue('ttl');
  const { worker } = setup(q);
  await worker.waitUntilReady();
  const producer = new GenerationProducer({ connection: conn('producer'), queueName: q, resultsTtlSeconds: 1 });
  closers.push(() => producer.close());
  const a = await producer.submit({ endpoint: 'completions', prompt: 'ttl a', max_tokens: 2, temperature: 0 });
  const [oa] = await producer.waitFor([a.id], undefined, 20);
  expect(oa.state).toBe('completed');
  expect((await producer.results([a.id]))[0].response).toEqual(expect.objectContaining({ object: 'text_completion' }));
  // BullMQ drops completed jobs older than the TTL when a later job of the queue completes.
  await new Promise((r) => setTimeout(r, 1500));
  const b = await producer.submit({ endpoint: 'completions', prompt: 'ttl b', max_tokens: 2, temperature: 0 });
  await producer.waitFor([b.id], undefined, 20);
  expect((await producer.results([a.id]))[0]).toEqual(expect.objectContaining({ state: 'unknown' }));
  expect((await producer.results([b.id]))[0].state).toBe('completed');
  // Resubmitting the expired request runs it again (a new job under the same id).
  expect(await producer.submit({ endpoint: 'completions', prompt: 'ttl a', max_tokens: 2, temperature: 0 })).toEqual({ id: a.id, existing: false, retried: false });
});

test('--lock-duration must outlive a Redis outage shorter than --stalled-interval; by default it does', () => {
  expect(lockDurationFor(30000)).toBe(minLockDurationMs(30000));
  expect(minLockDurationMs(30000)).toBeGreaterThanOrEqual(2 * 30000);
  expect(lockDurationFor(500, 10000)).toBe(10000);
  // The old defaults (30 s each): an outage of 20 s could expire a running job's lock.
  expect(() => lockDurationFor(30000, 30000)).toThrow(/--lock-duration 30000 is too short for --stalled-interval 30000.*at least 63000/);
});

// Redis stopped with SIGSTOP (its clock, and so the locks' expiry, runs on; clients' commands wait).
const outageTest = process.env.REDIS_URL ? test.skip : test;

async function redisAway(ms: number): Promise<void> {
  process.kill(redis.pid!, 'SIGSTOP');
  try {
    await new Promise((r) => setTimeout(r, ms));
  } finally {
    process.kill(redis.pid!, 'SIGCONT');
  }
}

/** Two workers on one queue, their log lines, and the job's record after it completed. */
async function outage(stalledIntervalMs: number, maxTokens: number, awayMs: number) {
  const q = uniqueQueue('outage');
  const lines: string[] = [];
  const opts = { stalledIntervalMs, log: (l: string) => lines.push(l) };
  const a = setup(q, opts, slowEngine());
  const b = setup(q, opts, slowEngine());
  await Promise.all([a.worker.waitUntilReady(), b.worker.waitUntilReady()]);
  const body = { endpoint: 'completions' as const, prompt: 'outage', max_tokens: maxTokens, temperature: 0, ignore_eos: true };
  const { id } = await a.producer.submit(body);
  await waitFor(async () => (await a.producer.status([id]))[0].progress > 0, 20000, 'the job to make progress');
  await redisAway(awayMs);
  const [o] = await a.producer.waitFor([id], undefined, 50);
  const job = (await a.producer.queue.getJob(id))!;
  const events = await conn('producer').xrange(`bull:${q}:events`, '-', '+');
  const completed = events.filter(([, f]) => f[f.indexOf('event') + 1] === 'completed' && f[f.indexOf('jobId') + 1] === id);
  return { id, o, job, lines, completions: completed.length, body };
}

outageTest('Redis away for less than --stalled-interval: the running job is computed once, by one worker', async () => {
  // Away for just under the stalled interval.
  const r = await outage(1500, 600, 1455);
  expect(r.o.state).toBe('completed');
  expect(r.lines.filter((l) => l.startsWith(`job ${r.id} started`))).toHaveLength(1);
  expect(r.job.stalledCounter).toBe(0);
  expect(r.completions).toBe(1);
  expect((r.o.response as any).usage.completion_tokens).toBe(600);
}, 60000);

outageTest('Redis away longer than the lock: the job goes back to the queue once and the first worker stops computing it', async () => {
  // Lock 4 s (stalled interval 0.5 s); away 4.5 s, while the job still has seconds to run.
  const r = await outage(500, 1500, 4500);
  expect(r.o.state).toBe('completed');
  expect(r.lines).toContainEqual(expect.stringContaining(`job ${r.id}: its lock expired while Redis was away; stopped here`));
  expect(r.lines.filter((l) => l.startsWith(`job ${r.id} started`))).toHaveLength(2);
  expect(r.job.stalledCounter).toBe(1);
  expect(r.completions).toBe(1);
  expect(strip(r.o.response).choices).toEqual((await direct(apiOn().api, r.body)).choices);
}, 90000);

test('hostile job data (every request field with wrong types and extreme values): each job completes or fails with one line; the worker goes on', async () => {
  const seed = Number(process.env.FUZZ_SEED ?? Math.floor(Math.random() * 2 ** 31));
  const r = new Rng(seed);
  const q = uniqueQueue('fuzz');
  const { worker, producer } = setup(q);
  await worker.waitUntilReady();
  const plain = new Queue(q, { connection: conn('producer') });
  closers.push(() => plain.close());
  const routes = { '/v1/completions': 'completions', '/v1/chat/completions': 'chat.completions' } as const;
  const jobs: { id: string; label: string }[] = [];
  while (jobs.length < 60) {
    const route = r.next() < 0.5 ? '/v1/completions' : '/v1/chat/completions';
    const { text, label } = mutatedBody(r, route);
    let body: Record<string, unknown>;
    try {
      body = JSON.parse(text); // a job's data is JSON: bodies that are not (NaN literals...) cannot be queued
    } catch {
      continue;
    }
    const endpoint = r.next() < 0.1 ? (['embeddings', '', 5, null] as unknown[])[Math.floor(r.next() * 4)] : routes[route];
    let job;
    try {
      job = await plain.add('fuzz', { ...body, endpoint } as JobData, { attempts: 1 });
    } catch {
      continue; // BullMQ's producer cannot queue it either (nesting deeper than its encoder's stack)
    }
    jobs.push({ id: job.id!, label: `${route} ${label}${endpoint === routes[route] ? '' : `, endpoint=${JSON.stringify(endpoint)}`}` });
  }
  const outcomes = await producer.waitFor(jobs.map((j) => j.id), undefined, 50);
  outcomes.forEach((o, i) => {
    const what = `FUZZ_SEED=${seed}, job ${jobs[i].label}`;
    expect([what, o.state]).toEqual([what, expect.stringMatching(/^(completed|failed)$/)]);
    if (o.state === 'failed') {
      expect([what, o.error]).toEqual([what, expect.any(String)]);
      // The request's own 400 message (naming the field), not a bug's.
      expect([what, o.error]).not.toEqual([what, expect.stringMatching(/\n|internal error|TypeError|Cannot read|is not a function/)]);
    }
  });
  // Still taking jobs.
  const { id } = await producer.submit({ endpoint: 'completions', prompt: 'after the fuzz', max_tokens: 3, temperature: 0 });
  expect((await producer.waitFor([id], undefined, 20))[0].state).toBe('completed');
}, 120000);
