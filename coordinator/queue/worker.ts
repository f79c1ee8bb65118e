// The worker role: takes generation jobs and runs them through the same
// scheduler as the HTTP API, so C concurrent jobs decode together in one batch.
//
//   bad input           -> UnrecoverableError (fails at once with the 400 message)
//   engine/expert error -> thrown as is: BullMQ retries with exponential backoff; a job
//                          whose producer set no `attempts` gets the worker's default
//                          (moved to delayed here, so plain producers get retries too;
//                          counted in the job's data, see WORKER_RETRIES_KEY)
//   kill -9             -> the lock expires; a worker's stall check puts the job back
//   Redis away          -> shorter than the stalled interval: the lock outlives it (see
//                          minLockDurationMs), the job is computed once. Longer: the lock may
//                          expire and a stall check give the job to another worker; this one
//                          learns it from the failed renewal and stops computing it
//   shutdown(grace)     -> stop taking jobs; finish current ones, or after the grace
//                          period cancel them and move them back to wait
import { DelayedError, UnrecoverableError, WaitingError, Worker, type Job } from 'bullmq';
import type { Redis } from 'ioredis';
import { UserError } from '../../core/errors';
import { ApiError, toApiError } from '../api/errors';
import type { OpenAIApi } from '../api/openai-api';
import { traceJob } from '../telemetry/scheduler-tracing';
import { QUEUE_NAME, WORKER_RECONNECT_MAX_MS } from './connection';
import { batchRefOf, type BatchJobResult, type BatchRequestRef } from './batch-job';
import { attemptsOf, ENDPOINTS, WORKER_RETRIES_KEY, workerRetries, type JobData } from './job';

export interface GenerationWorkerOptions {
  connection: Redis;
  api: OpenAIApi;
  /** Jobs processed at once (their sequences share every decode step). Default 1. */
  concurrency?: number;
  queueName?: string;
  /** How often this worker looks for jobs whose worker died. Default 30000 ms. */
  stalledIntervalMs?: number;
  /** A job's lock lives this long without renewal. Default (and least): minLockDurationMs(stalledIntervalMs). */
  lockDurationMs?: number;
  /** Times a job may be recovered from a dead worker before it fails. Default 2. */
  maxStalledCount?: number;
  /** Results TTL for jobs whose producer set none. Default one day. */
  resultsTtlSeconds?: number;
  /** Tries for transient failures of jobs whose producer set no `attempts`. Default 5. */
  defaultAttempts?: number;
  /** First retry delay of those jobs; doubles each time. Default 2000 ms. */
  defaultBackoffMs?: number;
  /** Progress (tokens generated) is written at most this often. Default 500 ms. */
  progressIntervalMs?: number;
  log?: (line: string) => void;
}

interface Running {
  abort: AbortController;
  /** Set when shutdown gives the job back instead of finishing it. */
  release: boolean;
  /** Set when a lock renewal failed: the job is no longer ours (a stall check gives it to a worker). */
  lockLost: boolean;
}

/** Time for a worker to reconnect to a Redis that came back, with its first command answered. */
const RECONNECT_ALLOWANCE_MS = WORKER_RECONNECT_MAX_MS + 500;

/**
 * The shortest job lock that outlives a Redis outage shorter than the stalled interval, so
 * that no stall check can hand a running job to a second worker. BullMQ renews a lock at
 * least every half of its duration, so at worst half is left when Redis goes away; the
 * renewal queued meanwhile lands once the worker has reconnected, which must be before
 * the lock expires: duration / 2 > outage + reconnection.
 */
export function minLockDurationMs(stalledIntervalMs: number): number {
  return 2 * (stalledIntervalMs + RECONNECT_ALLOWANCE_MS);
}

/** The lock duration to use: `lockDurationMs` when given and long enough (else a UserError), else the least safe one. */
export function lockDurationFor(stalledIntervalMs: number, lockDurationMs?: number): number {
  const min = minLockDurationMs(stalledIntervalMs);
  if (lockDurationMs === undefined) return min;
  if (lockDurationMs < min) {
    throw new UserError(`--lock-duration ${lockDurationMs} is too short for --stalled-interval ${stalledIntervalMs}: a Redis outage ` +
      `shorter than the stalled interval could expire the lock of a running job and have it computed twice; use at least ` +
      `${min} (2 x (stalled interval + ${RECONNECT_ALLOWANCE_MS} ms to reconnect)), or leave it out`);
  }
  return lockDurationMs;
}

