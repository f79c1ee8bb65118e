// Tracing setup from OTEL_* variables: off by default, clear errors, W3C context by hand, JSONL export.
import { spawn } from 'node:child_process';
import fs from 'node:fs';
import os from 'node:os';
import http from 'node:http';
import path from 'node:path';
import { SpanKind, context, trace } from '@opentelemetry/api';
import { InMemorySpanExporter, SimpleSpanProcessor } from '@opentelemetry/sdk-trace-base';
import { UserError } from '../../core/errors';
import {
  extractTraceContext,
  injectTraceContext,
  readSpanFile,
  setupTelemetry,
  shutdownTelemetry,
  traceConfigFromEnv,
} from '../../core/telemetry';

afterEach(async () => {
  await shutdownTelemetry();
});

describe('traceConfigFromEnv', () => {
  test('off when nothing is set; otlp when only an endpoint is set', () => {
    expect(traceConfigFromEnv({}).exporters).toEqual([]);
    const c = traceConfigFromEnv({ OTEL_EXPORTER_OTLP_ENDPOINT: 'http://collector:4318' });
    expect(c.exporters).toEqual(['otlp']);
    expect(c.protocol).toBe('http/protobuf');
    expect(traceConfigFromEnv({ OTEL_EXPORTER_OTLP_ENDPOINT: 'http://x', OTEL_SDK_DISABLED: 'true' }).exporters).toEqual([]);
    expect(traceConfigFromEnv({ OTEL_TRACES_EXPORTER: 'none', OTEL_EXPORTER_OTLP_ENDPOINT: 'http://x' }).exporters).toEqual([]);
  });

  test('standard variables are read and validated with one clear line', () => {
    const c = traceConfigFromEnv({
      OTEL_TRACES_EXPORTER: 'otlp,console',
      OTEL_EXPORTER_OTLP_PROTOCOL: 'http/json',
      OTEL_TRACES_SAMPLER: 'parentbased_traceidratio',
      OTEL_TRACES_SAMPLER_ARG: '0.25',
      OTEL_SERVICE_NAME: 'svc',
      OTEL_RESOURCE_ATTRIBUTES: 'k8s.pod.name=node-0,team=a%2Cb',
    });
    expect(c).toMatchObject({
      exporters: ['otlp', 'console'],
      protocol: 'http/json',
      sampler: 'parentbased_traceidratio',
      samplerArg: 0.25,
      serviceName: 'svc',
      resourceAttributes: { 'k8s.pod.name': 'node-0', team: 'a,b' },
    });
    expect(() => traceConfigFromEnv({ OTEL_TRACES_EXPORTER: 'jaeger' })).toThrow(/OTEL_TRACES_EXPORTER: unknown exporter "jaeger"/);
    expect(() => traceConfigFromEnv({ OTEL_TRACES_EXPORTER: 'otlp', OTEL_EXPORTER_OTLP_PROTOCOL: 'http' })).toThrow(UserError);
    expect(() => traceConfigFromEnv({ OTEL_TRACES_SAMPLER: 'traceidratio', OTEL_TRACES_SAMPLER_ARG: '2' })).toThrow(/\[0, 1\]/);
    expect(() => traceConfigFromEnv({ OTEL_TRACES_EXPORTER: 'jsonl' })).toThrow(/TURBOSPARSE_TRACES_FILE/);
  });
});

