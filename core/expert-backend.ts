// The one seam between the forward pass and wherever experts run.
// In-process native kernels implement it (coordinator/local-experts.ts), a gRPC
// fan-out to expert nodes implements it (coordinator/remote-experts.ts), and an
// expert node serves it with the native one. `--experts local|cluster:N|FILE`
// only picks the implementation.
import type { FfnMode } from './native';
import type { RoutedBatch } from './routed-batch';
import type { WireEncoding } from './wire/rows';

/** One layer of one step, grouped by expert (core/routed-batch.ts). */
export type ExpertBatch = RoutedBatch;

export interface ExpertOutput {
  /** sum over each row's routes of weight * expert(hidden), [nRows, hidden]. */
  out: Float32Array;
  /** Neurons computed (mask AND both relus > 0) per route, in group order (routeCount(batch.groups)). */
  active: Int32Array;
}

/** Optional per-step context (tracing hooks, ids); backends may ignore it. */
export interface StepContext {
  stepId?: number;
  sequenceIds?: number[];
  /** Which micro-batch of an overlapped step (0 or 1); absent when the step runs as one batch. */
  microBatch?: number;
}

/** What a status page shows per expert node (RemoteExperts.stats() returns these fields and more). */
export interface ExpertNodeHealth {
  address: string;
  name?: string;
  healthy: boolean;
  lastError?: string;
  expertsHeld?: number;
  expertsSpec?: string;
  /** How Run's calls reach the node: the run socket or gRPC (remote nodes only). */
  transport?: 'socket' | 'grpc';
}

export interface ExpertBackend {
  /** A short name for logs: "local", "cluster:2", a shard-map file. */
  readonly name: string;
  runExperts(batch: ExpertBatch, ctx?: StepContext): Promise<ExpertOutput>;
  close(): Promise<void>;
  // Optional capabilities: callers check for the method, never for a class.
  /** Whether every expert can be reached now (remote: a healthy replica for every pair). */
  ready?(): boolean;
  /** Per-node health and counters (remote experts); absent for in-process experts. */
  stats?(): ExpertNodeHealth[];
  /** Observes every node call (tracing, per-node metrics); only backends that make node calls have it. */
  addObserver?(o: ExpertCallObserver): void;
  /** Switches between sparse (predictor masks) and dense FFNs (in-process experts; benches). */
  setMode?(mode: FfnMode): void;
}

/** One node call, as hooks see it (tracing and metrics wrap these; see issue 7). */
export interface ExpertCallInfo {
  /** Unique per backend. */
  callId: number;
  stepId?: number;
  layer: number;
  /** The step's micro-batch when it is overlapped (StepContext.microBatch). */
  microBatch?: number;
  node: string;
  nodeIndex: number;
  nodeName?: string;
  /** Expert ids of this layer in the call, ascending. */
  experts: number[];
  tokens: number;
  routes: number;
  wire: WireEncoding;
  /** 0 for the first try of a layer, 1+ for retries and hedges on replicas. */
  attempt: number;
  /** Sent because another node's call of the same routes was late (the first answer wins). */
  hedge?: boolean;
  /** Serialised request size; filled in just before sending. */
  bytesOut: number;
}

export interface ExpertCallResult {
  ok: boolean;
  error?: Error;
  /** Round trip seen by the coordinator, and the node's own queue and compute time. */
  latencyUs: number;
  queueUs: number;
  computeUs: number;
  activeNeurons: number;
  bytesIn: number;
}

export interface ExpertCallObserver {
  /**
   * At the start of a node call. May return a trace context (e.g. W3C
   * `traceparent`) sent inside the request, and an `end` called when it settles.
   */
  onCallStart?(call: ExpertCallInfo): { traceContext?: Record<string, string>; end?(result: ExpertCallResult): void } | void;
  /** When a node call settled, with its timings and sizes. */
  onCallEnd?(call: ExpertCallInfo, result: ExpertCallResult): void;
  /** A node was marked unhealthy (failover) or came back. */
  onNodeHealth?(node: string, healthy: boolean, reason: string): void;
}

