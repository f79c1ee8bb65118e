// What one request of an OpenAI Batch API batch is on the `generation` queue: an ordinary
// job (request body + endpoint) that also names its batch. A worker answers such a job
// with an HTTP-like envelope, so that a bad request is a completed job with status 400
// (the batch's error file shows it) rather than a failure BullMQ would retry.
import type { JobData } from './job';

/** The job-data field naming the batch; the API's schemas ignore unknown fields. */
export const BATCH_FIELD = 'batch';

export interface BatchRequestRef {
  batch_id: string;
  custom_id: string;
  /** 0-based line of the request in the input file (its non-empty lines). */
  index: number;
}

/** A batch job's return value: what the endpoint answered, status included. */
export interface BatchJobResult {
  status_code: number;
  body: unknown;
}

/** Deterministic, so that enqueueing a batch again (after a restart) adds no job twice. */
export function batchJobId(batchId: string, index: number): string {
  return `${batchId}-${index}`;
}

/** The batch a job belongs to, or null for a plain job. */
export function batchRefOf(data: JobData | null | undefined): BatchRequestRef | null {
  const ref = (data as Record<string, unknown> | null | undefined)?.[BATCH_FIELD] as Partial<BatchRequestRef> | undefined;
  if (!ref || typeof ref !== 'object' || typeof ref.batch_id !== 'string' || typeof ref.custom_id !== 'string' || typeof ref.index !== 'number') return null;
  return ref as BatchRequestRef;
}
