// Observability of an expert node, through the server's request hook
// (ExpertNodeHooks.onRequest in server.ts):
//
//   - one SERVER span per request (`moe.expert_serve`), child of the coordinator's
//     CLIENT span whose W3C context arrives in the request's `trace_context`;
//   - Prometheus metrics on a small HTTP port of its own (`--metrics-port`):
//     requests, queue and compute time per layer, active-neuron ratio, routed
//     tokens per (layer, expert); process_* and nodejs_* (core/runtime-metrics.ts).
import { ROOT_CONTEXT, SpanKind, SpanStatusCode, type Tracer } from '@opentelemetry/api';
import { exponentialBuckets, linearBuckets, metrics as defaultRegistry, type Registry } from '../core/metrics';
import { registerRuntimeMetrics } from '../core/runtime-metrics';
import { currentTelemetry, extractTraceContext, type Telemetry } from '../core/telemetry';
import type { ExpertNodeHooks, NodeRequestInfo, NodeRequestResult } from './server';

const LATENCY_BUCKETS = exponentialBuckets(20e-6, 1.5, 32);

const CODE_NAMES: Record<number, string> = {
  1: 'CANCELLED', 3: 'INVALID_ARGUMENT', 4: 'DEADLINE_EXCEEDED', 9: 'FAILED_PRECONDITION', 13: 'INTERNAL', 14: 'UNAVAILABLE',
};

export interface NodeTelemetryOptions {
  /** How this node names itself in spans and labels (its --name, else host:port). */
  node: string;
  /** Intermediate size of the model (for the active fraction). */
  intermediateSize: number;
  registry?: Registry;
  /** Default: the process's current tracing setup; off -> metrics only. */
  telemetry?: Telemetry;
}

export interface NodeTelemetry {
  hooks: ExpertNodeHooks;
  registry: Registry;
  /** Renames the node once its port is known. */
  setNode(name: string): void;
}

export function nodeMetrics(reg: Registry = defaultRegistry) {
  registerRuntimeMetrics(reg);
  return {
    requests: reg.counter({
      name: 'turbosparse_expert_node_requests_total',
      help: 'Expert requests answered by this node, by layer and outcome (OK or a gRPC status name)',
      labelNames: ['layer', 'code'],
    }),
    queueSeconds: reg.histogram({
      name: 'turbosparse_expert_node_queue_seconds',
      help: 'Time a request waited in this node\'s queue before compute',
      labelNames: ['layer'],
      buckets: LATENCY_BUCKETS,
    }),
    computeSeconds: reg.histogram({
      name: 'turbosparse_expert_node_compute_seconds',
      help: 'Expert kernel time of one request (all its routes), by layer',
      labelNames: ['layer'],
      buckets: LATENCY_BUCKETS,
    }),
    activeFraction: reg.histogram({
      name: 'turbosparse_expert_node_active_ratio',
      help: 'Neurons computed / neurons of a dense FFN over a request\'s routes, by layer',
      labelNames: ['layer'],
      buckets: [...linearBuckets(0.025, 0.025, 20), 0.6, 0.7, 0.8, 0.9, 1],
    }),
    tokens: reg.counter({
      name: 'turbosparse_expert_node_tokens_total',
      help: 'Token rows received, by layer',
      labelNames: ['layer'],
    }),
    routes: reg.counter({
      name: 'turbosparse_expert_node_routes_total',
      help: '(token, expert) routes computed, by layer and expert',
      labelNames: ['layer', 'expert'],
    }),
    inFlight: reg.gauge({ name: 'turbosparse_expert_node_requests_in_flight', help: 'Requests accepted and not yet answered (queued or computing)' }),
  };
}

export function createNodeTelemetry(opts: NodeTelemetryOptions): NodeTelemetry {
  const reg = opts.registry ?? defaultRegistry;
  const m = nodeMetrics(reg);
  const tel = opts.telemetry ?? currentTelemetry();
  const tracer: Tracer | undefined = tel?.enabled ? tel.tracer : undefined;
  let node = opts.node;
  const I = opts.intermediateSize;
  const inFlight = m.inFlight.labels();

  const onRequest = (info: NodeRequestInfo) => {
    inFlight.inc();
    const span = tracer?.startSpan(
      'moe.expert_serve',
      {
        kind: SpanKind.SERVER,
        attributes: {
          'moe.layer': info.layer,
          'moe.experts': info.experts,
          'moe.node': node,
          'moe.tokens': info.tokens,
          'moe.routes': info.routes,
          'moe.wire': info.wire,
          'moe.step_id': info.stepId,
          'rpc.system': 'grpc',
          'rpc.service': 'turbosparse.expert.v1.ExpertNode',
          'rpc.method': 'Run',
        },
      },
      // The coordinator's CLIENT span is the parent; a request without context starts a trace.
      extractTraceContext(info.traceContext, ROOT_CONTEXT),
    );
    return {
      end: (r: NodeRequestResult) => {
        inFlight.dec();
        const layer = info.layer;
        const code = r.ok ? 'OK' : (CODE_NAMES[r.code ?? 2] ?? `CODE_${r.code}`);
        m.requests.labels({ layer, code }).inc();
        m.queueSeconds.labels({ layer }).observe(r.queueUs / 1e6);
        if (r.ok) {
          m.computeSeconds.labels({ layer }).observe(r.computeUs / 1e6);
          m.activeFraction.labels({ layer }).observe(r.activeNeurons / (info.routes * I));
          m.tokens.labels({ layer }).inc(info.tokens);
          for (const expert of info.experts) m.routes.labels({ layer, expert }).inc(info.routesByExpert?.[expert] ?? 0);
        }
        if (span) {
          span.setAttributes({ 'moe.queue_us': r.queueUs, 'moe.compute_us': r.computeUs, 'moe.active_neurons': r.activeNeurons });
          if (info.bytesIn !== undefined) span.setAttribute('moe.bytes_in', info.bytesIn);
          if (r.bytesOut !== undefined) span.setAttribute('moe.bytes_out', r.bytesOut);
          if (!r.ok) {
            span.setStatus({ code: SpanStatusCode.ERROR, message: r.message });
            span.setAttribute('rpc.grpc.status_code', r.code ?? 2);
          }
          span.end();
        }
      },
    };
  };

  return {
    hooks: { onRequest },
    registry: reg,
    setNode: (name) => {
      node = name;
    },
  };
}

// The metrics port: shared with the batch worker, so it lives in core/.
export { startMetricsServer, type MetricsServer } from '../core/metrics-server';
