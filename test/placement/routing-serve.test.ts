// GET /v1/stats/routing and `turbosparse stats --export` against real `serve`
// processes on a tiny demo model, experts in process and on two expert nodes: exact
// route counts (every token row of every request, top_k routes each), the API key,
// malformed requests (the server stays up), and a killed expert node (still served).
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { makeDemoModel } from '../../core/demo-model';
import { parseRoutingStats, type RoutingStats } from '../../core/placement/routing-stats';
import { formatShardMap } from '../../core/shard-map';
import { LocalCluster } from '../../coordinator/local-cluster';
import { sourceNodeCommand } from '../cluster/helpers';
import { fetchRoutingStats, runStats } from '../../cli/stats';
import { startServe, type ServeProcess } from '../serve/serve-process';
import { rawExchange } from '../serve/raw-http';

const TINY = { layers: 2, hidden: 64, intermediate: 128, heads: 4, kvHeads: 2, experts: 8, topK: 2, vocab: 300, predictorRank: 16, shards: 1, routerSkew: 1 };
const KEY = 'k1';
const auth = { authorization: `Bearer ${KEY}` };

let dir: string;
const servers: ServeProcess[] = [];
let cluster: LocalCluster | undefined;
beforeAll(async () => {
  dir = fs.mkdtempSync(path.join(os.tmpdir(), 'routing-serve-'));
  await makeDemoModel(dir, TINY);
});
afterAll(async () => {
  await Promise.all(servers.map((s) => s.kill()));
  await cluster?.stop();
  fs.rmSync(dir, { recursive: true, force: true });
});

/** Greedy completions of distinct id prompts, `max` tokens each (no EOS): rows = prompt + max - 1 per request. */
async function complete(url: string, prompts: number[][], max: number): Promise<number> {
  let rows = 0;
  for (const prompt of prompts) {
    const res = await fetch(`${url}/v1/completions`, {
      method: 'POST',
      headers: { ...auth, 'content-type': 'application/json' },
      body: JSON.stringify({ model: 'demo', prompt, max_tokens: max, temperature: 0, ignore_eos: true }),
    });
    expect(res.status).toBe(200);
    rows += prompt.length + max - 1;
  }
  return rows;
}

function checkCounts(s: RoutingStats, rows: number): void {
  expect(s.tokens).toBe(rows);
  for (let L = 0; L < TINY.layers; L++) {
    expect(s.pairs.filter((p) => p.layer === L).reduce((a, p) => a + p.routed_tokens, 0)).toBe(rows * TINY.topK);
  }
}

const PROMPTS = [[1, 5, 6, 7, 8], [1, 40, 41, 42, 43, 44, 45, 46], [1, 100, 101]];

test('local experts: the route needs the key, counts every row exactly; stats --export writes the same; stats prints the scheduler line', async () => {
  const s = await startServe(dir, ['--api-key', KEY]);
  servers.push(s);
  expect((await fetch(`${s.url}/v1/stats/routing`)).status).toBe(401);
  const rows = await complete(s.url, PROMPTS, 4);
  const res = await fetch(`${s.url}/v1/stats/routing`, { headers: auth });
  expect(res.status).toBe(200);
  expect(res.headers.get('content-type')).toBe('application/json');
  const stats = parseRoutingStats(await res.text(), 'GET');
  expect(stats.source).toBe('serve');
  expect(stats.model).toMatchObject({ name: 'demo', layers: 2, experts: 8, top_k: 2 });
  checkCounts(stats, rows);
  expect(stats.nodes).toEqual([expect.objectContaining({ node: 'local', address: 'local' })]);
  expect(stats.nodes[0].calls).toBeGreaterThan(0);

  const out = path.join(dir, 'exported.json');
  const write = jest.spyOn(process.stderr, 'write').mockImplementation(() => true);
  try {
    await runStats({ url: s.url, apiKey: KEY, maxExperts: 32, export: out });
  } finally {
    write.mockRestore();
  }
  const exported = parseRoutingStats(fs.readFileSync(out, 'utf8'), out);
  expect({ ...exported, created: '', nodes: [] }).toEqual({ ...stats, created: '', nodes: [] });
  await expect(fetchRoutingStats(s.url)).rejects.toThrow(/needs an API key: pass --api-key/);
  await expect(runStats({ url: s.url, apiKey: KEY, maxExperts: 32, export: path.join(dir, 'nope', 'r.json') }))
    .rejects.toThrow(/--export .*nope.*cannot write it \(ENOENT\)/);

  let printed = '';
  const print = jest.spyOn(process.stdout, 'write').mockImplementation((chunk) => ((printed += String(chunk)), true));
  try {
    await runStats({ url: s.url, apiKey: KEY, maxExperts: 32 });
  } finally {
    print.mockRestore();
  }
  expect(printed).toMatch(/^scheduler: running 0, waiting 0, KV [\d.]+ MiB of 4096\.0 MiB, prefix cache [\d.]+ MiB kept, [\d.]+% of prompt tokens hit, preemptions 0$/m);
  expect(printed).toMatch(/expert latency per node/);
}, 60_000);

