// Live rebalancing end to end: `turbosparse serve` (a real process) over two
// expert-node processes and its own "local" experts (a shard-map FILE), 16
// concurrent greedy streams, and POST /v1/admin/rebalance in the middle of them
// moving pairs (to the coordinator's local experts among others): nothing is
// dropped and every stream's text is the same as without a rebalance. Also: 409
// while one runs, malformed admin bodies are one-line 400s (the server stays up),
// the API key guards the route, status.json shows the moves, `turbosparse
// rebalance --dry-run` prints the plan.
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { makeDemoModel } from '../../core/demo-model';
import { ROUTING_FORMAT, type RoutingStats } from '../../core/placement/routing-stats';
import { formatShardMap } from '../../core/shard-map';
import { LocalCluster } from '../../coordinator/local-cluster';
import type { RebalancePlan, RebalanceStatus } from '../../coordinator/rebalancer';
import { Rng } from '../../coordinator/sampler';
import { runRebalance } from '../../cli/rebalance';
import { nasty } from '../helpers/hostile-bodies';
import { SMALL_DEMO, waitFor } from '../serve/helpers';
import { type ServeProcess, startServe } from '../serve/serve-process';
import { sourceNodeCommand } from '../cluster/helpers';

const dims = { hiddenSize: 64, intermediateSize: 128, numLayers: 2, numExperts: 4 };
const KEY = 'rebalance-test-key';
const auth = { authorization: `Bearer ${KEY}` };

/** Expert 0 of every layer takes most routes: a placement that differs from the byte-balanced one. */
function skewedRouting(): RoutingStats {
  const pairs = [];
  for (let layer = 0; layer < 2; layer++) {
    for (let expert = 0; expert < 4; expert++) pairs.push({ layer, expert, routed_tokens: expert === 0 ? 1500 : 100 + 50 * expert, active_fraction: 0.2 });
  }
  return {
    format: ROUTING_FORMAT, version: 1, source: 'profile', created: new Date().toISOString(),
    model: { name: 'demo', layers: 2, experts: 4, top_k: 2, hidden_size: 64, intermediate_size: 128 }, tokens: 1000, pairs, nodes: [],
  };
}

