// Coordinator observability: request/step/layer/expert-call spans, per (layer,
// expert, node) metrics, recent stats for the latency table and the status page.
export { observeEngine, engineObservability, EngineObservability, ObservedExperts, type ObserveOptions, type TraceDetail, type GenAiRequest, type RequestScope } from './observe';
export { submitTracing, requestTracing, traceJob, type JobLike, type SubmitHook, type RequestHook } from './scheduler-tracing';
export { buildStatus, STATUS_VERSION, type StatusJson, type HeatCell } from './status';
export { statusRoutes, statusPageDir, type StatusRoute } from './status-routes';
export { formatLatencyTable } from './latency-table';
export { coordinatorMetrics, CallMetrics, LATENCY_BUCKETS, FRACTION_BUCKETS, METRICS_DETAIL_CHOICES, type CoordinatorMetrics, type MetricsDetail } from './metrics';
export { ExpertStats } from './expert-stats';
export { SampleWindow } from './sample-window';
export type { ExpertCallRecord } from './expert-calls';
export { watchQueueDepth, QUEUE_STATES } from './queue-depth';
