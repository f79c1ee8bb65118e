/// <reference lib="dom" />
// Observability end to end on a real 2-node loopback cluster (expert nodes are
// separate processes): one generation through the HTTP API yields ONE trace with
// the coordinator's request/step/layer/CLIENT spans and the nodes' SERVER spans
// (written by the nodes to a JSONL file, OTEL_TRACES_EXPORTER=jsonl); /metrics
// parses as Prometheus text and its per-expert histogram counts match the calls
// made; the status page, in a real headless chromium, fills its heatmap.
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { SpanKind } from '@opentelemetry/api';
import { InMemorySpanExporter, SimpleSpanProcessor, type ReadableSpan } from '@opentelemetry/sdk-trace-base';
import { ChatTemplate } from '../../core/chat-template';
import { makeDemoModel } from '../../core/demo-model';
import { Registry } from '../../core/metrics';
import { COORDINATOR_SERVICE, readSpanFile, setupTelemetry, shutdownTelemetry, type SpanRecord } from '../../core/telemetry';
import { TextTokenizer } from '../../core/tokenizer';
import type { Engine } from '../../coordinator/engine';
import { createHttpServer, type HttpServer } from '../../coordinator/http/server';
import { loadEngine } from '../../coordinator/load-engine';
import { LocalCluster } from '../../coordinator/local-cluster';
import { RemoteExperts } from '../../coordinator/remote-experts';
import { Scheduler } from '../../coordinator/scheduler';
import { buildStatus, observeEngine, requestTracing, statusRoutes, submitTracing, type EngineObservability, type StatusJson } from '../../coordinator/telemetry';
import { sourceNodeCommand } from '../cluster/helpers';
import { chromiumMissing, launchChromium } from '../helpers/chromium';
import { histogramCounts, parsePrometheusText } from '../helpers/prometheus';
import { testUnless } from '../helpers/skip';

const DEMO = { layers: 2, hidden: 64, intermediate: 128, heads: 4, kvHeads: 2, experts: 4, topK: 2, vocab: 300, predictorRank: 16, shards: 1 };
const dims = { hiddenSize: 64, intermediateSize: 128, numLayers: 2, numExperts: 4 };
const EXPERT_ATTRS = [
  'moe.layer', 'moe.experts', 'moe.node', 'moe.tokens', 'moe.active_neurons', 'moe.queue_us', 'moe.compute_us', 'moe.bytes_in',
  'moe.bytes_out', 'moe.wire',
];

let tmp: string;
let spanFile: string;
let cluster: LocalCluster | undefined;
let engine: Engine | undefined;
let scheduler: Scheduler | undefined;
let http: HttpServer | undefined;
let url: string;
let obs: EngineObservability;
const mem = new InMemorySpanExporter();
const registry = new Registry();
/** Successful node calls per (layer, expert, node), counted by an independent observer. */
const calls = new Map<string, number>();

