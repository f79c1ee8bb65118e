// The OpenAI Batch API (`serve --redis`) end to end with real processes and a real Redis:
// the official openai client uploads a JSONL file, creates a batch, polls it and reads the
// output and error files while a `worker` process runs the requests; a worker killed with
// SIGKILL mid-batch and a new one started still give every custom_id exactly once; the
// coordinator is killed too and restarted, and a second coordinator (an in-process
// BatchService sweeping the same Redis) races it to finalize: the batch is finalized once. Cancel, validation failures, and a bounded fuzz of
// malformed uploads and bodies (400/404/413, one line, the server stays up).
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import OpenAI, { toFile } from 'openai';
import { Worker as BullWorker } from 'bullmq';
import type { Redis } from 'ioredis';
import { makeDemoModel } from '../../core/demo-model';
import { Rng } from '../../coordinator/sampler';
import { connectRedis } from '../../coordinator/queue/connection';
import { BatchService, batchNamespace } from '../../coordinator/queue/batches';
import { FileStore } from '../../coordinator/queue/files-store';
import { nasty } from '../helpers/hostile-bodies';
import { spawnCli, startServe, type ServeProcess } from '../serve/serve-process';
import { waitFor } from '../serve/helpers';
import { startRedis, uniqueQueue, type TestRedis } from './redis';

const DEMO = { layers: 2, hidden: 64, intermediate: 128, heads: 4, kvHeads: 2, experts: 4, topK: 2, vocab: 300, predictorRank: 16, shards: 1 };

let redis: TestRedis;
let dir: string;
let queue: string;
let server: ServeProcess;
let client: OpenAI;
let conn: Redis;
const procs: { kill(): Promise<void> }[] = [];

interface Worker {
  kill(): Promise<void>;
  child: import('node:child_process').ChildProcess;
  stderr(): string;
}

async function startWorker(): Promise<Worker> {
  const w = spawnCli(['worker', '--model', dir, '--redis', redis.url, '--queue', queue, '--device', 'cpu', '--threads', '1',
    '--concurrency', '1', '--stalled-interval', '500', '--progress-interval', '50', '--served-model-name', 'demo']);
  procs.push(w);
  await waitFor(() => w.stderr().includes('worker: taking jobs') || w.child.exitCode !== null, 60000, 'the worker to start');
  if (w.child.exitCode !== null) throw new Error(`worker exited: ${w.stderr()}`);
  return w;
}

