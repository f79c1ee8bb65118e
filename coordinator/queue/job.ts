// What a job is: the body of a /v1/completions or /v1/chat/completions request
// plus {"endpoint": ...}; plain JSON any BullMQ producer can write. Its default
// id is a hash of that JSON, so submitting the same request twice is one job.
import { createHash } from 'node:crypto';
import { UserError } from '../../core/errors';
import { ApiError } from '../api/errors';
import { chatBody, completionBody, parseBody, parsePrompt, type Endpoint } from '../api/schemas';

export const ENDPOINTS: readonly Endpoint[] = ['completions', 'chat.completions'];

export type JobData = Record<string, unknown> & { endpoint: Endpoint };

/** Progress of a job: tokens generated so far (BullMQ progress). */
export type JobProgress = number;

/** Keys sorted at every level, so equal requests hash equally whatever their key order. */
export function canonicalJson(v: unknown): string {
  if (Array.isArray(v)) return `[${v.map(canonicalJson).join(',')}]`;
  if (v !== null && typeof v === 'object') {
    const o = v as Record<string, unknown>;
    return `{${Object.keys(o)
      .filter((k) => o[k] !== undefined)
      .sort()
      .map((k) => `${JSON.stringify(k)}:${canonicalJson(o[k])}`)
      .join(',')}}`;
  }
  return JSON.stringify(v);
}

/**
 * The worker's own retries of a job whose producer set no `attempts`, kept in the job's data:
 * BullMQ counts neither them (a retry is a move to delayed, not a failed attempt) nor only
 * them (attemptsStarted also rises when a job is handed back at shutdown or recovered after a stall).
 */
export const WORKER_RETRIES_KEY = 'worker_retries';

/** How many times the worker retried this job itself (0 when never, or when the producer set `attempts`). */
export function workerRetries(data: unknown): number {
  const n = (data as Record<string, unknown> | null | undefined)?.[WORKER_RETRIES_KEY];
  return typeof n === 'number' && Number.isInteger(n) && n > 0 ? n : 0;
}

/** Attempts a job has made: BullMQ's count (failed or completed tries) plus the worker's own retries. */
export function attemptsOf(job: { attemptsMade: number; data: unknown }): number {
  return job.attemptsMade + workerRetries(job.data);
}

/**
 * sha256 of the canonical request (hex; BullMQ custom ids must not look like integers, and
 * hex never quite does). A producer's `trace_context` and the worker's retry count are not part of the request.
 */
export function jobIdFor(data: JobData): string {
  const { trace_context: _ignored, [WORKER_RETRIES_KEY]: _retries, ...request } = data;
  return createHash('sha256').update(canonicalJson(request)).digest('hex');
}

/**
 * One JSONL line -> job data. Accepts a request body with "endpoint" (or without:
 * "messages" means chat), or an OpenAI Batch API line {"url": "/v1/...", "body": {...}}.
 * Validates the body's fields (not the model-dependent limits) so mistakes show at submit.
 */
export function jobDataFrom(line: unknown, where: string): JobData {
  if (typeof line !== 'object' || line === null || Array.isArray(line)) throw new UserError(`${where}: expected a JSON object`);
  let o = line as Record<string, unknown>;
  let endpoint: unknown = o.endpoint;
  if (typeof o.url === 'string' && typeof o.body === 'object' && o.body !== null) {
    const m = /^\/v1\/(completions|chat\/completions)$/.exec(o.url);
    if (!m) throw new UserError(`${where}: url ${o.url} is not /v1/completions or /v1/chat/completions`);
    endpoint = m[1] === 'completions' ? 'completions' : 'chat.completions';
    // The line's custom_id stays with the job (results name it; the API ignores the field).
    o = typeof o.custom_id === 'string' ? { ...(o.body as Record<string, unknown>), custom_id: o.custom_id } : (o.body as Record<string, unknown>);
  }
  endpoint ??= 'messages' in o ? 'chat.completions' : 'completions';
  if (!ENDPOINTS.includes(endpoint as Endpoint)) {
    throw new UserError(`${where}: endpoint must be "completions" or "chat.completions", got ${JSON.stringify(endpoint)}`);
  }
  const data = { ...o, endpoint: endpoint as Endpoint };
  const err = validationError(data);
  if (err) throw new UserError(`${where}: ${err}`);
  return data;
}

/** The 400 message a worker would give this job's body, or null when its fields are well-formed. */
export function validationError(data: JobData): string | null {
  try {
    if (data.endpoint === 'completions') parsePrompt(parseBody(completionBody, data).prompt);
    else parseBody(chatBody, data);
    return null;
  } catch (e) {
    if (e instanceof ApiError) return e.message;
    throw e;
  }
}