async function waitFor<T>(get: () => T | undefined | false, ms: number, what: string): Promise<T> {
  const t0 = Date.now();
  for (;;) {
    const v = get();
    if (v) return v;
    if (Date.now() - t0 > ms) throw new Error(`timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 50));
  }
}

async function complete(prompt: string, maxTokens: number): Promise<{ usage: { completion_tokens: number } }> {
  const res = await fetch(`${url}/v1/completions`, {
    method: 'POST',
    headers: { 'content-type': 'application/json' },
    body: JSON.stringify({ model: 'model', prompt, max_tokens: maxTokens, temperature: 0 }),
  });
  expect(res.status).toBe(200);
  return (await res.json()) as { usage: { completion_tokens: number } };
}

beforeAll(async () => {
  tmp = fs.mkdtempSync(path.join(os.tmpdir(), 'ts-obs-'));
  spanFile = path.join(tmp, 'node-spans.jsonl');
  const modelDir = path.join(tmp, 'model');
  await makeDemoModel(modelDir, DEMO);
  setupTelemetry({ serviceName: COORDINATOR_SERVICE, env: {}, spanProcessors: [new SimpleSpanProcessor(mem)], flushOnExit: false, log: () => {} });
  // A user's OTEL_SERVICE_NAME and service.instance.id name the coordinator; the nodes it starts must
  // still name themselves (and keep the user's other resource attributes).
  const userService = process.env.OTEL_SERVICE_NAME;
  const userAttrs = process.env.OTEL_RESOURCE_ATTRIBUTES;
  process.env.OTEL_SERVICE_NAME = 'user-coordinator';
  process.env.OTEL_RESOURCE_ATTRIBUTES = 'service.instance.id=user-coordinator-1,deployment.environment=obs-test';
  try {
    cluster = await LocalCluster.start({
      modelDir, dims, nodes: 2, nodeCommand: sourceNodeCommand(), device: 'cpu', threads: 1,
      // The nodes trace to a file this test reads.
      env: { OTEL_TRACES_EXPORTER: 'jsonl', TURBOSPARSE_TRACES_FILE: spanFile, OTEL_EXPORTER_OTLP_ENDPOINT: '' },
    });
  } finally {
    if (userService === undefined) delete process.env.OTEL_SERVICE_NAME;
    else process.env.OTEL_SERVICE_NAME = userService;
    if (userAttrs === undefined) delete process.env.OTEL_RESOURCE_ATTRIBUTES;
    else process.env.OTEL_RESOURCE_ATTRIBUTES = userAttrs;
  }
  const shardMap = cluster.shardMap;
  engine = await loadEngine({
    modelDir, device: 'cpu', threads: 1, log: () => undefined, experts: { kind: 'file', path: 'cluster' },
    remoteExperts: () => RemoteExperts.connect({ shardMap, model: dims, callTimeoutMs: 10_000 }),
  });
  // Per-expert histograms (--metrics-detail expert): their counts are checked against the calls.
  obs = observeEngine(engine, { registry, detail: 'layers', metricsDetail: 'expert' });
  (engine.experts as unknown as RemoteExperts).addObserver({
    onCallEnd: (info, r) => {
      if (!r.ok) return;
      for (const e of info.experts) {
        const key = `expert=${e},layer=${info.layer},node=${info.nodeName ?? info.node}`;
        calls.set(key, (calls.get(key) ?? 0) + 1);
      }
    },
  });
  const tokenizer = TextTokenizer.fromModel(engine.folder);
  scheduler = new Scheduler(engine, tokenizer, { metrics: registry, onSubmit: submitTracing(obs) });
  http = createHttpServer({
    scheduler, tokenizer, modelName: 'model', metrics: registry, log: () => undefined,
    chatTemplate: ChatTemplate.fromModel(engine.folder.dir, engine.folder.tokenizerConfig),
    routes: [statusRoutes(obs)],
    onRequest: requestTracing(obs),
  });
  url = (await http.listen(0)).url;
}, 60_000);

afterAll(async () => {
  await http?.close();
  await scheduler?.close();
  await engine?.close();
  await cluster?.stop();
  await shutdownTelemetry();
  if (tmp) fs.rmSync(tmp, { recursive: true, force: true });
});

describe('a 2-node loopback cluster', () => {
  test('one generation is ONE trace: request, steps, layers, a CLIENT span per node call and its SERVER span on the node', async () => {
    mem.reset();
    const out = await complete('hello experts', 3);
    const spans = mem.getFinishedSpans();
    const traceIds = new Set(spans.map((s) => s.spanContext().traceId));
    expect(traceIds.size).toBe(1);
    const traceId = [...traceIds][0];

    const byName = (n: string) => spans.filter((s) => s.name === n);
    const request = spans.find((s) => s.name.startsWith('text_completion'))!;
    expect(request).toBeDefined();
    expect(request.parentSpanContext).toBeUndefined();
    expect(request.resource.attributes['service.name']).toBe('turbosparse-coordinator');
    expect(request.attributes).toMatchObject({
      'gen_ai.operation.name': 'text_completion',
      'gen_ai.request.model': 'model',
      'gen_ai.usage.output_tokens': out.usage.completion_tokens,
    });
    expect(request.attributes['gen_ai.usage.input_tokens']).toBeGreaterThan(0);

    const steps = byName('engine.step');
    expect(steps.length).toBeGreaterThanOrEqual(out.usage.completion_tokens);
    for (const s of steps) expect(s.parentSpanContext?.spanId).toBe(request.spanContext().spanId);
    const layers = byName('moe.layer');
    expect(layers).toHaveLength(steps.length * dims.numLayers);

    const clients = byName('moe.expert_call');
    expect(clients.length).toBeGreaterThanOrEqual(steps.length * dims.numLayers);
    const layerIds = new Set(layers.map((l) => l.spanContext().spanId));
    for (const c of clients) {
      expect(c.kind).toBe(SpanKind.CLIENT);
      expect(layerIds.has(c.parentSpanContext!.spanId)).toBe(true);
      for (const a of EXPERT_ATTRS) expect(c.attributes[a]).toBeDefined();
      expect(['node0', 'node1']).toContain(c.attributes['moe.node']);
      expect(c.attributes['moe.wire']).toBe('f32');
      expect(c.attributes['moe.bytes_out']).toBeGreaterThan(0);
      expect(c.attributes['moe.bytes_in']).toBeGreaterThan(0);
      expect(c.attributes['moe.active_neurons']).toBeGreaterThan(0);
    }

    // The nodes' SERVER spans: same trace, each the child of one CLIENT span, named by its process.
    const clientIds = new Map(clients.map((c) => [c.spanContext().spanId, c] as [string, ReadableSpan]));
    const servers = await waitFor(
      () => {
        const s = readSpanFile(spanFile).filter((r) => r.traceId === traceId);
        return s.length >= clients.length ? s : undefined;
      },
      10_000,
      'the expert nodes\' spans',
    );
    expect(servers).toHaveLength(clients.length);
    const nodesSeen = new Set<string>();
    for (const s of servers as SpanRecord[]) {
      expect(s.kind).toBe('SERVER');
      expect(s.name).toBe('moe.expert_serve');
      expect(s.resource['service.name']).toBe('turbosparse-expert-node');
      expect(s.resource['deployment.environment']).toBe('obs-test');
      const parent = clientIds.get(s.parentSpanId!)!;
      expect(parent).toBeDefined();
      expect(s.attributes['moe.layer']).toBe(parent.attributes['moe.layer']);
      expect(s.attributes['moe.experts']).toEqual(parent.attributes['moe.experts']);
      expect(s.attributes['moe.node']).toBe(parent.attributes['moe.node']);
      expect(s.attributes['moe.active_neurons']).toBe(parent.attributes['moe.active_neurons']);
      expect(s.attributes['moe.compute_us']).toBe(parent.attributes['moe.compute_us']);
      for (const a of EXPERT_ATTRS) expect(s.attributes[a]).toBeDefined();
      nodesSeen.add(String(s.resource['service.instance.id']));
    }
    expect(nodesSeen.size).toBe(2); // each node its own service.instance.id, not the user's
    expect(nodesSeen.has('user-coordinator-1')).toBe(false);
  });

  test('/metrics parses as Prometheus text and per-expert histogram counts match the calls made', async () => {
    await complete('more tokens please', 4);
    const res = await fetch(`${url}/metrics`);
    expect(res.headers.get('content-type')).toContain('text/plain; version=0.0.4');
    const fams = parsePrometheusText(await res.text());
    const latency = histogramCounts(fams.get('turbosparse_expert_call_seconds')!);
    expect(latency.size).toBeGreaterThan(0);
    expect(new Map([...latency].sort())).toEqual(new Map([...calls].sort()));
    for (const name of ['turbosparse_expert_compute_seconds', 'turbosparse_expert_active_ratio']) {
      expect(new Map([...histogramCounts(fams.get(name)!)].sort())).toEqual(new Map([...calls].sort()));
    }
    const total = [...calls.values()].reduce((a, b) => a + b, 0);
    expect(total).toBeGreaterThan(0);
    for (const name of ['turbosparse_expert_in_bytes_total', 'turbosparse_expert_out_bytes_total']) {
      const f = fams.get(name)!;
      expect(f.type).toBe('counter');
      expect(f.samples.map((s) => s.labels.node).sort()).toEqual(['node0', 'node1']);
      for (const s of f.samples) expect(s.value).toBeGreaterThan(0);
    }
    const decode = fams.get('turbosparse_step_tokens_total')!.samples.find((s) => s.labels.phase === 'decode')!;
    expect(decode.value).toBeGreaterThan(0);
    expect(fams.get('turbosparse_scheduler_waiting_requests')!.type).toBe('gauge');
    // Process and runtime metrics next to ours.
    expect(fams.get('process_cpu_seconds_total')!.samples[0].value).toBeGreaterThan(0);
    expect(fams.get('process_resident_memory_bytes')!.samples[0].value).toBeGreaterThan(1e6);
    expect(fams.get('nodejs_eventloop_lag_p99_seconds')!.type).toBe('gauge');
    expect(fams.get('turbosparse_batch_sequences')!.type).toBe('gauge');
  });

  testUnless(chromiumMissing)('the status page fills its layers x experts heatmap in headless chromium', async () => {
    await complete('status page', 3);
    const status = (await (await fetch(`${url}/status.json`)).json()) as StatusJson;
    expect(status.version).toBe(1);
    expect(status.nodes.map((n) => [n.node, n.healthy])).toEqual([['node0', true], ['node1', true]]);
    const called = status.experts.filter((e) => e.calls > 0);
    expect(called.length).toBeGreaterThan(0);

    const browser = await launchChromium();
    try {
      const page = browser.context.pages()[0] ?? (await browser.context.newPage());
      const errors: string[] = [];
      page.on('pageerror', (e) => errors.push(e.message));
      await page.goto(`${url}/?interval=250`);
      await page.waitForFunction((n) => document.querySelectorAll('#heatmap td.cell.filled').length >= n, called.length, { timeout: 15_000 });
      // The grid: one row per layer, one cell per expert.
      const grid = await page.$$eval('#heatmap tbody tr', (rows) => rows.map((r) => r.querySelectorAll('td.cell').length));
      expect(grid).toEqual(new Array(dims.numLayers).fill(dims.numExperts));
      // Each filled cell shows that expert's p50 from the status JSON; the others are empty.
      const cells = await page.$$eval('#heatmap td.cell', (tds) =>
        tds.map((td) => ({
          layer: Number(td.getAttribute('data-layer')),
          expert: Number(td.getAttribute('data-expert')),
          filled: td.classList.contains('filled'),
          value: td.getAttribute('data-value'),
          color: getComputedStyle(td).backgroundColor,
        })),
      );
      const now = buildStatus(obs);
      for (const c of cells) {
        const cell = now.heatmap[c.layer][c.expert];
        expect(c.filled).toBe(cell !== null && cell.p50_ms !== null);
        if (c.filled) {
          expect(Number(c.value)).toBeCloseTo(cell!.p50_ms!, 6);
          expect(c.color).not.toBe('rgb(27, 33, 41)'); // coloured, not the empty background
        }
      }
      // Switching the metric redraws the cells with the active-neuron fraction.
      await page.selectOption('#metric', 'active_fraction');
      const fractions = await page.$$eval('#heatmap td.cell.filled', (tds) => tds.map((td) => Number(td.getAttribute('data-value'))));
      expect(fractions.length).toBe(cells.filter((c) => c.filled).length);
      for (const f of fractions) expect(f).toBeGreaterThan(0);
      for (const f of fractions) expect(f).toBeLessThanOrEqual(1);
      // Nodes, per-layer bars and throughput are drawn too.
      expect(await page.$$eval('#nodes tbody tr', (rows) => rows.map((r) => r.children[1].textContent))).toEqual(['up', 'up']);
      expect(await page.$$eval('#layers .bar', (b) => b.length)).toBe(dims.numLayers);
      expect(await page.textContent('#conn')).toBe('live');
      expect(await page.textContent('#kpi-spec')).toBe('off'); // no --speculative here
      expect(errors).toEqual([]);
    } finally {
      await browser.close();
    }
  });
});
