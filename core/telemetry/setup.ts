// OpenTelemetry tracing for both services (coordinator and expert node), set up
// once per process from the standard OTEL_* environment variables (config.ts).
//
//   const tel = setupTelemetry({ serviceName: 'turbosparse-coordinator' });
//   if (tel.enabled) ...wrap things with tel.tracer...
//   await flushTelemetry();            // before an explicit process.exit
//
// Off when nothing asks for it: no provider is registered and `enabled` is
// false, so callers skip their tracing wrappers entirely (tracing off costs
// nothing on the token path). Spans are flushed on `beforeExit`, and by
// `flushTelemetry()`/`shutdownTelemetry()` from shutdown paths (SIGTERM, Ctrl-C).
import os from 'node:os';
import { context, propagation, trace, type Tracer } from '@opentelemetry/api';
import { AsyncLocalStorageContextManager } from '@opentelemetry/context-async-hooks';
import { W3CTraceContextPropagator } from '@opentelemetry/core';
import { resourceFromAttributes } from '@opentelemetry/resources';
import {
  AlwaysOffSampler,
  AlwaysOnSampler,
  BasicTracerProvider,
  BatchSpanProcessor,
  ParentBasedSampler,
  SimpleSpanProcessor,
  TraceIdRatioBasedSampler,
  type Sampler,
  type SpanExporter,
  type SpanProcessor,
} from '@opentelemetry/sdk-trace-base';
import { packageVersion } from '../package-version';
import { traceConfigFromEnv, type TraceConfig } from './config';
import { JsonLinesSpanExporter } from './jsonl-exporter';

export const COORDINATOR_SERVICE = 'turbosparse-coordinator';
export const EXPERT_NODE_SERVICE = 'turbosparse-expert-node';
export const TRACER_NAME = 'turbosparse';

export interface TelemetryOptions {
  /** This service's own name; OTEL_SERVICE_NAME wins when set. */
  serviceName: string;
  /** service.instance.id; defaults to `host:pid`. An expert node passes its address or pod name. */
  instanceId?: string;
  env?: NodeJS.ProcessEnv;
  /** Extra processors (tests: an InMemorySpanExporter); turn tracing on whatever the env says. */
  spanProcessors?: SpanProcessor[];
  /** Flush on `beforeExit` (default true). */
  flushOnExit?: boolean;
  /** One line when tracing is on (stderr by default). */
  log?: (line: string) => void;
}

export interface Telemetry {
  readonly enabled: boolean;
  readonly tracer: Tracer;
  readonly serviceName: string;
  readonly instanceId: string;
  readonly config: TraceConfig;
  forceFlush(): Promise<void>;
  shutdown(): Promise<void>;
}

let current: { tel: Telemetry; provider?: BasicTracerProvider; onExit?: () => void } | undefined;

export function samplerFor(cfg: TraceConfig): Sampler {
  const ratio = new TraceIdRatioBasedSampler(cfg.samplerArg);
  switch (cfg.sampler) {
    case 'always_on':
      return new AlwaysOnSampler();
    case 'always_off':
      return new AlwaysOffSampler();
    case 'traceidratio':
      return ratio;
    case 'parentbased_always_off':
      return new ParentBasedSampler({ root: new AlwaysOffSampler() });
    case 'parentbased_traceidratio':
      return new ParentBasedSampler({ root: ratio });
    case 'parentbased_always_on':
    default:
      return new ParentBasedSampler({ root: new AlwaysOnSampler() });
  }
}

function loadOtlpExporter(cfg: TraceConfig): SpanExporter {
  // Loaded lazily: a process without OTLP export never pulls in the exporters.
  /* eslint-disable @typescript-eslint/no-require-imports */
  switch (cfg.protocol) {
    case 'grpc':
      return new (require('@opentelemetry/exporter-trace-otlp-grpc').OTLPTraceExporter)();
    case 'http/json':
      return new (require('@opentelemetry/exporter-trace-otlp-http').OTLPTraceExporter)();
    case 'http/protobuf':
    default:
      return new (require('@opentelemetry/exporter-trace-otlp-proto').OTLPTraceExporter)();
  }
}

