// The OpenAI Batch API over the `generation` queue. A batch lives in Redis (so it survives
// a coordinator restart, and any coordinator can answer for it); its requests are ordinary
// BullMQ jobs (batch-job.ts) that any `worker` runs. Every coordinator runs a sweep that
// moves each unfinished batch on, one coordinator at a time per batch (a Redis lock):
//
//   validating  -> the input is checked (bad lines: failed) and enqueued; ids are fixed, so
//                  enqueueing again after a crash adds nothing twice -> in_progress
//   in_progress -> finished jobs are collected into the batch's results hash (one field
//                  per input line, written only if absent: each custom_id exactly once)
//   all in      -> finalizing -> output and error files under ids fixed by the batch id
//                  (a second finalizer writes nothing new) -> completed
//   past expires_at (completion_window) -> as a cancel, ending in expired ("batch_expired")
//   cancelling  -> waiting jobs are removed (running ones finish); removed ones are
//                  "batch_cancelled" in the error file -> cancelled
//
// A status changes only from the status it was read in (a Lua compare-and-set), so two
// coordinators, or one and its restarted self, never both make the same move.
import { randomBytes } from 'node:crypto';
import { Queue } from 'bullmq';
import type { ChainableCommander, Redis } from 'ioredis';
import { ApiError, badRequest } from '../api/errors';
import { BATCH_ENDPOINTS, parseBatchInput, shown, type BatchLineError, type BatchRequestLine } from './batch-input';
import { BATCH_FIELD, batchJobId, batchRefOf, type BatchJobResult, type BatchRequestRef } from './batch-job';
import type { JobData } from './job';
import { QUEUE_NAME } from './connection';
import { ID_PATTERN, type FileStore } from './files-store';

export type BatchStatus = 'validating' | 'failed' | 'in_progress' | 'finalizing' | 'completed' | 'expired' | 'cancelling' | 'cancelled';

/** OpenAI's batch object. */
export interface BatchObject {
  id: string;
  object: 'batch';
  endpoint: string;
  errors: { object: 'list'; data: BatchLineError[] } | null;
  input_file_id: string;
  completion_window: string;
  status: BatchStatus;
  output_file_id: string | null;
  error_file_id: string | null;
  created_at: number;
  in_progress_at: number | null;
  expires_at: number;
  finalizing_at: number | null;
  completed_at: number | null;
  failed_at: number | null;
  expired_at: number | null;
  cancelling_at: number | null;
  cancelled_at: number | null;
  request_counts: { total: number; completed: number; failed: number };
  metadata: Record<string, string> | null;
  model: string | null;
}

export interface BatchServiceOptions {
  /** A producer-role connection (commands fail instead of hanging when Redis is away). */
  connection: Redis;
  files: FileStore;
  queueName?: string;
  /** How often unfinished batches are moved on. Default 1000 ms. */
  sweepIntervalMs?: number;
  /** A batch's sweep lock lives this long unless renewed. Default 60 s. */
  lockMs?: number;
  /** A batch still running this long after its creation expires. Default 24 h (OpenAI's only window). */
  completionWindowS?: number;
  /** Tries per request for transient failures (an expert node down). Default 3. */
  attempts?: number;
  backoffMs?: number;
  log?: (line: string) => void;
}

const TIMESTAMPS = ['created_at', 'in_progress_at', 'expires_at', 'finalizing_at', 'completed_at', 'failed_at', 'expired_at', 'cancelling_at', 'cancelled_at'] as const;
/** Jobs enqueued or looked up per Redis round trip. */
const CHUNK = 500;
/** Pending requests a sweep looks at, and how often it looks at all of them (see collect). */
const SCAN_WINDOW = 2000;
const FULL_SCAN_MS = 30_000;
/** Finished jobs and batch results are kept this long (the files stay). */
const JOB_TTL_S = 7 * 86400;

// KEYS[1] batch hash; ARGV: allowed statuses (comma list), new status, then field/value pairs.
const TRANSITION = `
local s = redis.call('HGET', KEYS[1], 'status')
if not s then return 0 end
local ok = false
for a in string.gmatch(ARGV[1], '[^,]+') do if a == s then ok = true end end
if not ok then return 0 end
redis.call('HSET', KEYS[1], 'status', ARGV[2])
for i = 3, #ARGV, 2 do redis.call('HSET', KEYS[1], ARGV[i], ARGV[i + 1]) end
return 1`;

