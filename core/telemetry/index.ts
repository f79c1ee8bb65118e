// Tracing shared by the coordinator and the expert node: setup from OTEL_* env,
// W3C context carried by hand, a JSON-lines exporter for local use and tests.
export { traceConfigFromEnv, parseResourceAttributes, type TraceConfig } from './config';
export {
  setupTelemetry,
  currentTelemetry,
  flushTelemetry,
  shutdownTelemetry,
  COORDINATOR_SERVICE,
  EXPERT_NODE_SERVICE,
  TRACER_NAME,
  type Telemetry,
  type TelemetryOptions,
} from './setup';
export { injectTraceContext, extractTraceContext, injectIntoMetadata, extractFromMetadata, type MetadataLike } from './propagation';
export { JsonLinesSpanExporter, readSpanFile, spanToRecord, type SpanRecord } from './jsonl-exporter';
