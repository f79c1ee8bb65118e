// The producer role: puts generation jobs on the queue and reads their state and
// results. One options object, defaults merged and checked once here.
import { Queue, type Job, type JobsOptions } from 'bullmq';
import type { Redis } from 'ioredis';
import { UserError } from '../../core/errors';
import { injectTraceContext } from '../../core/telemetry/propagation';
import { batchRefOf } from './batch-job';
import { QUEUE_NAME } from './connection';
import { attemptsOf, jobIdFor, type JobData } from './job';

export interface ProducerOptions {
  connection: Redis;
  /** Tries per job for transient failures (an expert node down). Default 5. */
  attempts?: number;
  /** First retry delay; doubles each time. Default 2000 ms. */
  backoffMs?: number;
  /** How long a completed job's result is kept. Default one day. */
  resultsTtlSeconds?: number;
  /** How long a failed job is kept. Default seven days. */
  failedTtlSeconds?: number;
  /** Queue name (tests use their own). */
  queueName?: string;
}

export type JobState = 'waiting' | 'active' | 'delayed' | 'prioritized' | 'completed' | 'failed' | 'waiting-children' | 'unknown';

export interface JobStatus {
  id: string;
  state: JobState;
  /** Tokens generated so far. */
  progress: number;
  /** Tries that ended (failed or completed), the worker's own retries of a plain producer's job included. */
  attemptsMade: number;
  failedReason?: string;
}

export interface JobOutcome {
  id: string;
  /** The request's custom_id, when its line had one. */
  custom_id?: string;
  state: JobState;
  /** The endpoint's response object, when completed. */
  response?: unknown;
  /** Why it failed, when failed (the validation message for bad input). */
  error?: string;
}

export class GenerationProducer {
  readonly queue: Queue;
  readonly opts: Required<Omit<ProducerOptions, 'connection'>>;

  constructor(opts: ProducerOptions) {
    this.opts = {
      attempts: opts.attempts ?? 5,
      backoffMs: opts.backoffMs ?? 2000,
      resultsTtlSeconds: opts.resultsTtlSeconds ?? 86400,
      failedTtlSeconds: opts.failedTtlSeconds ?? 7 * 86400,
      queueName: opts.queueName ?? QUEUE_NAME,
    };
    if (!Number.isInteger(this.opts.attempts) || this.opts.attempts < 1) throw new UserError('--attempts must be an integer >= 1');
    if (!(this.opts.resultsTtlSeconds > 0)) throw new UserError('--results-ttl must be a positive number of seconds');
    this.queue = new Queue(this.opts.queueName, { connection: opts.connection });
  }

  jobOptions(jobId: string): JobsOptions {
    return {
      jobId,
      attempts: this.opts.attempts,
      backoff: { type: 'exponential', delay: this.opts.backoffMs },
      removeOnComplete: { age: this.opts.resultsTtlSeconds },
      removeOnFail: { age: this.opts.failedTtlSeconds },
    };
  }

  /**
   * Adds one job (id = hash of the request unless given). Submitting a request that is
   * already queued, running or done returns the existing job; a failed one is retried.
   */
  async submit(data: JobData, jobId = jobIdFor(data)): Promise<{ id: string; existing: boolean; retried: boolean }> {
    const old = await this.queue.getJob(jobId);
    if (old) {
      const failed = (await old.getState()) === 'failed';
      if (failed) await old.retry('failed');
      return { id: jobId, existing: true, retried: failed };
    }
    // The submitter's trace (when tracing) travels in the job; the worker links its span to it.
    const traceContext = injectTraceContext();
    const payload = Object.keys(traceContext).length > 0 ? { ...data, trace_context: traceContext } : data;
    const job = await this.queue.add(data.endpoint, payload, this.jobOptions(jobId));
    return { id: job.id!, existing: false, retried: false };
  }

  async status(ids: string[]): Promise<JobStatus[]> {
    return Promise.all(
      ids.map(async (id) => {
        const job = await this.queue.getJob(id);
        if (!job) return { id, state: 'unknown' as const, progress: 0, attemptsMade: 0 };
        return {
          id,
          state: (await job.getState()) as JobState,
          progress: typeof job.progress === 'number' ? job.progress : 0,
          attemptsMade: attemptsOf(job),
          ...(job.failedReason ? { failedReason: job.failedReason } : {}),
        };
      }),
    );
  }

  /** Results of finished jobs (others report their state only). */
  async results(ids: string[]): Promise<JobOutcome[]> {
    return Promise.all(ids.map(async (id) => outcome(id, await this.queue.getJob(id))));
  }

  /** Polls until every job is completed, failed or unknown; `onUpdate` sees each poll. */
  async waitFor(ids: string[], onUpdate?: (s: JobStatus[]) => void, pollMs = 500): Promise<JobOutcome[]> {
    for (;;) {
      const s = await this.status(ids);
      onUpdate?.(s);
      if (s.every((x) => x.state === 'completed' || x.state === 'failed' || x.state === 'unknown')) return this.results(ids);
      await new Promise((r) => setTimeout(r, pollMs));
    }
  }

  async close(): Promise<void> {
    await this.queue.close();
  }
}

async function outcome(id: string, job: Job | undefined): Promise<JobOutcome> {
  if (!job) return { id, state: 'unknown', error: 'no such job (never submitted, or removed after its results TTL)' };
  const state = (await job.getState()) as JobState;
  // A CLI job carries it at the top; a Batch API request (batches.ts) in its batch reference.
  const customId = (job.data as Record<string, unknown> | undefined)?.custom_id ?? batchRefOf(job.data)?.custom_id;
  const named = { id, ...(typeof customId === 'string' ? { custom_id: customId } : {}), state };
  if (state === 'completed') return { ...named, response: job.returnvalue };
  if (state === 'failed') return { ...named, error: job.failedReason };
  return named;
}

/**
 * An outcome as a line of an OpenAI Batch API output file: {id, custom_id, response: {status_code,
 * request_id, body}, error}. A failed job has no response and its reason as the error.
 */
export function openaiBatchLine(o: JobOutcome): object {
  const base = { id: `batch_req_${o.id}`, custom_id: o.custom_id ?? null };
  if (o.state === 'completed') {
    // A Batch API job (batch-job.ts) already answers {status_code, body}.
    const r = o.response as { status_code?: unknown; body?: unknown } | undefined;
    const enveloped = r !== null && typeof r === 'object' && typeof r.status_code === 'number' && 'body' in r;
    const response = enveloped ? { status_code: r.status_code, request_id: o.id, body: r.body } : { status_code: 200, request_id: o.id, body: o.response };
    return { ...base, response, error: null };
  }
  const code = o.state === 'failed' ? 'job_failed' : o.state === 'unknown' ? 'job_not_found' : 'job_not_finished';
  return { ...base, response: null, error: { code, message: o.error ?? `the job is ${o.state}` } };
}