async function until(what: string, ms: number, cond: () => Promise<boolean>): Promise<void> {
  const end = Date.now() + ms;
  while (!(await cond())) {
    if (Date.now() > end) throw new Error(`timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 100));
  }
}

const serveArgs = (): string[] => ['--redis', redis.url, '--queue', queue, '--max-file-mb', '1', '--max-file-lines', '50'];
const jsonl = (lines: unknown[]): string => lines.map((l) => JSON.stringify(l)).join('\n') + '\n';
const parseJsonl = (text: string): any[] => text.trim().split('\n').filter(Boolean).map((l) => JSON.parse(l));

beforeAll(async () => {
  redis = await startRedis();
  dir = fs.mkdtempSync(path.join(os.tmpdir(), 'ts-openai-batch-'));
  await makeDemoModel(dir, DEMO);
  queue = uniqueQueue('generation');
  conn = connectRedis(redis.url, 'producer');
  server = await startServe(dir, serveArgs());
  procs.push(server);
  client = new OpenAI({ apiKey: 'unused', baseURL: `${server.url}/v1`, maxRetries: 0 });
}, 90000);

afterAll(async () => {
  await Promise.all(procs.map((p) => p.kill()));
  conn?.disconnect();
  await redis?.stop();
  if (dir) fs.rmSync(dir, { recursive: true, force: true });
});

test('files.create -> batches.create -> retrieve until completed -> files.content; worker and coordinator killed mid-batch; two coordinators', async () => {
  const requests = [
    { custom_id: 'long', method: 'POST', url: '/v1/completions', body: { model: 'demo', prompt: [1, 30, 31], max_tokens: 600, temperature: 0, ignore_eos: true } },
    ...[0, 1, 2].map((i) => ({ custom_id: `short-${i}`, method: 'POST', url: '/v1/completions', body: { prompt: `hello ${i}`, max_tokens: 4, temperature: 0 } })),
    { custom_id: 'bad-field', method: 'POST', url: '/v1/completions', body: { prompt: 'x', top_p: 7 } },
    { custom_id: 'other-model', method: 'POST', url: '/v1/completions', body: { model: 'gpt-4o', prompt: 'x' } },
  ];
  const [w1, file] = await Promise.all([
    startWorker(),
    client.files.create({ file: await toFile(Buffer.from(jsonl(requests)), 'requests.jsonl'), purpose: 'batch' }),
  ]);
  expect(file).toMatchObject({ object: 'file', purpose: 'batch', filename: 'requests.jsonl', bytes: Buffer.byteLength(jsonl(requests)) });
  expect(await client.files.retrieve(file.id)).toEqual(file);
  expect(await (await client.files.content(file.id)).text()).toBe(jsonl(requests));

  // A second coordinator sweeping the same batches (as a restarted or scaled-out serve would).
  const logB: string[] = [];
  const connB = connectRedis(redis.url, 'producer');
  const other = new BatchService({ connection: connB, files: new FileStore({ connection: connB, namespace: batchNamespace(queue) }), queueName: queue, sweepIntervalMs: 50, log: (l) => logB.push(l) });
  other.start();
  try {
    const batch = await client.batches.create({ input_file_id: file.id, endpoint: '/v1/completions', completion_window: '24h', metadata: { run: 'test' } });
    expect(batch).toMatchObject({ object: 'batch', status: 'validating', input_file_id: file.id, metadata: { run: 'test' }, output_file_id: null });
    expect(batch.expires_at! - batch.created_at).toBe(86400);

    // Kill the worker while it runs the long request; a new worker takes the job over after the stall check.
    const longJob = `${batch.id}-0`;
    await waitFor(() => w1.stderr().includes(`job ${longJob} started`), 30000, 'the worker to start the long request');
    await until('progress on the long request', 30000, async () => Number(JSON.parse((await conn.hget(`bull:${queue}:${longJob}`, 'progress')) ?? '0')) > 0);
    w1.child.kill('SIGKILL');
    await w1.kill();
    const mid = await client.batches.retrieve(batch.id);
    expect(mid.status).toBe('in_progress');
    expect(mid.request_counts!.total).toBe(6);
    // The coordinator dies too (its state is in Redis): a new worker and a restarted serve carry on.
    await server.kill();
    const firstLog = server.stderr();
    const [w2, restarted] = await Promise.all([startWorker(), startServe(dir, serveArgs())]);
    server = restarted;
    procs.push(server);
    client = new OpenAI({ apiKey: 'unused', baseURL: `${server.url}/v1`, maxRetries: 0 });

    let done = mid;
    await until('the batch to complete', 60000, async () => {
      done = await client.batches.retrieve(batch.id);
      return done.status === 'completed';
    });
    expect(w2.stderr()).toMatch(new RegExp(`job ${longJob} finished: 600 tokens in \\d+ ms`));
    expect(done.request_counts).toEqual({ total: 6, completed: 4, failed: 2 });
    expect(done.in_progress_at! >= done.created_at && done.finalizing_at! >= done.in_progress_at! && done.completed_at! >= done.finalizing_at!).toBe(true);
    expect(done.model).toBe('demo');

    const out = parseJsonl(await (await client.files.content(done.output_file_id!)).text());
    const errs = parseJsonl(await (await client.files.content(done.error_file_id!)).text());
    expect(out.map((l) => l.custom_id).sort()).toEqual(['long', 'short-0', 'short-1', 'short-2']);
    expect(errs.map((l) => l.custom_id).sort()).toEqual(['bad-field', 'other-model']);
    for (const l of out) {
      expect(l).toMatchObject({ id: expect.stringMatching(/^batch_req_/), response: { status_code: 200, request_id: expect.any(String) }, error: null });
      expect(l.response.body.object).toBe('text_completion');
    }
    expect(out.find((l) => l.custom_id === 'long').response.body.usage.completion_tokens).toBe(600);
    const bad = errs.find((l) => l.custom_id === 'bad-field');
    expect(bad.response.status_code).toBe(400);
    expect(bad.response.body.error).toMatchObject({ type: 'invalid_request_error', param: 'top_p' });
    expect(errs.find((l) => l.custom_id === 'other-model').response.status_code).toBe(404);
    expect(await client.files.retrieve(done.output_file_id!)).toMatchObject({ purpose: 'batch_output' });

    // Finalized exactly once between the two coordinators.
    await new Promise((r) => setTimeout(r, 300));
    const finals = [...logB, ...firstLog.split('\n'), ...server.stderr().split('\n')].filter((l) => l.includes(`batch ${batch.id} completed`));
    expect(finals).toHaveLength(1);
    // Listing: newest first, cursor pagination as the client pages it.
    const listed = [];
    for await (const b of client.batches.list({ limit: 1 })) listed.push(b.id);
    expect(listed).toContain(batch.id);
    expect(new Set(listed).size).toBe(listed.length);
  } finally {
    await other.close();
    connB.disconnect();
  }
}, 150000);

test('cancel: waiting requests are dropped, the running one finishes; each custom_id once; a finished batch cannot be cancelled', async () => {
  const requests = [0, 1, 2, 3].map((i) => ({
    custom_id: `c${i}`, method: 'POST', url: '/v1/chat/completions',
    body: { messages: [{ role: 'user', content: `hi ${i}` }], max_tokens: 300, ignore_eos: true, temperature: 0 },
  }));
  const file = await client.files.create({ file: await toFile(Buffer.from(jsonl(requests)), 'chat.jsonl'), purpose: 'batch' });
  const batch = await client.batches.create({ input_file_id: file.id, endpoint: '/v1/chat/completions', completion_window: '24h' });
  await until('a request to start', 30000, async () => (await conn.hget(`bull:${queue}:${batch.id}-0`, 'processedOn')) !== null);
  const cancelling = await client.batches.cancel(batch.id);
  expect(['cancelling', 'cancelled']).toContain(cancelling.status);
  let b = cancelling;
  await until('the batch to be cancelled', 40000, async () => {
    b = await client.batches.retrieve(batch.id);
    return b.status === 'cancelled';
  });
  expect(b.cancelling_at).toBeGreaterThanOrEqual(b.created_at);
  expect(b.cancelled_at).toBeGreaterThanOrEqual(b.cancelling_at!);
  const out = b.output_file_id ? parseJsonl(await (await client.files.content(b.output_file_id)).text()) : [];
  const errs = parseJsonl(await (await client.files.content(b.error_file_id!)).text());
  expect([...out, ...errs].map((l) => l.custom_id).sort()).toEqual(['c0', 'c1', 'c2', 'c3']);
  expect(out.map((l) => l.custom_id)).toContain('c0');
  expect(out[0].response.body.object).toBe('chat.completion');
  expect(errs.length).toBeGreaterThanOrEqual(1);
  for (const e of errs) expect(e).toMatchObject({ response: null, error: { code: 'batch_cancelled' } });
  expect(b.request_counts!.completed).toBe(out.length);
  // Cancelling again is a no-op; a completed batch cannot be cancelled.
  expect((await client.batches.cancel(batch.id)).status).toBe('cancelled');
}, 90000);

test('validation: duplicate custom_ids, a wrong url or method, a missing body fail the batch with the lines listed', async () => {
  const lines = [
    { custom_id: 'a', method: 'POST', url: '/v1/completions', body: { prompt: 'x', max_tokens: 1 } },
    { custom_id: 'a', method: 'POST', url: '/v1/completions', body: { prompt: 'y', max_tokens: 1 } },
    { custom_id: 'b', method: 'POST', url: '/v1/chat/completions', body: { prompt: 'y' } },
    { custom_id: 'c', method: 'GET', url: '/v1/completions', body: {} },
    { custom_id: 'd', method: 'POST', url: '/v1/completions' },
  ];
  const file = await client.files.create({ file: await toFile(Buffer.from(jsonl(lines)), 'bad.jsonl'), purpose: 'batch' });
  const batch = await client.batches.create({ input_file_id: file.id, endpoint: '/v1/completions', completion_window: '24h' });
  let b = batch;
  await until('validation to fail', 20000, async () => {
    b = await client.batches.retrieve(batch.id);
    return b.status !== 'validating';
  });
  expect(b.status).toBe('failed');
  expect(b.failed_at).toBeGreaterThanOrEqual(b.created_at);
  expect(b.errors!.data!.map((e) => [e.line, e.code])).toEqual([
    [2, 'duplicate_custom_id'], [3, 'mismatched_endpoint'], [4, 'invalid_method'], [5, 'missing_required_parameter'],
  ]);
  expect(b.output_file_id).toBeNull();
  // Nothing of it went to the queue.
  expect(await conn.exists(`bull:${queue}:${batch.id}-0`)).toBe(0);
  // A finished (failed) batch cannot be cancelled.
  await expect(client.batches.cancel(batch.id)).rejects.toBeInstanceOf(OpenAI.ConflictError);
}, 60000);

test('fuzz: malformed uploads and batch bodies are 4xx with one-line OpenAI errors; the server stays up', async () => {
  const base = `${server.url}/v1`;
  const r = new Rng(17);
  const good = jsonl([{ custom_id: 'a', method: 'POST', url: '/v1/completions', body: { prompt: 'x' } }]);
  const form = (parts: Record<string, string | Blob>): FormData => {
    const f = new FormData();
    for (const [k, v] of Object.entries(parts)) {
      if (typeof v === 'string') f.append(k, v);
      else f.append(k, v, 'f.jsonl');
    }
    return f;
  };
  const uploads: { label: string; init: RequestInit }[] = [
    { label: 'json body', init: { method: 'POST', headers: { 'content-type': 'application/json' }, body: '{"purpose":"batch"}' } },
    { label: 'no boundary', init: { method: 'POST', headers: { 'content-type': 'multipart/form-data; boundary=zz' }, body: 'garbage\r\n--zz--' } },
    { label: 'truncated multipart', init: { method: 'POST', headers: { 'content-type': 'multipart/form-data; boundary=zz' }, body: '--zz\r\nContent-Disposition: form-data; name="purpose"\r\n\r\nbatch' } },
    { label: 'no purpose', init: { method: 'POST', body: form({ file: new Blob([good]) }) } },
    { label: 'wrong purpose', init: { method: 'POST', body: form({ purpose: 'fine-tune', file: new Blob([good]) }) } },
    { label: 'no file', init: { method: 'POST', body: form({ purpose: 'batch' }) } },
    { label: 'file as text', init: { method: 'POST', body: form({ purpose: 'batch', file: good }) } },
    { label: 'empty file', init: { method: 'POST', body: form({ purpose: 'batch', file: new Blob(['\n\n']) }) } },
    { label: 'not json', init: { method: 'POST', body: form({ purpose: 'batch', file: new Blob([good + '{"custom_id": \n']) }) } },
    { label: 'array line', init: { method: 'POST', body: form({ purpose: 'batch', file: new Blob(['[1,2]\n']) }) } },
    { label: 'not utf-8', init: { method: 'POST', body: form({ purpose: 'batch', file: new Blob([new Uint8Array([0x7b, 0xff, 0xfe, 0x7d])]) }) } },
    { label: 'too many lines', init: { method: 'POST', body: form({ purpose: 'batch', file: new Blob([good.repeat(51)]) }) } },
    { label: 'too large', init: { method: 'POST', body: form({ purpose: 'batch', file: new Blob(['{"a":"' + 'x'.repeat(1.2 * 2 ** 20) + '"}\n']) }) } },
  ];
  // Random bytes as a multipart body, and random single-byte damage to a good one.
  const goodForm = await new Response(form({ purpose: 'batch', file: new Blob([good]) }));
  const goodBytes = Buffer.from(await goodForm.arrayBuffer());
  const goodType = goodForm.headers.get('content-type')!;
  for (let i = 0; i < 12; i++) {
    const bytes = Buffer.from(goodBytes);
    for (let k = 0; k < 1 + Math.floor(r.next() * 4); k++) bytes[Math.floor(r.next() * bytes.length)] = Math.floor(r.next() * 256);
    uploads.push({ label: `damaged form ${i}`, init: { method: 'POST', headers: { 'content-type': goodType }, body: bytes } });
  }
  const statuses: number[] = [];
  const check = async (label: string, res: Response, accept2xx = false) => {
    const text = await res.text();
    statuses.push(res.status);
    if (accept2xx && res.status === 200) return;
    expect([label, res.status >= 400 && res.status < 500, text.slice(0, 300)]).toEqual([label, true, text.slice(0, 300)]);
    const body = JSON.parse(text);
    expect(Object.keys(body.error).sort()).toEqual(['code', 'message', 'param', 'type']);
    expect([label, body.error.message.includes('\n')]).toEqual([label, false]);
  };
  for (const u of uploads) await check(u.label, await fetch(`${base}/files`, u.init), u.label.startsWith('damaged'));

  // POST /v1/batches with each field replaced by hostile values.
  const file = await client.files.create({ file: await toFile(Buffer.from(good), 'g.jsonl'), purpose: 'batch' });
  const fields = ['input_file_id', 'endpoint', 'completion_window', 'metadata'];
  for (let i = 0; i < 40; i++) {
    const body: Record<string, unknown> = { input_file_id: file.id, endpoint: '/v1/completions', completion_window: '24h' };
    const field = fields[Math.floor(r.next() * fields.length)];
    const v = nasty(r);
    let text: string;
    if (v.raw !== undefined) text = JSON.stringify({ ...body, [field]: '@@' }).replace('"@@"', v.raw);
    else text = JSON.stringify({ ...body, [field]: v.value === undefined ? undefined : v.value });
    if (field === 'metadata' && (v.value === null || v.value === undefined)) continue; // valid: no metadata
    await check(`${field}=${v.label}`, await fetch(`${base}/batches`, { method: 'POST', headers: { 'content-type': 'application/json' }, body: text }), v.value === undefined && field === 'metadata');
  }
  for (const [label, url, init] of [
    ['empty batch body', `${base}/batches`, { method: 'POST', body: '' }],
    ['batch body not json', `${base}/batches`, { method: 'POST', body: '{"input_file_id":' }],
    ['batch body array', `${base}/batches`, { method: 'POST', body: '[]' }],
    ['unknown file', `${base}/files/file-nope`, {}],
    ['unknown file content', `${base}/files/file-nope/content`, {}],
    ['odd file id', `${base}/files/${encodeURIComponent('../../etc/passwd')}`, {}],
    ['unknown batch', `${base}/batches/batch_nope`, {}],
    ['cancel unknown batch', `${base}/batches/batch_nope/cancel`, { method: 'POST' }],
    ['bad limit', `${base}/batches?limit=0`, {}],
    ['bad after', `${base}/batches?after=batch_nope`, {}],
    ['wrong method', `${base}/files/${file.id}`, { method: 'PUT' }],
    ['bad file list limit', `${base}/files?limit=abc`, {}],
    ['bad file list order', `${base}/files?order=up`, {}],
    ['delete unknown file', `${base}/files/file-nope`, { method: 'DELETE' }],
  ] as [string, string, RequestInit][]) {
    await check(label, await fetch(url, init));
  }
  expect(statuses.filter((s) => s === 413).length).toBeGreaterThanOrEqual(1);
  // Still serving, and a good upload still works.
  expect((await fetch(`${server.url}/health`)).status).toBe(200);
  const ok = await client.files.create({ file: await toFile(Buffer.from(good), 'ok.jsonl'), purpose: 'batch' });
  // files.list (newest first, every page) and files.delete, as the client calls them.
  const listed: string[] = [];
  for await (const f of client.files.list({ limit: 2, purpose: 'batch' })) listed.push(f.id);
  expect(listed[0]).toBe(ok.id);
  expect(listed).toContain(file.id);
  expect(new Set(listed).size).toBe(listed.length);
  expect(await client.files.delete(ok.id)).toEqual({ id: ok.id, object: 'file', deleted: true });
  await expect(client.files.retrieve(ok.id)).rejects.toBeInstanceOf(OpenAI.NotFoundError);
}, 60000);

test('--files-dir: bytes in the folder (not in Redis), metadata in Redis; a fixed id keeps its first file', async () => {
  const filesDir = path.join(dir, 'files');
  const ns = batchNamespace(uniqueQueue('files'));
  const store = new FileStore({ connection: conn, namespace: ns, dir: filesDir });
  const f = await store.create('in.jsonl', 'batch', Buffer.from('{"a":1}\n'));
  expect(fs.readFileSync(path.join(filesDir, f.id), 'utf8')).toBe('{"a":1}\n');
  expect(await conn.exists(`${ns}:file:${f.id}:content`)).toBe(0);
  expect(JSON.parse((await conn.get(`${ns}:file:${f.id}`))!)).toEqual(f);
  // Another coordinator sharing the folder sees it.
  const other = new FileStore({ connection: conn, namespace: ns, dir: filesDir });
  expect((await other.content(f.id))!.toString()).toBe('{"a":1}\n');
  // A finalizer writing the same fixed id again changes nothing.
  const out1 = await store.create('out.jsonl', 'batch_output', Buffer.from('first\n'), 'file-out-x');
  const out2 = await other.create('out.jsonl', 'batch_output', Buffer.from('second\n'), 'file-out-x');
  expect(out2).toEqual(out1);
  expect((await store.content('file-out-x'))!.toString()).toBe('first\n');
  expect(fs.readdirSync(filesDir).sort()).toEqual([f.id, 'file-out-x'].sort()); // no temp files left
  // Not there: null for the API's 404; an id that could escape the folder is never looked up.
  expect(await store.get('file-nope')).toBeNull();
  expect(await store.content('../etc/passwd')).toBeNull();
  // Listing: creation order either way, by purpose, after a cursor; deleting removes the bytes too.
  expect((await store.list({ after: null, limit: 10, order: 'asc', purpose: null })).data.map((x) => x.id)).toEqual([f.id, 'file-out-x']);
  expect((await store.list({ after: null, limit: 1, order: 'desc', purpose: null }))).toEqual({ data: [out1], hasMore: true });
  expect((await store.list({ after: 'file-out-x', limit: 1, order: 'desc', purpose: null }))).toEqual({ data: [f], hasMore: false });
  expect((await store.list({ after: null, limit: 10, order: 'desc', purpose: 'batch' })).data).toEqual([f]);
  expect(await store.delete(f.id)).toBe(true);
  expect(await store.delete(f.id)).toBe(false);
  expect(fs.existsSync(path.join(filesDir, f.id))).toBe(false);
  expect(await other.get(f.id)).toBeNull();
});

test('Redis stopped (SIGSTOP): Batch API requests answer 503 within the command timeout, the server stays up; after SIGCONT they work', async () => {
  if (!redis.pid) throw new Error('this test stops its own redis-server: unset REDIS_URL');
  process.kill(redis.pid, 'SIGSTOP');
  try {
    const t0 = Date.now();
    const res = await fetch(`${server.url}/v1/batches?limit=1`);
    const body = (await res.json()) as { error: { code: string } };
    expect([res.status, body.error.code]).toEqual([503, 'redis_unavailable']);
    expect(Date.now() - t0).toBeLessThan(15000);
    expect((await fetch(`${server.url}/health`)).status).toBe(200);
  } finally {
    process.kill(redis.pid, 'SIGCONT');
  }
  await until('the Batch API to answer again', 15000, async () => (await fetch(`${server.url}/v1/batches?limit=1`)).status === 200);
}, 40000);

test('a batch past its completion window expires: waiting requests are dropped as batch_expired, each custom_id once', async () => {
  // Its own queue, which no worker takes from: nothing runs before the (1 s) window ends.
  const q = uniqueQueue('expiry');
  const connE = connectRedis(redis.url, 'producer');
  const files = new FileStore({ connection: connE, namespace: batchNamespace(q) });
  const service = new BatchService({ connection: connE, files, queueName: q, sweepIntervalMs: 100, completionWindowS: 1, log: () => undefined });
  service.start();
  try {
    const lines = ['a', 'b', 'c'].map((c) => ({ custom_id: c, method: 'POST', url: '/v1/completions', body: { prompt: c, max_tokens: 1 } }));
    const input = await files.create('in.jsonl', 'batch', Buffer.from(jsonl(lines)));
    const created = await service.create({ input_file_id: input.id, endpoint: '/v1/completions', completion_window: '24h' });
    let b = created;
    await until('the batch to expire', 10000, async () => {
      b = await service.retrieve(created.id);
      return b.status === 'expired';
    });
    expect(b.expired_at).toBeGreaterThanOrEqual(b.expires_at);
    expect(b.in_progress_at).not.toBeNull();
    expect(b.completed_at).toBeNull();
    expect(b.output_file_id).toBeNull();
    expect(b.request_counts).toEqual({ total: 3, completed: 0, failed: 0 });
    const errs = parseJsonl((await files.content(b.error_file_id!))!.toString());
    expect(errs.map((l) => l.custom_id).sort()).toEqual(['a', 'b', 'c']);
    for (const e of errs) expect(e).toMatchObject({ response: null, error: { code: 'batch_expired' } });
    expect(await service.queue.getJobCounts('wait')).toEqual({ wait: 0 });
  } finally {
    await service.queue.obliterate({ force: true }).catch(() => undefined);
    await service.close();
    connE.disconnect();
  }
});

test('cancel over several chunks: every waiting request dropped with its own custom_id, held jobs kept and answered', async () => {
  // Its own queue; jobs are taken by hand (a BullMQ worker without a processor) so which ones run is known.
  const q = uniqueQueue('cancel-chunks');
  const connC = connectRedis(redis.url, 'producer');
  const connW = connectRedis(redis.url, 'worker');
  const files = new FileStore({ connection: connC, namespace: batchNamespace(q) });
  const service = new BatchService({ connection: connC, files, queueName: q, sweepIntervalMs: 100, log: () => undefined });
  const taker = new BullWorker(q, null, { connection: connW, autorun: false });
  service.start();
  try {
    const N = 1100; // over two sweep chunks (500) of waiting requests
    const lines = Array.from({ length: N }, (_, i) => ({ custom_id: `r${i}`, method: 'POST', url: '/v1/completions', body: { prompt: `p${i}`, max_tokens: 1 } }));
    const input = await files.create('in.jsonl', 'batch', Buffer.from(jsonl(lines)));
    const created = await service.create({ input_file_id: input.id, endpoint: '/v1/completions', completion_window: '24h' });
    await until('the requests to be queued', 20000, async () => (await service.queue.getJobCounts('wait')).wait === N);
    // Request 0 finishes before the cancel; request 1 is running through it (its lock held, so not removable).
    const token = 'test-token';
    const first = (await taker.getNextJob(token))!;
    const second = (await taker.getNextJob(token))!;
    expect([first.id, second.id]).toEqual([`${created.id}-0`, `${created.id}-1`]);
    await first.moveToCompleted({ status_code: 200, body: { answer: 'first' } }, token, false);

    expect(['cancelling', 'cancelled']).toContain((await service.cancel(created.id)).status);
    await until('the waiting requests to be dropped', 20000, async () => (await service.queue.getJobCounts('wait')).wait === 0);
    await new Promise((r) => setTimeout(r, 300));
    expect((await service.retrieve(created.id)).status).toBe('cancelling'); // request 1 still runs
    await second.moveToCompleted({ status_code: 200, body: { answer: 'second' } }, token, false);
    let b = created;
    await until('the batch to be cancelled', 20000, async () => {
      b = await service.retrieve(created.id);
      return b.status === 'cancelled';
    });

    expect(b.request_counts).toEqual({ total: N, completed: 2, failed: 0 });
    const suffix = created.id.replace(/^batch_/, '');
    const out = parseJsonl((await files.content(b.output_file_id!))!.toString());
    expect(out.map((l) => [l.custom_id, l.id, l.response.body.answer])).toEqual([
      ['r0', `batch_req_${suffix}_0`, 'first'],
      ['r1', `batch_req_${suffix}_1`, 'second'],
    ]);
    const errs = parseJsonl((await files.content(b.error_file_id!))!.toString());
    // In request order, each once, each line's id the request its custom_id names.
    expect(errs.map((l) => l.custom_id)).toEqual(lines.slice(2).map((l) => l.custom_id));
    for (const e of errs) {
      expect(e).toMatchObject({ id: `batch_req_${suffix}_${String(e.custom_id).slice(1)}`, response: null, error: { code: 'batch_cancelled' } });
    }
  } finally {
    await taker.close().catch(() => undefined);
    await service.queue.obliterate({ force: true }).catch(() => undefined);
    await service.close();
    connC.disconnect();
    connW.disconnect();
  }
}, 60000);
