// `serve --redis URL`: the OpenAI Files and Batch API on the BullMQ queue (its flags and
// start-up). Without --redis the server has no /v1/files or /v1/batches.
import type { Command } from 'commander';
import { UserError } from '../core/errors';
import type { Route } from '../coordinator/http/batch-routes';
import { intOption } from './options';

export interface BatchApiFlags {
  redis?: string;
  queue?: string;
  filesDir?: string;
  maxFileMb: number;
  maxFileLines: number;
}

export function addBatchApiOptions(cmd: Command): Command {
  return cmd
    .option('--redis <url>', 'serve the OpenAI Batch API (/v1/files, /v1/batches) on this Redis; `worker`s run the requests')
    .option('--queue <name>', 'with --redis: the BullMQ queue batches go to (default: generation)')
    .option('--files-dir <dir>', 'with --redis: keep batch input/output files in DIR (shared by every coordinator) instead of Redis')
    .option('--max-file-mb <mb>', 'with --redis: largest batch input file', intOption('--max-file-mb', 1), 100)
    .option('--max-file-lines <n>', 'with --redis: most requests in one batch input file', intOption('--max-file-lines', 1), 50_000);
}

/** A Batch API request waits this long for Redis, then answers 503. */
const REDIS_COMMAND_TIMEOUT_MS = 5000;

export interface BatchApi {
  route: Route;
  close(): Promise<void>;
}

/** Connects to Redis and starts the batch sweep; undefined without --redis. */
export async function startBatchApi(flags: BatchApiFlags, log: (line: string) => void): Promise<BatchApi | undefined> {
  if (flags.redis === undefined) {
    for (const [set, name] of [[flags.queue, '--queue'], [flags.filesDir, '--files-dir']] as const) {
      if (set !== undefined) throw new UserError(`${name} needs --redis URL (it configures the Batch API, which lives in Redis)`);
    }
    return undefined;
  }
  const { checkRedis, connectRedis } = await import('../coordinator/queue/connection');
  const { FileStore } = await import('../coordinator/queue/files-store');
  const { BatchService, batchNamespace } = await import('../coordinator/queue/batches');
  const { batchRoutes } = await import('../coordinator/http/batch-routes');
  const connection = connectRedis(flags.redis, 'producer', { commandTimeoutMs: REDIS_COMMAND_TIMEOUT_MS });
  connection.on('error', () => undefined); // a failing command answers its request with a 500
  try {
    await checkRedis(connection, flags.redis);
    const queueName = flags.queue ?? 'generation';
    const files = new FileStore({
      connection,
      namespace: batchNamespace(queueName),
      dir: flags.filesDir,
      limits: { maxBytes: flags.maxFileMb * 2 ** 20, maxLines: flags.maxFileLines },
    });
    const batches = new BatchService({ connection, files, queueName, log });
    batches.start();
    log(`batch API: /v1/files and /v1/batches on queue ${queueName} at ${flags.redis}${flags.filesDir ? `, files in ${flags.filesDir}` : ''}`);
    return {
      route: batchRoutes({ batches, files }),
      async close() {
        await batches.close();
        connection.disconnect();
      },
    };
  } catch (e) {
    connection.disconnect();
    throw e;
  }
}
