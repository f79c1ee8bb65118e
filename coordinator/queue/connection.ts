// The one Redis connection module both roles share (BullMQ's pattern: producers
// and workers are separate roles, each with its own connection built here).
import { Redis } from 'ioredis';
import { UserError } from '../../core/errors';

/** The BullMQ queue every producer and worker uses. */
export const QUEUE_NAME = 'generation';
export const DEFAULT_REDIS_URL = 'redis://127.0.0.1:6379';

/** --redis flag, else $REDIS_URL, else the local default. */
export function redisUrlFrom(flag?: string): string {
  return flag ?? process.env.REDIS_URL ?? DEFAULT_REDIS_URL;
}

export type Role = 'producer' | 'worker';

/**
 * A connection for one role (`commandTimeoutMs`: a command unanswered this long fails). Workers block waiting for jobs and must ride out
 * Redis restarts, so their commands retry forever (BullMQ requires
 * maxRetriesPerRequest: null); producers fail a command after a few retries so a
 * CLI reports a dead Redis instead of hanging.
 */
export function connectRedis(url: string, role: Role, opts: { commandTimeoutMs?: number } = {}): Redis {
  let parsed: URL;
  try {
    parsed = new URL(url);
  } catch {
    throw new UserError(`--redis ${url}: not a URL; expected redis://HOST:PORT[/DB]`);
  }
  if (parsed.protocol !== 'redis:' && parsed.protocol !== 'rediss:') {
    throw new UserError(`--redis ${url}: expected a redis:// or rediss:// URL`);
  }
  return new Redis(url, {
    maxRetriesPerRequest: role === 'worker' ? null : 3,
    // A worker reconnects within about a second of Redis coming back, so its queued lock
    // renewals land in time (see minLockDurationMs); ioredis's default waits up to 5 s.
    ...(role === 'worker' ? { retryStrategy: workerReconnectDelay } : {}),
    // A server answering HTTP requests from Redis must not hang on a stopped Redis (an open
    // socket that never answers is no error to ioredis without this).
    ...(opts.commandTimeoutMs ? { commandTimeout: opts.commandTimeoutMs } : {}),
    connectionName: `turbosparse-${role}`,
    lazyConnect: false,
  });
}

/** Most a worker waits between reconnection attempts (plus up to 100 ms of jitter). */
export const WORKER_RECONNECT_MAX_MS = 1000;

function workerReconnectDelay(times: number): number {
  return Math.min(2 ** (times - 1) * 50, WORKER_RECONNECT_MAX_MS) + Math.floor(Math.random() * 100);
}

/** One PING with a deadline: a clear one-line error when Redis is not there. */
export async function checkRedis(conn: Redis, url: string, timeoutMs = 5000): Promise<void> {
  let timer: NodeJS.Timeout | undefined;
  try {
    await Promise.race([
      conn.ping(),
      new Promise((_, reject) => {
        timer = setTimeout(() => reject(new Error(`no answer within ${timeoutMs} ms`)), timeoutMs);
      }),
    ]);
  } catch (e) {
    throw new UserError(`cannot reach Redis at ${url} (${(e as Error).message}): start redis-server or pass --redis URL / set REDIS_URL`);
  } finally {
    clearTimeout(timer);
  }
}
