// The one seam between the forward pass and wherever experts run.
// In-process native kernels implement it (coordinator/local-experts.ts), a gRPC
// fan-out to expert nodes implements it (coordinator/remote-experts.ts), and an
// expert node serves it with the native one. `--experts local|cluster:N|FILE`
// only picks the implementation.

/** The routed token rows of one layer of one step. */
export interface ExpertBatch {
  layer: number;
  nRows: number;
  /** Post-attention-norm hidden rows, [nRows, hidden]. */
  hidden: Float32Array;
  topK: number;
  /** Routed expert ids, [nRows, topK], in router order (highest weight first). */
  experts: Int32Array;
  /** Routing weights (renormalised), [nRows, topK]. */
  weights: Float32Array;
  /** Predictor masks as bitsets of little-endian uint64 words, [nRows, topK, maskBytes(I)]. */
  masks: Uint8Array;
  /** Bytes per mask row (maskBytes(intermediate)). */
  maskRowBytes: number;
}

export interface ExpertOutput {
  /** sum_k weight_k * expert_k(hidden), [nRows, hidden]. */
  out: Float32Array;
  /** Neurons computed (mask AND both relus > 0) per (row, k), [nRows, topK]. */
  active: Int32Array;
}

/** Optional per-step context (tracing hooks, ids); backends may ignore it. */
export interface StepContext {
  stepId?: number;
  sequenceIds?: number[];
}

export interface ExpertBackend {
  /** A short name for logs: "local", "cluster:2", a shard-map file. */
  readonly name: string;
  runExperts(batch: ExpertBatch, ctx?: StepContext): Promise<ExpertOutput>;
  close(): Promise<void>;
}