test('malformed requests to the route: 405 or 401 or 404, the server stays up (bounded fuzz)', async () => {
  const s = servers[0];
  for (const method of ['POST', 'PUT', 'DELETE', 'PATCH']) {
    const r = await fetch(`${s.url}/v1/stats/routing`, { method, headers: auth, body: method === 'DELETE' ? undefined : '{"x":1}' });
    expect(r.status).toBe(405);
  }
  expect((await fetch(`${s.url}/v1/stats/routing?reset=1&x=%00`, { headers: auth })).status).toBe(200);
  expect((await fetch(`${s.url}/v1/stats/routing`, { method: 'HEAD', headers: auth })).status).toBe(200);
  expect((await fetch(`${s.url}/v1/stats/routing/extra`, { headers: auth })).status).toBe(404);
  expect((await fetch(`${s.url}/v1/stats/routing`, { headers: { authorization: 'Bearer wrong' } })).status).toBe(401);
  // Raw bytes: broken request lines, a huge header, garbage; each gets an answer or a close.
  let seed = 7;
  const rand = () => ((seed = (seed * 1103515245 + 12345) & 0x7fffffff) / 0x7fffffff);
  const raws = [
    'GET /v1/stats/routing HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer k1\r\nContent-Length: -5\r\n\r\n',
    'GET /v1/stats/routing HTTP/9.9\r\n\r\n',
    `GET /v1/stats/routing HTTP/1.1\r\nHost: x\r\nX: ${'a'.repeat(100_000)}\r\n\r\n`,
    'GET /v1/stats/routing\0 HTTP/1.1\r\n\r\n',
    ...Array.from({ length: 8 }, () => Buffer.from(Array.from({ length: 64 + Math.floor(rand() * 512) }, () => Math.floor(rand() * 256))).toString('latin1')),
  ];
  for (const raw of raws) {
    const reply = await rawExchange(s.url, Buffer.from(raw, 'latin1'), 3000, true);
    expect(reply.text === '' || /^HTTP\/1\.1 \d{3}/.test(reply.text)).toBe(true);
  }
  expect((await fetch(`${s.url}/v1/stats/routing`, { headers: auth })).status).toBe(200);
  expect(s.child.exitCode).toBeNull();
}, 30_000);

test('two expert nodes: both listed with their addresses and latency, counts exact; after kill -9 of one the route still answers', async () => {
  const dims = { hiddenSize: TINY.hidden, intermediateSize: TINY.intermediate, numLayers: TINY.layers, numExperts: TINY.experts };
  cluster = await LocalCluster.start({ modelDir: dir, dims, nodes: 2, nodeCommand: sourceNodeCommand(), device: 'cpu', threads: 1 });
  const mapFile = path.join(dir, 'shard-map.yaml');
  fs.writeFileSync(mapFile, formatShardMap(cluster.shardMap));
  // Two lanes per step: each lane's layer is counted once.
  const s = await startServe(dir, ['--api-key', KEY, '--experts', mapFile, '--call-timeout-ms', '2000', '--overlap', 'on']);
  servers.push(s);
  const rows = await complete(s.url, PROMPTS, 3);
  const stats = await fetchRoutingStats(s.url, KEY);
  checkCounts(stats, rows);
  expect(stats.nodes).toHaveLength(2);
  for (const n of stats.nodes) {
    expect(n.address).toMatch(/^127\.0\.0\.1:\d+$/);
    expect(n.calls).toBeGreaterThan(0);
    expect(n.p50_ms).not.toBeNull();
  }
  expect(stats.nodes.map((n) => n.address).sort()).toEqual(cluster.shardMap.nodes.map((n) => n.address).sort());
  cluster.kill(0, 'SIGKILL');
  const failed = await fetch(`${s.url}/v1/completions`, {
    method: 'POST', headers: { ...auth, 'content-type': 'application/json' },
    body: JSON.stringify({ model: 'demo', prompt: [1, 200, 201], max_tokens: 2, temperature: 0 }),
  });
  expect(failed.status).toBeGreaterThanOrEqual(500);
  const after = await fetchRoutingStats(s.url, KEY);
  expect(after.nodes).toHaveLength(2);
  // Layers before the failed one may have counted the failed request's rows; nothing is lost.
  expect(after.tokens).toBeGreaterThanOrEqual(rows);
  expect(s.child.exitCode).toBeNull();
}, 90_000);