// KEYS[1] results hash, KEYS[2] batch hash; ARGV: index, line, counter field ('' for none).
const RECORD = `
if redis.call('HSETNX', KEYS[1], ARGV[1], ARGV[2]) == 1 then
  if ARGV[3] ~= '' then redis.call('HINCRBY', KEYS[2], ARGV[3], 1) end
  return 1
end
return 0`;

// KEYS[1] lock; ARGV: token, ms. Renews (ms > 0) or releases (ms = 0) a lock only its holder may.
const LOCK_OWNER = `
if redis.call('GET', KEYS[1]) ~= ARGV[1] then return 0 end
if tonumber(ARGV[2]) > 0 then return redis.call('PEXPIRE', KEYS[1], ARGV[2]) end
return redis.call('DEL', KEYS[1])`;

export const batchNotFound = (id: string): ApiError =>
  new ApiError(404, `No such batch: ${shown(id)}`, 'invalid_request_error', 'batch_id', 'batch_not_found');

const now = (): number => Math.floor(Date.now() / 1000);

export class BatchService {
  readonly queue: Queue;
  readonly namespace: string;
  private readonly redis: Redis;
  private readonly files: FileStore;
  private readonly sweepMs: number;
  private readonly lockMs: number;
  private readonly attempts: number;
  private readonly windowS: number;
  private readonly backoffMs: number;
  private readonly log: (line: string) => void;
  private timer: NodeJS.Timeout | undefined;
  private sweeping: Promise<void> | undefined;
  private again = false;
  private closed = false;
  private lastLog: { line: string; at: number } | undefined;
  /** When this coordinator last looked at every pending request of a batch. */
  private readonly lastFullScan = new Map<string, number>();

  constructor(opts: BatchServiceOptions) {
    const queueName = opts.queueName ?? QUEUE_NAME;
    this.redis = opts.connection;
    this.files = opts.files;
    this.namespace = batchNamespace(queueName);
    this.queue = new Queue(queueName, { connection: opts.connection });
    this.sweepMs = opts.sweepIntervalMs ?? 1000;
    this.lockMs = opts.lockMs ?? 60_000;
    this.attempts = opts.attempts ?? 3;
    this.windowS = opts.completionWindowS ?? 24 * 3600;
    this.backoffMs = opts.backoffMs ?? 2000;
    this.log = opts.log ?? ((line) => process.stderr.write(line + '\n'));
  }

  private key(id: string, part = ''): string {
    return `${this.namespace}:batch:${id}${part}`;
  }

  private get activeKey(): string {
    return `${this.namespace}:active`;
  }

  private get indexKey(): string {
    return `${this.namespace}:batches`;
  }

  // ---- the API ----

  /** POST /v1/batches: checks the parameters and the input file's presence; validation runs in the sweep. */
  async create(body: unknown): Promise<BatchObject> {
    if (typeof body !== 'object' || body === null || Array.isArray(body)) throw badRequest('the request body must be a JSON object');
    const b = body as Record<string, unknown>;
    if (typeof b.input_file_id !== 'string') throw badRequest('input_file_id: this field is required (the id POST /v1/files returned)', 'input_file_id');
    if (typeof b.endpoint !== 'string' || !(b.endpoint in BATCH_ENDPOINTS)) {
      throw badRequest(`endpoint: expected "/v1/completions" or "/v1/chat/completions", got ${shown(b.endpoint)}`, 'endpoint');
    }
    if (b.completion_window !== '24h') throw badRequest(`completion_window: expected "24h", got ${shown(b.completion_window)}`, 'completion_window');
    const metadata = parseMetadata(b.metadata);
    const file = await this.files.get(b.input_file_id);
    if (!file) throw badRequest(`input_file_id: no such file ${shown(b.input_file_id)}; upload it with POST /v1/files (purpose "batch")`, 'input_file_id', 'file_not_found');
    if (file.purpose !== 'batch') throw badRequest(`input_file_id: file ${file.id} has purpose "${file.purpose}", not "batch"`, 'input_file_id');
    const id = `batch_${randomBytes(12).toString('hex')}`;
    const created = now();
    const fields: Record<string, string> = {
      id,
      endpoint: b.endpoint,
      input_file_id: file.id,
      completion_window: '24h',
      status: 'validating',
      created_at: String(created),
      expires_at: String(created + this.windowS),
      metadata: JSON.stringify(metadata),
      total: '0',
      completed: '0',
      failed: '0',
    };
    await this.redis.multi().hset(this.key(id), fields).zadd(this.indexKey, Date.now(), id).sadd(this.activeKey, id).exec();
    this.kick();
    return this.retrieve(id);
  }

