/// <reference lib="dom" />
// With an API key, everything that tells about the deployment (status JSON, metrics: node
// addresses, shard layout, last errors) needs it as /v1/* does; /health, /ready and the
// status page's HTML stay open. The key comes from --api-key, --api-key-file or
// $TURBOSPARSE_API_KEY, and `stats --url` reads the status with it.
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { makeDemoModel } from '../../core/demo-model';
import { observeEngine, statusRoutes } from '../../coordinator/telemetry';
import type { StatusJson } from '../../coordinator/telemetry/status';
import { chromiumMissing, launchChromium } from '../helpers/chromium';
import { testUnless } from '../helpers/skip';
import { serve, SMALL_DEMO, useDemoModel } from './helpers';
import { spawnCli, startServe, type ServeProcess } from './serve-process';

const ctx = useDemoModel(SMALL_DEMO);
const fakeStatus = () => ({ version: 1, nodes: [{ node: '10.0.0.7:50051' }], experts: [] }) as unknown as StatusJson;

/** Status of GET url, with the key when given. */
async function get(url: string, key?: string): Promise<number> {
  const res = await fetch(url, { headers: key ? { authorization: `Bearer ${key}` } : {} });
  await res.arrayBuffer();
  return res.status;
}

test('with a key: /status.json, /v1/status, /metrics, /tokenize need it; /health, /ready and the page do not', async () => {
  const s = await serve(ctx.engine, { apiKey: 'k1', http: { routes: [statusRoutes(fakeStatus)] } });
  try {
    for (const p of ['/status.json', '/v1/status', '/metrics', '/v1/models']) {
      expect([p, await get(s.url + p)]).toEqual([p, 401]);
      expect([p, await get(s.url + p, 'wrong')]).toEqual([p, 401]);
      expect([p, await get(s.url + p, 'k1')]).toEqual([p, 200]);
    }
    const tok = await fetch(`${s.url}/tokenize`, { method: 'POST', body: '{"prompt":"hi"}' });
    expect(tok.status).toBe(401);
    expect(((await tok.json()) as { error: { code: string } }).error.code).toBe('invalid_api_key');
    for (const p of ['/health', '/ready', '/', '/status.js']) expect([p, await get(s.url + p)]).toEqual([p, 200]);
  } finally {
    await s.close();
  }
});

test('publicMetrics opens /metrics only; without a key everything is open', async () => {
  const pub = await serve(ctx.engine, { apiKey: 'k1', http: { publicMetrics: true, routes: [statusRoutes(fakeStatus)] } });
  const open = await serve(ctx.engine, { http: { routes: [statusRoutes(fakeStatus)] } });
  try {
    expect(await get(`${pub.url}/metrics`)).toBe(200);
    expect(await get(`${pub.url}/status.json`)).toBe(401);
    expect(await get(`${pub.url}/v1/models`)).toBe(401);
    for (const p of ['/metrics', '/status.json', '/v1/models']) expect([p, await get(open.url + p)]).toEqual([p, 200]);
  } finally {
    await pub.close();
    await open.close();
  }
});

