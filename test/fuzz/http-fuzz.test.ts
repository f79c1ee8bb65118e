// Bounded, seeded fuzzing of a real `serve` process (with --api-key) and of one still loading:
// malformed request lines and headers on raw sockets, every API field with wrong types and
// extreme values, random bytes. Each case must get a 4xx (or a well-formed answer), and the
// process must stay up and keep answering valid requests. FUZZ_SEED=N replays a run.
import fs from 'node:fs';
import net from 'node:net';
import os from 'node:os';
import path from 'node:path';
import { Rng } from '../../coordinator/sampler';
import { makeDemoModel } from '../../core/demo-model';
import { FIELDS, mutatedBody } from '../helpers/hostile-bodies';
import { SMALL_DEMO, waitFor } from '../serve/helpers';
import { rawExchange, statusOf } from '../serve/raw-http';
import { spawnCli, startServe, type ServeProcess } from '../serve/serve-process';

const SEED = Number(process.env.FUZZ_SEED ?? Math.floor(Math.random() * 2 ** 31));
const CASES = 400;
/** Field cases stop here even if CASES are not all done (each still checks the process). */
const BUDGET_MS = 25_000;
const KEY = 'fuzz-key';
const AUTH = { authorization: `Bearer ${KEY}` };

/** The request lines that ended the process with "TypeError: Invalid URL" (issue 12). */
const CRASH_TARGETS = ['//[', '//%', '//a:-1/health', '//:99999/v1/models', 'http://[::1/health', '*', 'http://%zz/', '/%', '/v1/completions?%'];

let dir: string;
let srv: ServeProcess;
let loading: Omit<ServeProcess, 'url'> & { url?: string };

beforeAll(async () => {
  dir = fs.mkdtempSync(path.join(os.tmpdir(), 'ts-fuzz-'));
  await makeDemoModel(dir, SMALL_DEMO);
  // A shard map naming a port nobody listens on: that serve stays loading.
  const closedPort = await new Promise<number>((resolve) => {
    const s = net.createServer().listen(0, '127.0.0.1', () => {
      const { port } = s.address() as net.AddressInfo;
      s.close(() => resolve(port));
    });
  });
  const mapFile = path.join(dir, 'shards.json');
  fs.writeFileSync(mapFile, JSON.stringify({ nodes: [{ address: `127.0.0.1:${closedPort}`, experts: '0-1:*' }] }));
  loading = spawnCli(['serve', '--model', dir, '--experts', mapFile, '--port', '0', '--device', 'cpu', '--threads', '1', '--api-key', KEY]);
  srv = await startServe(dir, ['--api-key', KEY]);
  await waitFor(() => /loading; (http:\/\/\S+)\/ready/.test(loading.stderr()) || loading.child.exitCode !== null, 60000, 'the loading server');
  loading.url = /loading; (http:\/\/\S+)\/ready/.exec(loading.stderr())?.[1];
}, 120000);

afterAll(async () => {
  await srv?.kill();
  await loading?.kill();
  if (dir) fs.rmSync(dir, { recursive: true, force: true });
});

/** The process is up and answers /health (and, with `generate`, a real completion). */
async function stillServing(p: { url?: string; child: ServeProcess['child']; stderr(): string }, generate = false): Promise<void> {
  if (p.child.exitCode !== null || p.child.signalCode !== null) throw new Error(`the process died:\n${p.stderr().slice(-3000)}`);
  const health = await fetch(`${p.url}/health`, { signal: AbortSignal.timeout(5000) });
  expect(health.status).toBe(200);
  await health.arrayBuffer();
  if (!generate) return;
  const res = await fetch(`${p.url}/v1/completions`, {
    method: 'POST',
    headers: { 'content-type': 'application/json', ...AUTH },
    body: JSON.stringify({ prompt: 'hello', max_tokens: 2 }),
    signal: AbortSignal.timeout(10000),
  });
  expect(res.status).toBe(200);
  expect(((await res.json()) as { choices: unknown[] }).choices).toHaveLength(1);
}

/** Runs a case; a failure names the seed and the case so it can be replayed. */
async function fuzzCase(what: string, fn: () => Promise<void>): Promise<void> {
  try {
    await fn();
  } catch (e) {
    throw new Error(`FUZZ_SEED=${SEED}, case ${what}: ${(e as Error).message}`);
  }
}

const reply4xx = (status: number | null) => status !== null && status >= 400 && status < 500;