  async retrieve(id: string): Promise<BatchObject> {
    const h = ID_PATTERN.test(id) ? await this.redis.hgetall(this.key(id)) : {};
    if (!h.id) throw batchNotFound(id);
    return batchObject(h);
  }

  /** GET /v1/batches: newest first, `after` the last id of the previous page. */
  async list(after: string | null, limitText: string | null): Promise<object> {
    const limit = limitText === null ? 20 : Number(limitText);
    if (!Number.isInteger(limit) || limit < 1 || limit > 100) throw badRequest(`limit: expected an integer from 1 to 100, got ${shown(limitText)}`, 'limit');
    let start = 0;
    if (after !== null) {
      const rank = await this.redis.zrevrank(this.indexKey, after);
      if (rank === null) throw badRequest(`after: no such batch ${shown(after)}`, 'after');
      start = rank + 1;
    }
    const ids = await this.redis.zrevrange(this.indexKey, start, start + limit); // one more: has_more
    const page = ids.slice(0, limit);
    // The page's batches in one round trip; one gone meanwhile (or unreadable) is left out.
    const pipe = this.redis.pipeline();
    for (const id of page) pipe.hgetall(this.key(id));
    const found = ((await pipe.exec()) ?? [])
      .map(([err, h]) => (err ? null : (h as Record<string, string>)))
      .filter((h): h is Record<string, string> => h !== null && h.id !== undefined)
      .map(batchObject);
    return { object: 'list', data: found, first_id: found[0]?.id ?? null, last_id: found.at(-1)?.id ?? null, has_more: ids.length > limit };
  }

  /** POST /v1/batches/{id}/cancel: waiting requests are dropped, running ones finish. */
  async cancel(id: string): Promise<BatchObject> {
    const batch = await this.retrieve(id);
    if (batch.status === 'cancelling' || batch.status === 'cancelled') return batch;
    const moved = await this.transition(id, ['validating', 'in_progress'], 'cancelling', { cancelling_at: String(now()) });
    if (!moved) {
      const b = await this.retrieve(id);
      if (b.status === 'cancelling' || b.status === 'cancelled') return b;
      throw new ApiError(409, `batch ${id} is ${b.status}: only a validating or in_progress batch can be cancelled`, 'invalid_request_error', null, 'batch_not_cancellable');
    }
    this.kick();
    return this.retrieve(id);
  }

  // ---- the sweep ----

  /** Starts the periodic sweep (every coordinator runs one). */
  start(): void {
    const loop = () => {
      if (this.closed) return;
      this.timer = setTimeout(() => {
        this.sweep().finally(loop);
      }, this.sweepMs);
    };
    this.kick();
    loop();
  }

  /** A sweep now (after a create or cancel), or right after the one running. */
  private kick(): void {
    if (this.closed) return;
    if (this.sweeping) this.again = true;
    else void this.sweep();
  }

  /** One pass over every unfinished batch; never throws (logs). */
  sweep(): Promise<void> {
    if (this.sweeping) {
      this.again = true;
      return this.sweeping;
    }
    this.sweeping = (async () => {
      do {
        this.again = false;
        try {
          for (const id of await this.redis.smembers(this.activeKey)) {
            if (this.closed) return;
            await this.withLock(id, () => this.advance(id)).catch((e: Error) => this.logOnce(`batch ${id}: ${e.message}`));
          }
        } catch (e) {
          this.logOnce(`batch sweep: ${(e as Error).message}`);
        }
      } while (this.again && !this.closed);
    })().finally(() => (this.sweeping = undefined));
    return this.sweeping;
  }

  /** A failing sweep (Redis away) logs each distinct message once a minute, not every sweep. */
  private logOnce(line: string): void {
    const t = Date.now();
    if (this.lastLog?.line === line && t - this.lastLog.at < 60_000) return;
    this.lastLog = { line, at: t };
    this.log(line);
  }

