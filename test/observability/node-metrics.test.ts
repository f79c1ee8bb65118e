// An expert node's own telemetry: its metrics port answers Prometheus text whose
// counts match the requests sent, and (tracing on) each request's SERVER span is
// the child of the coordinator's CLIENT span through the request's trace context.
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { SpanKind, trace } from '@opentelemetry/api';
import { InMemorySpanExporter, SimpleSpanProcessor } from '@opentelemetry/sdk-trace-base';
import { makeDemoModel } from '../../core/demo-model';
import { uniformPairs } from '../../core/shard-map';
import { Registry } from '../../core/metrics';
import { ModelFolder } from '../../core/model-folder';
import { injectTraceContext, setupTelemetry, shutdownTelemetry } from '../../core/telemetry';
import { RemoteExperts } from '../../coordinator/remote-experts';
import { createNodeTelemetry, startMetricsServer, type MetricsServer } from '../../expert-node/telemetry';
import { randomBatch, startNode, type InProcessNode } from '../cluster/helpers';
import { parsePrometheusText } from '../helpers/prometheus';
import { rawExchange } from '../serve/raw-http';

const DEMO = { layers: 2, hidden: 64, intermediate: 128, heads: 4, kvHeads: 2, experts: 4, topK: 2, vocab: 300, predictorRank: 16, shards: 1 };
const dims = { hiddenSize: 64, intermediateSize: 128, numLayers: 2, numExperts: 4 };

let tmp: string;
let folder: ModelFolder;
let node: InProcessNode | undefined;
let metricsServer: MetricsServer | undefined;
let remote: RemoteExperts | undefined;
const registry = new Registry();
const mem = new InMemorySpanExporter();

beforeAll(async () => {
  tmp = fs.mkdtempSync(path.join(os.tmpdir(), 'ts-node-metrics-'));
  await makeDemoModel(tmp, DEMO);
  folder = await ModelFolder.open(tmp);
  setupTelemetry({ serviceName: 'turbosparse-expert-node', env: {}, spanProcessors: [new SimpleSpanProcessor(mem)], flushOnExit: false, log: () => {} });
  const tel = createNodeTelemetry({ node: 'node-a', intermediateSize: dims.intermediateSize, registry });
  const pairs = uniformPairs(dims, 1).map((p) => ({ layer: p.layer, expert: p.expert }));
  node = await startNode(folder, pairs, { hooks: tel.hooks });
  metricsServer = await startMetricsServer(0, '127.0.0.1', registry);
  remote = await RemoteExperts.connect({
    shardMap: { nodes: [{ address: node.address, name: 'node-a', experts: pairs }] },
    model: dims,
    callTimeoutMs: 10_000,
  });
}, 60_000);

afterAll(async () => {
  await remote?.close();
  await metricsServer?.close();
  await node?.stop();
  await folder?.close();
  await shutdownTelemetry();
  if (tmp) fs.rmSync(tmp, { recursive: true, force: true });
});

test('the metrics port serves Prometheus text matching the requests, and SERVER spans continue the caller\'s trace', async () => {
  const tracer = trace.getTracer('test');
  const routesPerExpert = new Map<string, number>();
  let rows = 0;
  const batches = [randomBatch(dims, 0, 5, 1), randomBatch(dims, 1, 3, 2), randomBatch(dims, 0, 7, 3)];
  for (const b of batches) {
    rows += b.nRows;
    for (let s = 0; s < b.nRows * b.topK; s++) {
      const key = `expert=${b.experts[s]},layer=${b.layer}`;
      routesPerExpert.set(key, (routesPerExpert.get(key) ?? 0) + 1);
    }
  }
  // A parent span stands in for the coordinator's CLIENT span (the trace context the request carries).
  // RemoteExperts sends what an observer returns as the request's trace_context.
  remote!.addObserver({ onCallStart: () => ({ traceContext: injectTraceContext() }) });
  const parentSpans: string[] = [];
  for (const b of batches) {
    await tracer.startActiveSpan('caller', { kind: SpanKind.CLIENT }, async (span) => {
      parentSpans.push(span.spanContext().spanId);
      await remote!.runExperts(b, { stepId: 7 });
      span.end();
    });
  }

  const text = await (await fetch(metricsServer!.url)).text();
  const fams = parsePrometheusText(text);
  const ok = fams.get('turbosparse_expert_node_requests_total')!.samples.filter((s) => s.labels.code === 'OK');
  expect(ok.reduce((a, s) => a + s.value, 0)).toBe(batches.length);
  expect(fams.get('turbosparse_expert_node_tokens_total')!.samples.reduce((a, s) => a + s.value, 0)).toBe(rows);
  const routes = new Map(
    fams.get('turbosparse_expert_node_routes_total')!.samples.map((s) => [`expert=${s.labels.expert},layer=${s.labels.layer}`, s.value]),
  );
  expect(new Map([...routes].sort())).toEqual(new Map([...routesPerExpert].sort()));
  const compute = fams.get('turbosparse_expert_node_compute_seconds')!;
  expect(compute.type).toBe('histogram');
  expect(compute.samples.filter((s) => s.name.endsWith('_count')).reduce((a, s) => a + s.value, 0)).toBe(batches.length);
  expect(fams.get('turbosparse_expert_node_requests_in_flight')!.samples[0].value).toBe(0);
  const ratio = fams.get('turbosparse_expert_node_active_ratio')!;
  expect(ratio.samples.filter((s) => s.name.endsWith('_count')).reduce((a, s) => a + s.value, 0)).toBe(batches.length);
  // The node's process and runtime metrics on the same port.
  for (const name of ['process_cpu_seconds_total', 'process_resident_memory_bytes', 'nodejs_eventloop_lag_seconds', 'nodejs_heap_size_used_bytes']) {
    expect([name, fams.get(name)?.samples.length]).toEqual([name, 1]);
  }

  const servers = mem.getFinishedSpans().filter((s) => s.name === 'moe.expert_serve');
  expect(servers).toHaveLength(batches.length);
  servers.forEach((s, i) => {
    expect(s.kind).toBe(SpanKind.SERVER);
    expect(parentSpans).toContain(s.parentSpanContext?.spanId);
    expect(s.attributes['moe.node']).toBe('node-a');
    expect(s.attributes['moe.layer']).toBe(batches[i].layer);
    expect(s.attributes['moe.tokens']).toBe(batches[i].nRows);
    expect(s.attributes['moe.bytes_in']).toBeGreaterThan(batches[i].nRows * dims.hiddenSize * 4 - 1);
    expect(s.attributes['moe.bytes_out']).toBe(batches[i].nRows * dims.hiddenSize * 4);
    expect(s.attributes['moe.active_neurons']).toBeGreaterThan(0);
  });
});

test('the metrics port closes a socket whose request stops coming (10 s), not after Node\'s 300 s', async () => {
  const url = metricsServer!.url;
  const base = url.replace(/\/metrics$/, '');
  const half = await rawExchange(base, 'GET /metrics HTTP/1.1\r\nHost: x\r\n', 20_000);
  expect(half.closed).toBe(true);
  expect(half.ms).toBeLessThan(15_000);
  // Still answering.
  expect((await fetch(url)).status).toBe(200);
}, 30_000);