testUnless(chromiumMissing)('the status page reads its JSON with the key from its URL fragment, and says so without it', async () => {
  const s = await serve(ctx.engine, { apiKey: 'k 1', http: { routes: [statusRoutes(observeEngine(ctx.engine, { modelName: 'demo' }))] } });
  const browser = await launchChromium();
  try {
    const page = browser.context.pages()[0] ?? (await browser.context.newPage());
    await page.goto(`${s.url}/?interval=250`);
    await page.waitForFunction(() => /API key/.test(document.getElementById('conn')!.textContent ?? ''), undefined, { timeout: 15_000 });
    expect(await page.textContent('#conn')).toMatch(/needs its API key: open this page as \/#key=YOUR_KEY/);
    await page.goto(`${s.url}/?interval=250#key=k%201`);
    await page.reload();
    await page.waitForFunction(() => Number(document.body.getAttribute('data-updates') ?? 0) >= 2, undefined, { timeout: 15_000 });
    expect(await page.textContent('#conn')).toBe('live');
  } finally {
    await browser.close();
    await s.close();
  }
}, 60000);

describe('serve and stats processes', () => {
  let dir: string;
  const procs: ServeProcess[] = [];
  beforeAll(async () => {
    dir = fs.mkdtempSync(path.join(os.tmpdir(), 'ts-api-key-'));
    await makeDemoModel(path.join(dir, 'model'), SMALL_DEMO);
    fs.writeFileSync(path.join(dir, 'key'), 'file-key\n');
  });
  afterAll(async () => {
    await Promise.all(procs.map((p) => p.kill()));
    fs.rmSync(dir, { recursive: true, force: true });
  });

  /** `stats --url URL --json ...args`: its exit code and output. */
  async function stats(url: string, args: string[], env: NodeJS.ProcessEnv = {}): Promise<{ code: number | null; err: string }> {
    const { TURBOSPARSE_API_KEY: _, ...rest } = process.env;
    const p = spawnCli(['stats', '--url', url, '--json', ...args], { ...rest, ...env });
    return { code: await p.exited, err: p.stderr() };
  }

  test('--api-key-file guards status and metrics, --metrics-port serves metrics without it, stats reads with the file', async () => {
    const p = await startServe(path.join(dir, 'model'), ['--api-key-file', path.join(dir, 'key'), '--metrics-port', '0']);
    procs.push(p);
    const metricsUrl = /metrics (http:\/\/\S+\/metrics)\)/.exec(p.stderr())?.[1];
    expect(metricsUrl).toBeDefined();
    expect(await get(`${p.url}/status.json`)).toBe(401);
    expect(await get(`${p.url}/metrics`)).toBe(401);
    expect(await get(`${p.url}/metrics`, 'file-key')).toBe(200); // the file's newline is not part of the key
    expect(await get(metricsUrl!)).toBe(200);
    expect(await get(`${p.url}/health`)).toBe(200);
    expect(await stats(p.url, ['--api-key-file', path.join(dir, 'key')])).toMatchObject({ code: 0 });
    const none = await stats(p.url, []);
    expect(none.code).not.toBe(0);
    expect(none.err).toMatch(/needs an API key: pass --api-key KEY or --api-key-file FILE/);
  }, 90000);

  test('TURBOSPARSE_API_KEY with --public-metrics: metrics open, status closed; stats reads with the variable', async () => {
    const p = await startServe(path.join(dir, 'model'), ['--public-metrics'], { ...process.env, TURBOSPARSE_API_KEY: 'env-key' });
    procs.push(p);
    expect(await get(`${p.url}/metrics`)).toBe(200);
    expect(await get(`${p.url}/status.json`)).toBe(401);
    expect(await get(`${p.url}/v1/models`, 'env-key')).toBe(200);
    expect(await stats(p.url, [], { TURBOSPARSE_API_KEY: 'env-key' })).toMatchObject({ code: 0 });
    expect(await stats(p.url, ['--api-key', 'env-key'])).toMatchObject({ code: 0 });
  }, 90000);

  test('an unreadable or empty --api-key-file is one line naming the flag, before the model loads', async () => {
    fs.writeFileSync(path.join(dir, 'empty'), '\n');
    for (const [file, why] of [['missing', /cannot read it \(ENOENT\)/], ['empty', /the file is empty/]] as const) {
      const p = spawnCli(['serve', '--model', path.join(dir, 'model'), '--port', '0', '--api-key-file', path.join(dir, file)]);
      expect(await p.exited).not.toBe(0);
      expect(p.stderr()).toMatch(new RegExp(`--api-key-file \\S+${file}: ${why.source}`));
      expect(p.stderr()).not.toMatch(/\n\s+at /);
      expect(p.stderr()).not.toMatch(/loading/);
    }
  }, 60000);
});