  /** Runs `fn` holding the batch's lock (renewed while it runs); skips when another coordinator holds it. */
  private async withLock(id: string, fn: () => Promise<void>): Promise<void> {
    const key = this.key(id, ':lock');
    const token = randomBytes(8).toString('hex');
    if ((await this.redis.set(key, token, 'PX', this.lockMs, 'NX')) !== 'OK') return;
    const renew = setInterval(() => {
      this.redis.eval(LOCK_OWNER, 1, key, token, this.lockMs).catch(() => undefined);
    }, this.lockMs / 3);
    try {
      await fn();
    } finally {
      clearInterval(renew);
      await this.redis.eval(LOCK_OWNER, 1, key, token, 0).catch(() => undefined);
    }
  }

  private async advance(id: string): Promise<void> {
    const h = await this.redis.hgetall(this.key(id));
    if (!h.id) {
      await this.redis.srem(this.activeKey, id);
      return;
    }
    const status = h.status as BatchStatus;
    if (status === 'validating') return this.validate(h);
    if (status === 'in_progress' || status === 'cancelling') {
      if (status === 'in_progress' && h.expiring !== '1' && now() >= Number(h.expires_at)) {
        // Out of its window: stop it as a cancel does, and end it as expired.
        await this.redis.hset(this.key(id), 'expiring', '1');
        h.expiring = '1';
        this.log(`batch ${id}: past its completion window; dropping the requests still waiting`);
      }
      if (await this.collect(h)) return this.finalize(id);
      return;
    }
    if (status === 'finalizing') return this.finalize(id);
    await this.redis.srem(this.activeKey, id); // finished
  }

  private async transition(id: string, from: BatchStatus[], to: BatchStatus, fields: Record<string, string> = {}): Promise<boolean> {
    const args = [from.join(','), to, ...Object.entries(fields).flat()];
    return (await this.redis.eval(TRANSITION, 1, this.key(id), ...args)) === 1;
  }

  private async input(h: Record<string, string>): Promise<{ requests: BatchRequestLine[]; errors: BatchLineError[] }> {
    const content = await this.files.content(h.input_file_id);
    if (!content) return { requests: [], errors: [{ code: 'file_not_found', message: `the input file ${h.input_file_id} is gone`, param: 'input_file_id', line: null }] };
    try {
      return parseBatchInput(content, h.endpoint);
    } catch (e) {
      // Whatever a file holds fails its batch once, never every sweep.
      return { requests: [], errors: [{ code: 'invalid_file', message: `the input file cannot be read as a batch (${(e as Error).message})`, param: null, line: null }] };
    }
  }

  private async validate(h: Record<string, string>): Promise<void> {
    const id = h.id;
    const { requests, errors } = await this.input(h);
    if (errors.length > 0) {
      await this.transition(id, ['validating'], 'failed', { failed_at: String(now()), errors: JSON.stringify(errors) });
      await this.redis.srem(this.activeKey, id);
      this.log(`batch ${id} failed validation: ${errors[0].line !== null ? `line ${errors[0].line}: ` : ''}${errors[0].message}${errors.length > 1 ? ` (and ${errors.length - 1} more)` : ''}`);
      return;
    }
    const model = requests.find((r) => typeof r.body.model === 'string')?.body.model as string | undefined;
    await this.redis.hset(this.key(id), { total: String(requests.length), ...(model ? { model } : {}) });
    if (!(await this.enqueue(h, requests))) return; // cancelled meanwhile: the next sweep handles it
    if (await this.transition(id, ['validating'], 'in_progress', { in_progress_at: String(now()) })) {
      this.log(`batch ${id}: ${requests.length} request(s) queued on ${this.queue.name}`);
    }
  }

  /** Adds the requests' jobs (again: a job with the same id is not added twice). False when the batch stopped validating/running. */
  private async enqueue(h: Record<string, string>, requests: BatchRequestLine[], indexes?: number[]): Promise<boolean> {
    const endpoint = BATCH_ENDPOINTS[h.endpoint];
    const which = indexes ?? requests.map((_, i) => i);
    for (let i = 0; i < which.length; i += CHUNK) {
      const status = await this.redis.hget(this.key(h.id), 'status');
      if (status !== 'validating' && status !== 'in_progress') return false;
      await this.queue.addBulk(
        which.slice(i, i + CHUNK).map((index) => {
          const r = requests[index];
          const ref: BatchRequestRef = { batch_id: h.id, custom_id: r.custom_id, index };
          return {
            name: endpoint,
            data: { ...r.body, endpoint, [BATCH_FIELD]: ref },
            opts: {
              jobId: batchJobId(h.id, index),
              attempts: this.attempts,
              backoff: { type: 'exponential', delay: this.backoffMs },
              removeOnComplete: { age: JOB_TTL_S },
              removeOnFail: { age: JOB_TTL_S },
            },
          };
        }),
      );
    }
    return true;
  }

