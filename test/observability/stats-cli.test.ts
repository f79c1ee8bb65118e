// `turbosparse stats --url` prints the latency table of a running coordinator from
// its status JSON; the table's numbers are the window quantiles of the calls made.
import http from 'node:http';
import type { AddressInfo } from 'node:net';
import { Registry } from '../../core/metrics';
import { buildStatus, statusRoutes, type EngineObservability } from '../../coordinator/telemetry';
import { ExpertStats } from '../../coordinator/telemetry/expert-stats';
import { fetchStatus, runStats } from '../../cli/stats';

const I = 1000;

/** A coordinator's observability without an engine: two nodes, calls with known latencies. */
function fakeObservability(): EngineObservability {
  const stats = new ExpertStats(I);
  // node0 holds experts 0,1 of layer 0; node1 expert 2 of layer 1 (slow: 10..100 ms).
  for (let i = 1; i <= 100; i++) {
    stats.recordCall({ layer: 0, node: 'node0', experts: [0, 1], slots: [2, 1], active: [200, 100], tokens: 2, seconds: i / 1e4, computeUs: 50, bytesIn: 100, bytesOut: 80, wire: 'f32' });
    stats.recordCall({ layer: 1, node: 'node1', experts: [2], slots: [3], active: [150], tokens: 3, seconds: i / 1e3, computeUs: 900, bytesIn: 120, bytesOut: 90, wire: 'f32' });
  }
  stats.recordCall({ layer: 1, node: 'node1', experts: [2], slots: [1], active: [], tokens: 1, seconds: 0.5, bytesIn: 40, bytesOut: 0, wire: 'f32', error: 'UNAVAILABLE' });
  stats.recordStep(1, 0, 1);
  return {
    engine: { config: { numLayers: 2, numExperts: 4, topK: 2, hiddenSize: 64, intermediateSize: I }, experts: { name: 'cluster:2' } },
    registry: new Registry(),
    stats,
    startedAt: Date.now() - 5000,
    modelName: 'demo',
    flush: () => {},
    nodes: () => [
      { address: '127.0.0.1:5001', name: 'node0', healthy: true, expertsHeld: 2, expertsSpec: '0:0-1', transport: 'socket' },
      { address: '127.0.0.1:5002', name: 'node1', healthy: false, lastError: 'connection refused', expertsHeld: 1, expertsSpec: '1:2' },
    ],
  } as unknown as EngineObservability;
}

let server: http.Server;
let url: string;
const obs = fakeObservability();

beforeAll(async () => {
  const route = statusRoutes(obs);
  server = http.createServer((req, res) => {
    const path = (req.url ?? '/').split('?')[0];
    if (path === '/v1/status' && req.headers.authorization !== 'Bearer sekret') {
      res.writeHead(401).end();
      return;
    }
    if (!route(req, res, path)) res.writeHead(404).end();
  });
  await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
  url = `http://127.0.0.1:${(server.address() as AddressInfo).port}`;
});

afterAll(() => new Promise<void>((r) => server.close(() => r())));

test('status JSON: nodes with health, per-expert quantiles, heatmap cells, hottest experts', () => {
  const s = buildStatus(obs);
  expect(s.nodes.map((n) => [n.node, n.healthy, n.calls])).toEqual([['node0', true, 100], ['node1', false, 101]]);
  expect(s.nodes[1].last_error).toBe('connection refused');
  const e2 = s.experts.find((e) => e.layer === 1 && e.expert === 2)!;
  expect(e2.p50_ms).toBeCloseTo(50, 6);
  expect(e2.p99_ms).toBeCloseTo(99, 6);
  expect(e2.errors).toBe(1);
  expect(e2.active_fraction).toBeCloseTo(150 / (3 * I), 4);
  expect(s.heatmap).toHaveLength(2);
  expect(s.heatmap[0][0]!.p50_ms).toBeCloseTo(5, 6);
  expect(s.heatmap[0][2]).toBeNull();
  expect(s.hottest[0]).toMatchObject({ layer: 1, expert: 2 }); // 300 slots vs 200 and 100
  expect(s.totals).toMatchObject({ calls: 201, errors: 1 });
});