describe('setupTelemetry', () => {
  test('disabled without configuration: no provider, spans are non-recording', () => {
    const tel = setupTelemetry({ serviceName: 'turbosparse-coordinator', env: {} });
    expect(tel.enabled).toBe(false);
    const span = tel.tracer.startSpan('x');
    expect(span.isRecording()).toBe(false);
    span.end();
    expect(injectTraceContext(trace.setSpan(context.active(), span))).toEqual({});
  });

  test('names the service, propagates W3C context across a hand-made carrier, and writes JSONL', async () => {
    const file = path.join(fs.mkdtempSync(path.join(os.tmpdir(), 'ts-otel-')), 'spans.jsonl');
    const mem = new InMemorySpanExporter();
    const tel = setupTelemetry({
      serviceName: 'turbosparse-expert-node',
      instanceId: 'node-a',
      env: { OTEL_TRACES_EXPORTER: 'jsonl', TURBOSPARSE_TRACES_FILE: file },
      spanProcessors: [new SimpleSpanProcessor(mem)],
      log: () => {},
    });
    expect(tel.enabled).toBe(true);
    const client = tel.tracer.startSpan('call', { kind: SpanKind.CLIENT });
    const carrier = injectTraceContext(trace.setSpan(context.active(), client));
    expect(carrier.traceparent).toMatch(/^00-[0-9a-f]{32}-[0-9a-f]{16}-01$/);
    const server = tel.tracer.startSpan('serve', { kind: SpanKind.SERVER }, extractTraceContext(carrier));
    server.end();
    client.end();
    await tel.forceFlush();

    const spans = mem.getFinishedSpans();
    expect(spans).toHaveLength(2);
    const [s, c] = spans;
    expect(s.spanContext().traceId).toBe(c.spanContext().traceId);
    expect(s.parentSpanContext?.spanId).toBe(c.spanContext().spanId);
    expect(s.resource.attributes['service.name']).toBe('turbosparse-expert-node');
    expect(s.resource.attributes['service.instance.id']).toBe('node-a');

    const lines = readSpanFile(file);
    expect(lines.map((l) => l.name)).toEqual(['serve', 'call']);
    expect(lines[0]).toMatchObject({ kind: 'SERVER', parentSpanId: c.spanContext().spanId, resource: { 'service.name': 'turbosparse-expert-node' } });
  });

  test('OTEL_SERVICE_NAME wins over the built-in name', () => {
    const tel = setupTelemetry({
      serviceName: 'turbosparse-coordinator',
      env: { OTEL_SERVICE_NAME: 'my-coord' },
      spanProcessors: [new SimpleSpanProcessor(new InMemorySpanExporter())],
      log: () => {},
    });
    expect(tel.serviceName).toBe('my-coord');
  });
});

describe('OTLP export (in a child process: jest cannot run the exporters\' dynamic import)', () => {
  test.each(['http/json', 'http/protobuf'])('%s posts spans to OTEL_EXPORTER_OTLP_ENDPOINT/v1/traces on exit', async (protocol) => {
    const got: { url?: string; type?: string; body: Buffer }[] = [];
    const server = http.createServer((req, res) => {
      const chunks: Buffer[] = [];
      req.on('data', (c: Buffer) => chunks.push(c));
      req.on('end', () => {
        got.push({ url: req.url, type: req.headers['content-type'], body: Buffer.concat(chunks) });
        res.writeHead(200, { 'content-type': protocol === 'http/json' ? 'application/json' : 'application/x-protobuf' });
        res.end(protocol === 'http/json' ? '{}' : undefined);
      });
    });
    await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
    try {
      const port = (server.address() as { port: number }).port;
      const child = spawn(
        process.execPath,
        ['-r', path.join(__dirname, '..', 'cluster', 'ts-register-cached.js'), path.join(__dirname, 'fixtures', 'otlp-probe.ts')],
        { env: { PATH: process.env.PATH, OTEL_EXPORTER_OTLP_ENDPOINT: `http://127.0.0.1:${port}`, OTEL_EXPORTER_OTLP_PROTOCOL: protocol } },
      );
      let stderr = '';
      child.stderr.on('data', (d: Buffer) => (stderr += d.toString()));
      const timer = setTimeout(() => child.kill('SIGKILL'), 30000);
      const status = await new Promise<number | null>((r) => child.on('exit', (code) => r(code)));
      clearTimeout(timer);
      const r = { stderr, status };
      expect(r.stderr).toBe('');
      expect(r.status).toBe(0);
      expect(got).toHaveLength(1);
      expect(got[0].url).toBe('/v1/traces');
      expect(got[0].type).toBe(protocol === 'http/json' ? 'application/json' : 'application/x-protobuf');
      const body = got[0].body.toString('latin1');
      expect(body).toContain('otlp-probe-span');
      expect(body).toContain('turbosparse-coordinator');
      if (protocol === 'http/json') expect(JSON.parse(body).resourceSpans[0].scopeSpans[0].spans[0].name).toBe('otlp-probe-span');
    } finally {
      server.close();
    }
  });

  test('grpc exporter loads', () => {
    const tel = setupTelemetry({
      serviceName: 'x',
      env: { OTEL_TRACES_EXPORTER: 'otlp', OTEL_EXPORTER_OTLP_PROTOCOL: 'grpc', OTEL_EXPORTER_OTLP_ENDPOINT: 'http://127.0.0.1:1' },
      log: () => {},
    });
    expect(tel.enabled).toBe(true);
    expect(tel.config.protocol).toBe('grpc');
  });
});