describe('rebalance under load (serve process, 2 expert-node processes + local experts)', () => {
  let dir: string;
  let cluster: LocalCluster;
  let serve: ServeProcess;

  beforeAll(async () => {
    dir = fs.mkdtempSync(path.join(os.tmpdir(), 'ts-rebalance-'));
    await makeDemoModel(dir, SMALL_DEMO);
    cluster = await LocalCluster.start({ modelDir: dir, dims, nodes: 2, nodeCommand: sourceNodeCommand(), device: 'cpu', threads: 1 });
    // The coordinator itself holds a copy of one pair to start with.
    const map = { nodes: [...cluster.shardMap.nodes, { address: 'local', experts: [cluster.shardMap.nodes[0].experts[0]] }] };
    fs.writeFileSync(path.join(dir, 'shards.yaml'), formatShardMap(map));
    serve = await startServe(dir, ['--experts', path.join(dir, 'shards.yaml'), '--api-key', KEY, '--prefill-chunk', '64']);
  }, 90_000);
  afterAll(async () => {
    await serve?.kill();
    await cluster?.stop();
    if (dir) fs.rmSync(dir, { recursive: true, force: true });
  });

  const admin = async (method: 'GET' | 'POST', body?: unknown, raw?: string, headers: Record<string, string> = auth) => {
    const res = await fetch(`${serve.url}/v1/admin/rebalance`, {
      method, headers: { ...headers, 'content-type': 'application/json' },
      body: raw ?? (body === undefined ? undefined : JSON.stringify(body)),
    });
    return { status: res.status, body: (await res.json()) as Record<string, unknown> };
  };

  /** One greedy stream: its text, and once its first piece arrived. */
  async function stream(i: number, onFirst: () => void): Promise<{ text: string; finish: string | null; ended: number }> {
    const res = await fetch(`${serve.url}/v1/completions`, {
      method: 'POST', headers: { ...auth, 'content-type': 'application/json' },
      body: JSON.stringify({ model: 'demo', prompt: `request ${i}: the quick brown fox ${'jumps '.repeat(i % 5)}`, max_tokens: 48 + (i % 4) * 8,
        temperature: 0, stream: true, ignore_eos: true }),
    });
    expect(res.status).toBe(200);
    let text = '';
    let finish: string | null = null;
    let buffered = '';
    let first = true;
    const decoder = new TextDecoder();
    for await (const chunk of res.body as unknown as AsyncIterable<Uint8Array>) {
      buffered += decoder.decode(chunk, { stream: true });
      let cut: number;
      while ((cut = buffered.indexOf('\n\n')) >= 0) {
        const event = buffered.slice(0, cut).replace(/^data: /, '');
        buffered = buffered.slice(cut + 2);
        if (event === '[DONE]') continue;
        const data = JSON.parse(event) as { error?: { message: string }; choices: { text: string; finish_reason: string | null }[] };
        if (data.error) throw new Error(`stream ${i} failed: ${data.error.message}`);
        text += data.choices[0].text;
        finish = data.choices[0].finish_reason ?? finish;
        if (first) {
          first = false;
          onFirst();
        }
      }
    }
    return { text, finish, ended: Date.now() };
  }

  const N = 16;
  const runAll = (onAllStarted: () => void) => {
    let started = 0;
    return Promise.all(Array.from({ length: N }, (_, i) => stream(i, () => ++started === N && onAllStarted())));
  };

  test('a rebalance in the middle of 16 streams moves pairs (also to local) and changes no token', async () => {
    // The shard map's local pair loaded in process; "local" is no network address to warn about.
    expect(serve.stderr()).toMatch(/local experts: 1 pair\(s\) loaded in process/);
    expect(serve.stderr()).not.toMatch(/plaintext gRPC/);
    const want = await runAll(() => undefined);
    expect(want.every((w) => w.finish === 'length' && w.text.length > 0)).toBe(true);

    let plan: RebalancePlan | undefined;
    let posted: Promise<void> | undefined;
    const got = await runAll(() => {
      posted = admin('POST', { routing: skewedRouting() }).then((r) => {
        expect(r.status).toBe(200);
        plan = r.body as unknown as RebalancePlan;
      });
    });
    await posted;
    let status: RebalanceStatus | undefined;
    await waitFor(async () => {
      status = (await admin('GET')).body as unknown as RebalanceStatus;
      return status.state === 'done' || status.state === 'failed';
    }, 20_000, 'the rebalance to finish');
    process.stderr.write(`rebalance: ${plan!.moves.length} moves, predicted ${plan!.predicted.before_ms.toFixed(4)} -> ` +
      `${plan!.predicted.after_ms.toFixed(4)} ms/token; started ${status!.started}, finished ${status!.finished}, ` +
      `last stream ended ${new Date(Math.max(...got.map((g) => g.ended))).toISOString()}\n`);
    expect(status!.state).toBe('done');
    expect(plan!.moves.length).toBeGreaterThan(0);
    expect(plan!.moves.some((m) => m.to === 'local' || m.from === 'local')).toBe(true);
    expect(status!.moves.length).toBe(plan!.moves.length);
    expect(status!.moves.every((m) => m.phase === 'done')).toBe(true);
    // The moves ran while streams were still generating.
    expect(Date.parse(status!.started!)).toBeLessThan(Math.max(...got.map((g) => g.ended)));
    expect(got.map((g) => g.text)).toEqual(want.map((w) => w.text));
    expect(got.every((g) => g.finish === 'length')).toBe(true);

    const page = await (await fetch(`${serve.url}/status.json`, { headers: auth })).json() as { rebalance?: RebalanceStatus; nodes: { node: string; experts_held?: number }[] };
    expect(page.rebalance?.state).toBe('done');
    expect(page.rebalance?.moves.length).toBe(plan!.moves.length);
    expect(page.nodes.find((n) => n.node === 'local')?.experts_held).toBeGreaterThan(1);

    // Same text after the rebalance too.
    const again = await runAll(() => undefined);
    expect(again.map((g) => g.text)).toEqual(want.map((w) => w.text));
  }, 120_000);

  test('a second rebalance while one runs is a 409; a node that does not answer is a 503 and moves nothing', async () => {
    // A hung node holds the first one in planning (its Info does not answer, 5 s) and then fails it.
    const victim = cluster.nodes[1].pid;
    process.kill(victim, 'SIGSTOP');
    try {
      const first = admin('POST', { dry_run: false });
      // Running (not a fixed 300 ms, which a loaded CI machine may not give the POST to arrive).
      await waitFor(async () => (await admin('GET')).body.state === 'planning', 4000, 'the first rebalance to be planning');
      const second = await admin('POST', { dry_run: true });
      expect(second.status).toBe(409);
      expect(String((second.body.error as { message: string }).message)).toMatch(/already running/);
      const failed = await first;
      expect(failed.status).toBe(503);
      expect(String((failed.body.error as { message: string }).message)).toMatch(/cannot read every node's Info/);
      expect((await admin('GET')).body).toMatchObject({ state: 'failed', moves: [] });
    } finally {
      process.kill(victim, 'SIGCONT');
    }
    // Once it answers again, a rebalance runs (nothing left to move: the map already is the plan).
    await waitFor(async () => (await admin('POST', { dry_run: false })).status === 200, 20_000, 'a rebalance to be accepted');
    await waitFor(async () => (await admin('GET')).body.state === 'done', 20_000, 'the rebalance to end');
  }, 60_000);

  test('malformed admin bodies are one-line 400s; the key guards the route; the server stays up', async () => {
    expect((await admin('POST', { dry_run: true }, undefined, {})).status).toBe(401);
    const fixed: [string, RegExp][] = [
      ['not json', /not valid JSON/],
      ['[]', /expected \{"routing"/],
      ['{"dry_run":"yes","extra":1}', /./],
      ['{"dry_run":true,"replicas":0}', /replicas/],
      ['{"dry_run":true,"replicas":99}', /replicas/],
      ['{"dry_run":true,"routing":5}', /routing/],
      ['{"dry_run":true,"routing":{}}', /routing/],
      ['{"dry_run":true,"routing":{"format":"turbosparse-routing"}}', /routing/],
    ];
    for (const [raw, pattern] of fixed) {
      const r = await admin('POST', undefined, raw);
      expect(r.status).toBe(400);
      const message = (r.body.error as { message: string }).message;
      expect(message).toMatch(pattern);
      expect(message).not.toMatch(/\n/);
    }
    // A wrong model's routing: one line naming it.
    const other = { ...skewedRouting(), model: { ...skewedRouting().model, layers: 3 } };
    const wrong = await admin('POST', { dry_run: true, routing: other });
    expect(wrong.status).toBe(400);
    expect((wrong.body.error as { message: string }).message).toMatch(/3 layers x 4 experts/);
    // Seeded hostile values in each field (always a dry run, so nothing moves).
    const r = new Rng(16);
    for (let i = 0; i < 30; i++) {
      const field = ['routing', 'replicas', 'dry_run'][i % 3];
      const v = nasty(r);
      if (field === 'dry_run' && (typeof v.value === 'boolean' || (v.value === undefined && !v.raw))) continue;
      const raw = field === 'dry_run'
        ? `{"dry_run":${v.raw ?? JSON.stringify(v.value)}}`
        : `{"dry_run":true,${v.value === undefined && !v.raw ? '' : `"${field}":${v.raw ?? JSON.stringify(v.value)}`}}`.replace(',}', '}');
      const res = await admin('POST', undefined, raw);
      const valid = field === 'replicas' ? v.value === undefined && !v.raw || (Number.isInteger(v.value) && (v.value as number) >= 1 && (v.value as number) <= 3)
        : field === 'routing' ? v.value === undefined && !v.raw : false;
      if (valid) {
        expect(res.status).toBe(200);
      } else {
        expect([400, 413]).toContain(res.status);
        expect((res.body.error as { message: string }).message).not.toMatch(/\n/);
      }
    }
    expect((await fetch(`${serve.url}/health`)).status).toBe(200);
  }, 60_000);

  test('turbosparse rebalance --dry-run prints the moves and the predicted gain', async () => {
    let out = '';
    const routing = path.join(dir, 'routing.json');
    fs.writeFileSync(routing, JSON.stringify(skewedRouting()));
    await runRebalance({ url: serve.url, routing, dryRun: true, apiKey: KEY, timeout: 60 }, (t) => void (out += t));
    expect(out).toMatch(/^plan \(dry run\): \d+ move\(s\), routing request/);
    expect(out).toMatch(/predicted per token .* ms -> .* ms \(-?\d+\.\d% (faster|slower)\)/);
    await expect(runRebalance({ url: serve.url, dryRun: true, timeout: 60 }, () => undefined)).rejects.toThrow(/needs an API key/);
  }, 30_000);

  test('turbosparse rebalance --replicas 2 --wait adds a second copy of every pair and waits for it', async () => {
    let out = '';
    await runRebalance({ url: serve.url, replicas: 2, wait: true, apiKey: KEY, timeout: 60 }, (t) => void (out += t));
    expect(out).toMatch(/^rebalancing: \d+ move\(s\), routing \w+, 2 copies per pair/);
    expect(out).toMatch(/\(new copy\) ->/);
    expect(out).toMatch(/rebalance done: (\d+) of \1 move\(s\) done/);
    const page = await (await fetch(`${serve.url}/status.json`, { headers: auth })).json() as { nodes: { experts_held?: number }[] };
    expect(page.nodes.reduce((sum, n) => sum + (n.experts_held ?? 0), 0)).toBeGreaterThanOrEqual(2 * 2 * 4);
  }, 30_000);
});