test('status JSON queue: KV use, prefix-cache bytes and hits, preemptions (gauges and counters); null without a scheduler', () => {
  expect(buildStatus(obs).queue).toMatchObject({ kv_used_bytes: null, prefix_cache_hit_tokens: null, preemptions: null });
  const registry = new Registry();
  registry.gauge({ name: 'turbosparse_kv_cache_reserved_bytes', help: 'x', collect: (g) => g.set(undefined, 1024) });
  registry.gauge({ name: 'turbosparse_prefix_cache_bytes', help: 'x', collect: (g) => g.set(undefined, 512) });
  registry.counter({ name: 'turbosparse_prefix_cache_hit_tokens_total', help: 'x' }).inc(undefined, 39);
  registry.counter({ name: 'turbosparse_prefix_cache_queried_tokens_total', help: 'x' }).inc(undefined, 80);
  registry.counter({ name: 'turbosparse_scheduler_preemptions_total', help: 'x' }).inc();
  const q = buildStatus({ ...obs, registry } as EngineObservability).queue;
  expect(q).toMatchObject({ kv_used_bytes: 1024, prefix_cache_bytes: 512, prefix_cache_hit_tokens: 39, prefix_cache_queried_tokens: 80, preemptions: 1 });
});

test('stats --url prints p50/p99 per node and per expert and the hottest experts', async () => {
  const out: string[] = [];
  const spy = jest.spyOn(process.stdout, 'write').mockImplementation((chunk: string | Uint8Array) => {
    out.push(String(chunk));
    return true;
  });
  try {
    await runStats({ url, maxExperts: 32 });
  } finally {
    spy.mockRestore();
  }
  const text = out.join('');
  expect(text).toContain('demo at');
  const lines = text.split('\n');
  // Per node: name and address, experts held, calls, p50/p99/mean ms, compute p50, active,
  // request/reply bytes per token row (node1: 9000 / 301 and 12040 / 301), errors, health.
  expect(lines.find((l) => l.startsWith('node '))).toMatch(
    /^node\s+experts\s+calls\s+p50 ms\s+p99 ms\s+mean ms\s+compute p50\s+active\s+sent B\/tok\s+recv B\/tok\s+errors\s+state\s+via$/);
  const node1 = lines.find((l) => l.startsWith('node1'))!;
  expect(node1).toMatch(/^node1 127\.0\.0\.1:5002\s+1 \(1:2\)\s+101\s+50\.000\s+99\.000\s+50\.500\s+0\.900\s+5\.0%\s+30\s+40\s+1\s+DOWN\s+-$/);
  expect(lines.find((l) => l.startsWith('node0'))).toMatch(/^node0 127\.0\.0\.1:5001\s+2 \(0:0-1\)\s+100\s.*\s40\s+50\s+0\s+up\s+socket$/);
  const e10 = text.split('\n').find((l) => l.startsWith('0:1 '))!;
  expect(e10).toMatch(/^0:1\s+100\s+100\s+5\.000\s+9\.900\s/);
  expect(text).toMatch(/hottest experts: 1:2 \(50\.0%\), 0:0 \(33\.3%\), 0:1 \(16\.7%\)/);
});

test('stats uses /v1/status with an API key, and says clearly what is wrong otherwise', async () => {
  await expect(fetchStatus(url, 'sekret')).resolves.toMatchObject({ version: 1 });
  await expect(fetchStatus(url, 'wrong')).rejects.toThrow(/needs an API key: pass --api-key/);
  await expect(fetchStatus('http://127.0.0.1:1')).rejects.toThrow(/cannot reach http:\/\/127\.0\.0\.1:1\/status\.json .*is `turbosparse serve` running/);
  await expect(fetchStatus('not a url')).rejects.toThrow(/is not a URL/);
  await expect(fetchStatus(`${url}/nothing-here`)).rejects.toThrow(/HTTP 404/);
});

test('status JSON speculative: null when off; proposer, acceptance and tokens per forward pass when on', () => {
  expect(buildStatus(obs).speculative).toBeNull();
  const engine = {
    ...(obs.engine as object),
    proposer: { name: 'ngram:4:3', k: 4 },
    speculation: { forwardPasses: 10, draftTokens: 30, acceptedTokens: 18 },
  };
  expect(buildStatus({ ...obs, engine } as unknown as EngineObservability).speculative).toEqual({
    proposer: 'ngram:4:3', forward_passes: 10, draft_tokens: 30, accepted_tokens: 18, acceptance: 0.6, tokens_per_forward_pass: 2.8,
  });
});