test('request targets that used to crash the process get a 4xx, serving and while loading', async () => {
  for (const target of CRASH_TARGETS) {
    for (const method of ['GET', 'POST']) {
      for (const [name, p] of [['serving', srv], ['loading', loading]] as const) {
        await fuzzCase(`${name} ${method} ${target}`, async () => {
          const r = await rawExchange(p.url!, `${method} ${target} HTTP/1.1\r\nHost: x\r\nAuthorization: ${AUTH.authorization}\r\ncontent-length: 0\r\nconnection: close\r\n\r\n`, 5000);
          const status = statusOf(r);
          // Loading answers 503 to every route but /health and /ready; a target that is no path or URL is a 400 either way.
          if (name === 'loading' && status === 503) expect(r.text).toMatch(/"code":"loading"/);
          else expect([status, reply4xx(status)]).toEqual([status, true]);
          if (/^(http:\/\/\[|\*|http:\/\/%)/.test(target)) expect(status).toBe(400);
          await stillServing(p);
        });
      }
    }
  }
}, 60000);

/** A whole body that is not an object, or not JSON. */
function oddBody(r: Rng): { text: string; label: string } {
  const bodies = ['', ' ', 'null', '[]', '[{}]', '"prompt"', '42', 'true', '{', '{"prompt":', '{"prompt":"hi"}}', '\u0000', '{"prompt":"hi",}', '\ufeff{"prompt":"hi"}'];
  const i = Math.floor(r.next() * (bodies.length + 1));
  if (i < bodies.length) return { text: bodies[i], label: `body ${JSON.stringify(bodies[i])}` };
  const bytes = Buffer.from(Array.from({ length: 1 + Math.floor(r.next() * 500) }, () => Math.floor(r.next() * 256)));
  return { text: bytes.toString('latin1'), label: 'random body bytes' };
}

/** Checks one HTTP answer: a 4xx OpenAI error of one line, or a well-formed success. */
async function checkAnswer(res: Response, stream: boolean): Promise<void> {
  const text = await res.text();
  expect(res.status).toBeLessThan(500);
  if (res.status >= 400) {
    const err = (JSON.parse(text) as { error: { message: unknown; type: unknown } }).error;
    expect(typeof err.message).toBe('string');
    expect((err.message as string).length).toBeGreaterThan(0);
    expect(err.message).not.toMatch(/\n/);
    expect(typeof err.type).toBe('string');
    return;
  }
  if (stream && /event-stream/.test(res.headers.get('content-type') ?? '')) {
    const events = text.split('\n\n').filter((e) => e.trim() !== '');
    expect(events[events.length - 1]).toBe('data: [DONE]');
    for (const e of events.slice(0, -1)) JSON.parse(e.replace(/^data: /, ''));
  } else JSON.parse(text);
}

test('every API field with wrong types and extreme values: 4xx or a valid answer, never a 5xx or a dead process', async () => {
  const r = new Rng(SEED);
  const routes = Object.keys(FIELDS);
  const t0 = performance.now();
  let done = 0;
  for (let i = 0; i < CASES && performance.now() - t0 < BUDGET_MS; i++, done++) {
    const route = routes[Math.floor(r.next() * routes.length)];
    const { text, label } = r.next() < 0.1 ? oddBody(r) : mutatedBody(r, route);
    const keyed = r.next() < 0.95;
    await fuzzCase(`#${i} POST ${route} ${label}`, async () => {
      const res = await fetch(`${srv.url}${route}`, {
        method: 'POST',
        headers: { 'content-type': 'application/json', ...(keyed ? AUTH : {}) },
        body: text,
        signal: AbortSignal.timeout(20000),
      });
      if (!keyed) expect(res.status).toBe(401);
      await checkAnswer(res, /"stream":true/.test(text));
      await stillServing(srv, i % 25 === 0);
    });
  }
  expect(done).toBeGreaterThanOrEqual(Math.min(CASES, 100));
  await stillServing(srv, true);
}, 60000);

test('malformed headers and random bytes on raw sockets: a 4xx or a closed connection, never a dead process', async () => {
  const r = new Rng(SEED ^ 0x5eed);
  const pick = <T>(xs: T[]): T => xs[Math.floor(r.next() * xs.length)];
  const headerCases = [
    'content-length: -1', 'content-length: abc', 'content-length: 5\r\ncontent-length: 6', 'content-length: 99999999999999999999',
    'transfer-encoding: chunked\r\n\r\nzz\r\n', 'transfer-encoding: gzip, chunked', 'authorization: Bearer ' + 'k'.repeat(100_000),
    'authorization: Bearer \u00ff\u00fe', 'authorization: Basic Zm9vOmJhcg==', 'authorization:', 'x-a: ' + 'v'.repeat(20_000),
    Array.from({ length: 3000 }, (_, i) => `x-h${i}: v`).join('\r\n'), 'bad header line', ': no name', 'host: a\r\nhost: b',
    'content-type: application/json; charset=utf-16', 'expect: 100-continue', 'connection: upgrade\r\nupgrade: websocket',
  ];
  const t0 = performance.now();
  for (let i = 0; i < 150 && performance.now() - t0 < 15_000; i++) {
    const kind = pick(['header', 'line', 'bytes', 'prefixed bytes'] as const);
    let data: Buffer;
    if (kind === 'header') data = Buffer.from(`POST /v1/completions HTTP/1.1\r\nHost: x\r\n${pick(headerCases)}\r\n\r\n{"prompt":"hi"}`, 'latin1');
    else if (kind === 'line') {
      const method = pick(['GET', 'POST', 'PUT', 'DELETE', 'OPTIONS', 'HEAD', 'CONNECT', 'PATCH', 'BREW', 'G\u00e9T', '']);
      const target = pick([...CRASH_TARGETS, '/health', '/v1/models', '', ' ', '/\u00ff', '/' + 'a'.repeat(70_000), 'localhost:80', '/..%2f..%2fetc/passwd']);
      const version = pick(['HTTP/1.1', 'HTTP/1.0', 'HTTP/2.0', 'HTTP/9', 'HTTP/1.1 extra', '']);
      data = Buffer.from(`${method} ${target} ${version}\r\nHost: x\r\n\r\n`, 'latin1');
    } else {
      const bytes = Buffer.from(Array.from({ length: 1 + Math.floor(r.next() * 2000) }, () => Math.floor(r.next() * 256)));
      data = kind === 'bytes' ? bytes : Buffer.concat([Buffer.from('POST /v1/completions HTTP/1.1\r\n'), bytes]);
    }
    await fuzzCase(`raw #${i} ${kind}: ${JSON.stringify(data.subarray(0, 120).toString('latin1'))}`, async () => {
      // The request ends with our write (end): the server must answer or close, not wait.
      const reply = await rawExchange(srv.url, data, 10_000, true);
      const status = statusOf(reply);
      expect(reply.closed || status !== null).toBe(true);
      if (status !== null) expect(status).toBeLessThan(500);
      await stillServing(srv, i % 30 === 0);
    });
  }
  await stillServing(srv, true);
  await stillServing(loading);
}, 60000);