  /**
   * Collects the finished jobs not yet in the results hash; when cancelling or expiring, removes
   * the waiting ones. True once every request has its line. Workers take jobs in order, so a
   * sweep looks at the first SCAN_WINDOW pending requests only, and at all of them (a request
   * that finished out of order, e.g. after a retry) every FULL_SCAN_MS: a 50k-request batch costs
   * a few thousand HMGETs a second, not 50k.
   */
  private async collect(h: Record<string, string>): Promise<boolean> {
    const id = h.id;
    const total = Number(h.total);
    const resultsKey = this.key(id, ':results');
    // Cancelled or expired: waiting requests are dropped (a cancel wins over an expiry).
    const why = h.status === 'cancelling' ? 'cancelled' : h.expiring === '1' ? 'expired' : null;
    const stopping = why !== null;
    const have = new Set((await this.redis.hkeys(resultsKey)).map(Number));
    let pending: number[] = [];
    for (let i = 0; i < total; i++) if (!have.has(i)) pending.push(i);
    const full = stopping || pending.length <= SCAN_WINDOW || Date.now() - (this.lastFullScan.get(id) ?? 0) >= FULL_SCAN_MS;
    if (full) this.lastFullScan.set(id, Date.now());
    else pending = pending.slice(0, SCAN_WINDOW);
    const missing: number[] = [];
    for (let i = 0; i < pending.length; i += CHUNK) {
      const chunk = pending.slice(i, i + CHUNK);
      // Two small fields and the lock of each pending job, read at one instant; the answer and the body only
      // of the finished ones.
      const states = await this.jobStates(chunk.map((index) => this.queue.toKey(batchJobId(id, index))));
      const finished: number[] = [];
      const waiting: number[] = [];
      for (let k = 0; k < chunk.length; k++) {
        const { timestamp, finishedOn, locked } = states[k];
        if (timestamp === null) missing.push(chunk[k]);
        else if (finishedOn !== null) finished.push(chunk[k]);
        // A job a worker holds is not removed (BullMQ would refuse), nor even tried: it may finish before
        // the removal, and removing it then would drop its answer; a later sweep collects it.
        else if (stopping && !locked) waiting.push(chunk[k]);
      }
      // One round trip for the finished jobs' answers and the waiting jobs' bodies (their custom_id).
      const reads = await this.hmgetAll([
        ...finished.map((index): [string, string[]] => [this.queue.toKey(batchJobId(id, index)), ['returnvalue', 'failedReason', 'data']]),
        ...waiting.map((index): [string, string[]] => [this.queue.toKey(batchJobId(id, index)), ['data']]),
      ]);
      // Only a job no worker holds is removed (1): one taken since the read is refused and collected later.
      // (One taken *and* finished since the read is removed all the same, and reported cancelled, once.)
      // Issued together, the removals share a round trip (BullMQ's own removeJob, each still atomic).
      const removed = await Promise.all(waiting.map((index) => this.queue.remove(batchJobId(id, index))));
      // The chunk's results and dropped lines recorded in one round trip (each RECORD is still its own atomic script).
      const record = this.redis.pipeline();
      let recorded = 0;
      for (let k = 0; k < finished.length; k++) {
        const [returnvalue, failedReason, data] = reads[k];
        const r = resultLine(id, batchJobId(id, finished[k]), customIdOf(data), returnvalue, failedReason);
        record.eval(RECORD, 2, resultsKey, this.key(id), finished[k], r.line, r.ok ? 'completed' : 'failed');
        recorded++;
      }
      if (why !== null) {
        for (let k = 0; k < waiting.length; k++) {
          if (removed[k] !== 1) continue;
          const [data] = reads[finished.length + k];
          record.eval(RECORD, 2, resultsKey, this.key(id), waiting[k], droppedLine(id, batchJobId(id, waiting[k]), customIdOf(data), why), '');
          recorded++;
        }
      }
      if (recorded > 0) await execAll(record);
    }
    if (missing.length > 0) {
      if (stopping) {
        // Removed by a cancel (or never enqueued): no answer will come.
        const { requests } = await this.input(h);
        for (let i = 0; i < missing.length; i += CHUNK) {
          const record = this.redis.pipeline();
          for (const index of missing.slice(i, i + CHUNK)) {
            const jobId = batchJobId(id, index);
            record.eval(RECORD, 2, resultsKey, this.key(id), index, droppedLine(id, jobId, requests[index]?.custom_id ?? null, why), '');
          }
          await execAll(record);
        }
      } else {
        // A job that should be there is not (removed by hand, or lost with Redis data): queue it again.
        this.log(`batch ${id}: ${missing.length} request(s) not on the queue; adding them again`);
        await this.enqueue(h, (await this.input(h)).requests, missing);
        return false;
      }
    }
    return (await this.redis.hlen(resultsKey)) >= total;
  }

