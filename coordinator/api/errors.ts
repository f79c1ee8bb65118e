// Errors as OpenAI error objects: {"error": {"message", "type", "param", "code"}},
// with the status the OpenAI API (and its clients) expect for each kind.
import { UserError } from '../../core/errors';
import { QueueFullError, SchedulerClosedError, StepError } from '../scheduler';

export class ApiError extends Error {
  constructor(
    readonly status: number,
    message: string,
    readonly type: string = 'invalid_request_error',
    readonly param: string | null = null,
    readonly code: string | null = null,
  ) {
    // One line always: messages quote client values (model names, stop strings), and a raw
    // newline in one would split the log line and mislead clients that print the first line.
    super(oneLine(message));
    this.name = 'ApiError';
  }

  /** The client sent something wrong (4xx) as opposed to the server failing. */
  get isClientError(): boolean {
    return this.status >= 400 && this.status < 500 && this.status !== 429;
  }

  toJSON(): { error: { message: string; type: string; param: string | null; code: string | null } } {
    return { error: { message: this.message, type: this.type, param: this.param, code: this.code } };
  }
}

/** Control characters (and U+2028/9, line breaks to JavaScript) as \uXXXX escapes. */
export const oneLine = (text: string): string =>
  text.replace(/[\u0000-\u001f\u007f\u2028\u2029]/g, (c) => `\\u${c.charCodeAt(0).toString(16).padStart(4, '0')}`);

/** A client-sent value for an error message: JSON-quoted (escapes visible) and at most 80 characters. */
export const quoteValue = (value: string): string => JSON.stringify(value.length > 80 ? `${value.slice(0, 80)}…` : value);

export const badRequest = (message: string, param: string | null = null, code: string | null = null): ApiError =>
  new ApiError(400, message, 'invalid_request_error', param, code);

export const methodNotAllowed = (method: string, path: string): ApiError =>
  new ApiError(405, `${method} is not allowed on ${path}`, 'invalid_request_error', null, 'method_not_allowed');

/**
 * A request target's path without its query and trailing slashes ('/' for none); null when it
 * cannot be parsed (a 400). "/x" and "//x" are paths (origin-form: "//x" is no host), anything
 * else must be an absolute URL.
 */
export function routePath(url: string | undefined): string | null {
  const target = url ?? '/';
  try {
    const u = target.startsWith('/') ? new URL(`http://localhost${target}`) : new URL(target);
    return u.pathname.replace(/\/+$/, '') || '/';
  } catch {
    return null;
  }
}

export const badTarget = (): ApiError =>
  new ApiError(400, 'the request target is not a valid path or URL: send e.g. "POST /v1/completions"', 'invalid_request_error', null, 'invalid_request_target');

export const expertsUnavailable = (detail = 'not every expert node is reachable'): ApiError =>
  new ApiError(503, `experts unavailable: ${detail}; retry shortly`, 'service_unavailable', null, 'experts_unavailable');

/** Maps anything thrown while serving a request to an ApiError (unknown errors are 500s). */
export function toApiError(e: unknown, expertsReady = true): ApiError {
  if (e instanceof ApiError) return e;
  if (e instanceof UserError) return badRequest(e.message, e.param ?? paramOf(e.message));
  if (e instanceof QueueFullError) return new ApiError(429, e.message, 'rate_limit_error', null, 'queue_full');
  if (e instanceof SchedulerClosedError) return new ApiError(503, e.message, 'service_unavailable', null, 'shutting_down');
  if (e instanceof StepError) {
    // The remote backend's ExpertsUnavailableError (matched by name: http does not import gRPC code).
    const missing = (e.cause as Error | undefined)?.name === 'ExpertsUnavailableError';
    return expertsReady && !missing ? new ApiError(500, e.message, 'server_error', null, 'generation_failed') : expertsUnavailable(e.message);
  }
  return new ApiError(500, `internal error: ${e instanceof Error ? e.message : String(e)}`, 'server_error');
}

/** "max_tokens must be ..." -> "max_tokens": for UserErrors without a param, whose messages start with the field they are about. */
function paramOf(message: string): string | null {
  const m = /^(prompt|max_tokens|messages|stop|seed|n)\b/.exec(message);
  return m ? m[1] : null;
}