export class GenerationWorker {
  readonly worker: Worker<JobData, object>;
  private readonly running = new Map<string, Running>();
  private readonly log: (line: string) => void;
  private readonly progressMs: number;
  private readonly defaultAttempts: number;
  private readonly defaultBackoffMs: number;

  constructor(readonly opts: GenerationWorkerOptions) {
    const concurrency = opts.concurrency ?? 1;
    if (!Number.isInteger(concurrency) || concurrency < 1) throw new UserError('--concurrency must be an integer >= 1');
    this.log = opts.log ?? ((line) => process.stderr.write(line + '\n'));
    this.progressMs = opts.progressIntervalMs ?? 500;
    this.defaultAttempts = opts.defaultAttempts ?? 5;
    this.defaultBackoffMs = opts.defaultBackoffMs ?? 2000;
    if (!Number.isInteger(this.defaultAttempts) || this.defaultAttempts < 1) throw new UserError('--attempts must be an integer >= 1');
    if (!(this.defaultBackoffMs >= 0)) throw new UserError('--backoff must be a non-negative number of milliseconds');
    const ttl = opts.resultsTtlSeconds ?? 86400;
    const stalledInterval = opts.stalledIntervalMs ?? 30000;
    const lockDuration = lockDurationFor(stalledInterval, opts.lockDurationMs);
    this.worker = new Worker<JobData, object>(opts.queueName ?? QUEUE_NAME, (job, token, signal) => this.process(job, token, signal), {
      connection: opts.connection,
      concurrency,
      stalledInterval,
      lockDuration,
      maxStalledCount: opts.maxStalledCount ?? 2,
      removeOnComplete: { age: ttl },
      removeOnFail: { age: 7 * 86400 },
    });
    this.worker.on('error', (e) => this.log(`worker: ${e.message}`));
    this.worker.on('failed', (job, e) => {
      if (job && !(e instanceof WaitingError)) this.log(`job ${job.id} failed (attempt ${attemptsOf(job)}): ${e.message}`);
    });
    // Redis was away longer than the lock: a stall check hands (or has handed) the job to a
    // worker again, so finishing it here would only compute it twice.
    this.worker.on('lockRenewalFailed', (jobIds: string[]) => {
      for (const id of jobIds) {
        const run = this.running.get(id);
        if (!run || run.lockLost) continue;
        run.lockLost = true;
        run.abort.abort();
      }
    });
  }

  /** Resolves once connected and taking jobs. */
  waitUntilReady(): Promise<void> {
    return this.worker.waitUntilReady().then(() => undefined);
  }

  /** Jobs being processed now. */
  get activeJobs(): number {
    return this.running.size;
  }