  /** Each job's creation and finish times and whether a worker holds its lock, read atomically (MULTI). */
  private async jobStates(jobKeys: string[]): Promise<{ timestamp: string | null; finishedOn: string | null; locked: boolean }[]> {
    if (jobKeys.length === 0) return [];
    const multi = this.redis.multi();
    for (const key of jobKeys) multi.hmget(key, 'timestamp', 'finishedOn').exists(`${key}:lock`);
    const replies = (await multi.exec()) ?? [];
    return jobKeys.map((_, k) => {
      const [[e1, row], [e2, lock]] = [replies[2 * k], replies[2 * k + 1]];
      if (e1) throw e1;
      if (e2) throw e2;
      const [timestamp, finishedOn] = row as (string | null)[];
      return { timestamp, finishedOn, locked: lock === 1 };
    });
  }

  /** HMGET of many keys in one round trip. */
  private async hmgetAll(reads: [string, string[]][]): Promise<(string | null)[][]> {
    if (reads.length === 0) return [];
    const pipe = this.redis.pipeline();
    for (const [key, fields] of reads) pipe.hmget(key, ...fields);
    return ((await pipe.exec()) ?? []).map(([err, row]) => {
      if (err) throw err;
      return row as (string | null)[];
    });
  }

  /** Writes the output and error files (fixed ids: writing them twice is writing them once) and ends the batch. */
  private async finalize(id: string): Promise<void> {
    const h = await this.redis.hgetall(this.key(id));
    const results = await this.redis.hgetall(this.key(id, ':results'));
    const ordered = Object.entries(results).sort((a, b) => Number(a[0]) - Number(b[0])).map(([, v]) => v);
    const output = ordered.filter((l) => l[0] === 'o').map((l) => l.slice(1));
    const errors = ordered.filter((l) => l[0] === 'e').map((l) => l.slice(1));
    const cancelling = h.status === 'cancelling';
    // Expired only when the window dropped a request (every one may have finished in time after all).
    const expiring = !cancelling && h.expiring === '1' && errors.some((l) => l.includes('"code":"batch_expired"'));
    if (!cancelling && !expiring && h.status === 'in_progress') await this.transition(id, ['in_progress'], 'finalizing', { finalizing_at: String(now()) });
    const suffix = id.replace(/^batch_/, '');
    const fields: Record<string, string> = {};
    if (output.length > 0) fields.output_file_id = (await this.files.create(`${id}_output.jsonl`, 'batch_output', Buffer.from(output.join('\n') + '\n'), `file-out-${suffix}`)).id;
    if (errors.length > 0) fields.error_file_id = (await this.files.create(`${id}_error.jsonl`, 'batch_output', Buffer.from(errors.join('\n') + '\n'), `file-err-${suffix}`)).id;
    const done = cancelling
      ? await this.transition(id, ['cancelling'], 'cancelled', { ...fields, cancelled_at: String(now()) })
      : expiring
        ? await this.transition(id, ['in_progress'], 'expired', { ...fields, expired_at: String(now()) })
        : await this.transition(id, ['finalizing'], 'completed', { ...fields, completed_at: String(now()) });
    await this.redis.srem(this.activeKey, id);
    this.lastFullScan.delete(id);
    await this.redis.expire(this.key(id, ':results'), JOB_TTL_S); // the files hold them now
    if (done) this.log(`batch ${id} ${cancelling ? 'cancelled' : expiring ? 'expired' : 'completed'}: ${output.length} answered, ${errors.length} in the error file`);
  }

  /** Stops the sweep (waits for the one running). */
  async close(): Promise<void> {
    this.closed = true;
    clearTimeout(this.timer);
    await this.sweeping;
    await this.queue.close();
  }
}