function processorsFor(cfg: TraceConfig): SpanProcessor[] {
  const out: SpanProcessor[] = [];
  for (const kind of cfg.exporters) {
    // Batch for the network (OTEL_BSP_* tune it); simple, synchronous appends for local files
    // so a stopped process keeps every span it ended.
    if (kind === 'otlp') out.push(new BatchSpanProcessor(loadOtlpExporter(cfg)));
    else if (kind === 'console') out.push(new SimpleSpanProcessor(new JsonLinesSpanExporter('stderr')));
    else if (kind === 'jsonl') out.push(new SimpleSpanProcessor(new JsonLinesSpanExporter(cfg.jsonlFile!)));
  }
  return out;
}

/** Sets up tracing for this process (replacing an earlier setup). Throws UserError on a bad OTEL_* value. */
export function setupTelemetry(opts: TelemetryOptions): Telemetry {
  const cfg = traceConfigFromEnv(opts.env ?? process.env);
  const processors = [...processorsFor(cfg), ...(opts.spanProcessors ?? [])];
  const serviceName = cfg.serviceName ?? cfg.resourceAttributes['service.name'] ?? opts.serviceName;
  const instanceId = cfg.resourceAttributes['service.instance.id'] ?? opts.instanceId ?? `${os.hostname()}:${process.pid}`;
  // Replace (not stack on) an earlier setup; its spans are flushed in the background.
  if (current) void shutdownTelemetry();

  if (processors.length === 0) {
    const tel: Telemetry = {
      enabled: false,
      tracer: trace.getTracer(TRACER_NAME),
      serviceName,
      instanceId,
      config: cfg,
      forceFlush: async () => {},
      shutdown: async () => {},
    };
    current = { tel };
    return tel;
  }

  const resource = resourceFromAttributes({
    ...cfg.resourceAttributes,
    'service.name': serviceName,
    'service.namespace': cfg.resourceAttributes['service.namespace'] ?? 'turbosparse',
    'service.instance.id': instanceId,
    'service.version': packageVersion(),
    'process.pid': process.pid,
    'host.name': os.hostname(),
  });
  const provider = new BasicTracerProvider({ resource, sampler: samplerFor(cfg), spanProcessors: processors });
  trace.disable();
  context.disable();
  propagation.disable();
  context.setGlobalContextManager(new AsyncLocalStorageContextManager().enable());
  propagation.setGlobalPropagator(new W3CTraceContextPropagator());
  trace.setGlobalTracerProvider(provider);

  const tel: Telemetry = {
    enabled: true,
    tracer: provider.getTracer(TRACER_NAME, packageVersion()),
    serviceName,
    instanceId,
    config: cfg,
    forceFlush: () => provider.forceFlush(),
    shutdown: () => shutdownTelemetry(),
  };
  const onExit = (): void => void shutdownTelemetry();
  if (opts.flushOnExit !== false) process.once('beforeExit', onExit);
  current = { tel, provider, onExit };
  const where = cfg.exporters
    .map((k) => (k === 'otlp' ? `otlp ${cfg.protocol}` : k === 'jsonl' ? `jsonl ${cfg.jsonlFile}` : k))
    .join(', ');
  if (where) (opts.log ?? ((l: string) => process.stderr.write(l + '\n')))(`tracing: ${serviceName} -> ${where}, sampler ${cfg.sampler}`);
  return tel;
}

/** The current setup, if any (e.g. for a hook that only traces when tracing is on). */
export function currentTelemetry(): Telemetry | undefined {
  return current?.tel;
}

/** Exports every finished span now; a no-op when tracing is off. */
export async function flushTelemetry(): Promise<void> {
  await current?.provider?.forceFlush().catch(() => undefined);
}

/** Flushes and unregisters tracing; later spans go nowhere. Safe to call twice. */
export async function shutdownTelemetry(): Promise<void> {
  const c = current;
  current = undefined;
  if (!c?.provider) return;
  if (c.onExit) process.removeListener('beforeExit', c.onExit);
  trace.disable();
  context.disable();
  propagation.disable();
  await c.provider.shutdown().catch(() => undefined);
}