  private async process(job: Job<JobData, object>, token?: string, signal?: AbortSignal): Promise<object> {
    const data = job.data;
    if (!data || !ENDPOINTS.includes(data.endpoint)) {
      throw new UnrecoverableError(`endpoint must be "completions" or "chat.completions", got ${JSON.stringify(data?.endpoint)}`);
    }
    // A batch request answers a bad request with its 400 (the batch's error file), not a failed job.
    const batch = batchRefOf(data);
    const t0 = Date.now();
    let prepared;
    try {
      prepared = await this.opts.api.prepareAsync(data.endpoint, data); // long prompts off the event loop (lock renewals, progress)
    } catch (e) {
      const answer = batch && clientError(e);
      if (batch && answer) return this.finished(job, batch, 0, t0, answer);
      throw unrecoverableIfBadInput(e);
    }
    prepared.stream = false;
    this.log(`job ${job.id} started: ${data.endpoint}, ${prepared.prompts.length * prepared.n} sequence(s)`);

    const run: Running = { abort: new AbortController(), release: false, lockLost: false };
    this.running.set(job.id!, run);
    signal?.addEventListener('abort', () => run.abort.abort(), { once: true });
    let tokens = 0;
    let lastWrite = 0;
    const onProgress = (n: number): void => {
      tokens = n;
      const now = Date.now();
      if (now - lastWrite < this.progressMs) return;
      lastWrite = now;
      job.updateProgress(n).catch((e: Error) => this.log(`job ${job.id}: progress not written (${e.message})`));
    };
    try {
      // A CONSUMER span carrying the job id around the job's request spans (when tracing).
      const out = await traceJob(job, () => this.opts.api.run(prepared!, { signal: run.abort.signal, onProgress }));
      await job.updateProgress(tokens);
      return this.finished(job, batch, tokens, t0, batch ? { status_code: 200, body: out } : out);
    } catch (e) {
      const answer = batch && !run.lockLost && !run.release ? clientError(e) : null;
      if (batch && answer) return this.finished(job, batch, tokens, t0, answer);
      if (run.lockLost) {
        // Not ours any more: no retry bookkeeping, no state change (Redis would refuse it without the lock).
        this.log(`job ${job.id}: its lock expired while Redis was away; stopped here, a stall check returns it to the queue`);
        throw new WaitingError();
      }
      if (run.release) {
        // Shutting down: hand the job back untouched for another worker.
        await job.moveToWait(token);
        this.log(`job ${job.id} released back to the queue`);
        throw new WaitingError();
      }
      const err = unrecoverableIfBadInput(e);
      // BullMQ retries only jobs that carry `attempts`; give the others the worker's default. The
      // retries are counted in the job's data (written before the move, so a crash between the two
      // costs a retry rather than granting one): a hand-back at shutdown or a stall recovery is no retry.
      const retries = workerRetries(job.data);
      if (!(err instanceof UnrecoverableError) && !job.opts.attempts && token && retries + 1 < this.defaultAttempts) {
        const delay = this.defaultBackoffMs * 2 ** retries;
        await job.updateData({ ...job.data, [WORKER_RETRIES_KEY]: retries + 1 });
        await job.moveToDelayed(Date.now() + delay, token);
        this.log(`job ${job.id}: ${(e as Error).message}; retry ${retries + 1} of ${this.defaultAttempts - 1} in ${delay} ms`);
        throw new DelayedError();
      }
      throw err;
    } finally {
      this.running.delete(job.id!);
    }
  }

  /** One line per finished job (id, tokens, time; the batch request it answers), then its return value. */
  private finished(job: Job<JobData, object>, batch: BatchRequestRef | null, tokens: number, t0: number, out: object): object {
    const status = batch ? ` (batch ${batch.batch_id} custom_id ${JSON.stringify(batch.custom_id)}: ${(out as BatchJobResult).status_code})` : '';
    this.log(`job ${job.id} finished: ${tokens} tokens in ${Date.now() - t0} ms${status}`);
    return out;
  }

  /**
   * Stops taking jobs and waits for the current ones; after `graceMs` the ones still
   * running are cancelled and moved back to wait. Then closes the worker.
   */
  async shutdown(graceMs: number): Promise<void> {
    const closing = this.worker.close();
    const timer = setTimeout(() => {
      for (const r of this.running.values()) {
        r.release = true;
        r.abort.abort();
      }
    }, graceMs);
    try {
      await closing;
    } finally {
      clearTimeout(timer);
    }
  }

  /** Closes at once; running jobs are left to the stall check of other workers. */
  async close(): Promise<void> {
    await this.worker.close(true);
  }
}

/** A batch request's error answer when the request itself is at fault (4xx but 429), else null. */
function clientError(e: unknown): BatchJobResult | null {
  const err = e instanceof UserError ? toApiError(e) : e;
  return err instanceof ApiError && err.isClientError ? { status_code: err.status, body: err.toJSON() } : null;
}

/** A bad request never gets better by retrying. */
function unrecoverableIfBadInput(e: unknown): unknown {
  if (e instanceof UserError) return new UnrecoverableError(e.message);
  if (e instanceof ApiError && e.isClientError) return new UnrecoverableError(e.message);
  return e;
}