/** Redis key prefix of a queue's Batch API (files and batches). */
export function batchNamespace(queueName: string): string {
  return `turbosparse:batch-api:${queueName}`;
}

function parseMetadata(v: unknown): Record<string, string> | null {
  if (v === undefined || v === null) return null;
  if (typeof v !== 'object' || Array.isArray(v)) throw badRequest('metadata: expected an object of string values', 'metadata');
  const entries = Object.entries(v as Record<string, unknown>);
  if (entries.length > 16) throw badRequest(`metadata: at most 16 keys, got ${entries.length}`, 'metadata');
  for (const [k, val] of entries) {
    if (k.length > 64) throw badRequest(`metadata: key ${shown(k)} is longer than 64 characters`, 'metadata');
    if (typeof val !== 'string' || val.length > 512) throw badRequest(`metadata: the value of ${shown(k)}: expected a string of at most 512 characters`, 'metadata');
  }
  return Object.fromEntries(entries) as Record<string, string>;
}

/** Runs a pipeline; the first command's error, if any, is thrown. */
async function execAll(pipe: ChainableCommander): Promise<void> {
  for (const [err] of (await pipe.exec()) ?? []) if (err) throw err;
}

function customIdOf(data: string | null): string | null {
  try {
    return batchRefOf(JSON.parse(data ?? 'null') as JobData | null)?.custom_id ?? null;
  } catch {
    return null;
  }
}

/** A request's id in the output and error files: the batch's suffix and the request's job index. */
function requestId(batchId: string, jobId: string): string {
  return `batch_req_${batchId.replace(/^batch_/, '')}_${jobId.slice(jobId.lastIndexOf('-') + 1)}`;
}

/** A finished job's line of the output ('o') or error ('e') file, in OpenAI's format. */
function resultLine(batchId: string, jobId: string, customId: string | null, returnvalue: string | null, failedReason: string | null): { line: string; ok: boolean } {
  let result: BatchJobResult | null = null;
  try {
    const v = JSON.parse(returnvalue ?? 'null') as BatchJobResult | null;
    if (v && typeof v === 'object' && typeof v.status_code === 'number') result = v;
  } catch {
    /* a failed job has no return value */
  }
  const id = requestId(batchId, jobId);
  if (!result) {
    const body = { error: { message: failedReason ?? 'the request failed', type: 'server_error', param: null, code: 'generation_failed' } };
    return { line: 'e' + JSON.stringify({ id, custom_id: customId, response: { status_code: 500, request_id: jobId, body }, error: null }), ok: false };
  }
  const ok = result.status_code >= 200 && result.status_code < 300;
  return { line: (ok ? 'o' : 'e') + JSON.stringify({ id, custom_id: customId, response: { status_code: result.status_code, request_id: jobId, body: result.body }, error: null }), ok };
}

/** The error-file line of a request dropped before it ran. */
function droppedLine(batchId: string, jobId: string, customId: string | null, why: 'cancelled' | 'expired'): string {
  const id = requestId(batchId, jobId);
  const message = why === 'cancelled' ? 'This request was not run: the batch was cancelled first.' : 'This request was not run within the batch\'s completion window.';
  return 'e' + JSON.stringify({ id, custom_id: customId, response: null, error: { code: `batch_${why}`, message } });
}

function batchObject(h: Record<string, string>): BatchObject {
  const ts = Object.fromEntries(TIMESTAMPS.map((k) => [k, h[k] !== undefined ? Number(h[k]) : null])) as Record<(typeof TIMESTAMPS)[number], number | null>;
  return {
    id: h.id,
    object: 'batch',
    endpoint: h.endpoint,
    errors: h.errors ? { object: 'list', data: JSON.parse(h.errors) as BatchLineError[] } : null,
    input_file_id: h.input_file_id,
    completion_window: h.completion_window,
    status: h.status as BatchStatus,
    output_file_id: h.output_file_id ?? null,
    error_file_id: h.error_file_id ?? null,
    ...ts,
    created_at: ts.created_at ?? 0,
    expires_at: ts.expires_at ?? 0,
    request_counts: { total: Number(h.total ?? 0), completed: Number(h.completed ?? 0), failed: Number(h.failed ?? 0) },
    metadata: h.metadata ? (JSON.parse(h.metadata) as Record<string, string> | null) : null,
    model: h.model ?? null,
  };
}
