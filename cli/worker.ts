// `turbosparse worker`: takes generation jobs from the BullMQ queue and runs them
// through the same continuous-batching scheduler as `serve`.
// BullMQ and the engine load inside the action, so other commands start fast.
import type { Command } from 'commander';
import { floatOption, intOption } from './options';
import { addServingOptions, type ServingFlags } from './serving';

export interface WorkerFlags extends ServingFlags {
  redis?: string;
  concurrency: number;
  gracePeriod: number;
  stalledInterval: number;
  lockDuration?: number;
  resultsTtl: number;
  progressInterval: number;
  attempts: number;
  backoff: number;
  queue?: string;
  metricsPort?: number;
  metricsHost: string;
}

export function registerWorker(program: Command): void {
  const cmd = program
    .command('worker')
    .description('process batch generation jobs from Redis (BullMQ queue "generation")')
    .requiredOption('--model <dir>', 'Hugging Face model folder')
    .option('--redis <url>', 'Redis URL (default: $REDIS_URL or redis://127.0.0.1:6379)')
    .option('--concurrency <c>', 'jobs processed at once; their sequences decode together', intOption('--concurrency', 1), 4)
    .option('--grace-period <s>', 'on SIGTERM: seconds to finish current jobs before handing them back', floatOption('--grace-period', 0, 86400), 30)
    .option('--stalled-interval <ms>', 'how often to look for jobs of dead workers; a Redis outage shorter than this computes no job twice', intOption('--stalled-interval', 100), 30000)
    .option('--lock-duration <ms>', 'a job lock lives this long without renewal (default and least: 2 x (stalled interval + 1500))', intOption('--lock-duration', 100))
    .option('--results-ttl <s>', 'keep results this long (jobs whose producer set no TTL)', intOption('--results-ttl', 1), 86400)
    .option('--attempts <n>', 'tries for transient failures of jobs whose producer set no "attempts"', intOption('--attempts', 1), 5)
    .option('--backoff <ms>', 'first retry delay of those jobs (doubles each retry)', intOption('--backoff', 0), 2000)
    .option('--progress-interval <ms>', 'write job progress (tokens) at most this often', intOption('--progress-interval', 10), 500)
    .option('--queue <name>', 'queue name (default: generation)')
    .option('--metrics-port <p>', 'serve Prometheus metrics (engine, experts, queue depth) at http://HOST:P/metrics', intOption('--metrics-port'))
    .option('--metrics-host <addr>', 'address the metrics port binds', '127.0.0.1');
  addServingOptions(cmd);
  cmd.action(async (flags: WorkerFlags) => {
    await runWorker(flags);
  });
}

export async function runWorker(flags: WorkerFlags): Promise<void> {
  const { checkRedis, connectRedis, redisUrlFrom } = await import('../coordinator/queue/connection');
  const { GenerationWorker, lockDurationFor } = await import('../coordinator/queue/worker');
  const { OpenAIApi } = await import('../coordinator/api/openai-api');
  const { loadServing, onShutdownSignal } = await import('./serving');
  const log = (line: string) => process.stderr.write(line + '\n');
  lockDurationFor(flags.stalledInterval, flags.lockDuration); // a bad pair fails before the model loads
  const url = redisUrlFrom(flags.redis);
  const connection = connectRedis(url, 'worker');
  connection.on('error', () => undefined); // reconnects; a worker rides out Redis restarts
  await checkRedis(connection, url).catch((e) => {
    connection.disconnect();
    throw e;
  });
  let serving;
  try {
    serving = await loadServing(flags, log);
  } catch (e) {
    connection.disconnect();
    throw e;
  }
  const api = new OpenAIApi({
    scheduler: serving.scheduler,
    tokenizer: serving.tokenizer,
    modelName: serving.modelName,
    chatTemplate: serving.chatTemplate,
    // A GenAI request span per job (inside the job's CONSUMER span, see coordinator/queue/worker.ts).
    onRequest: (await import('../coordinator/telemetry')).requestTracing(serving.observability),
  });
  const worker = new GenerationWorker({
    connection,
    api,
    concurrency: flags.concurrency,
    queueName: flags.queue,
    stalledIntervalMs: flags.stalledInterval,
    lockDurationMs: flags.lockDuration,
    resultsTtlSeconds: flags.resultsTtl,
    progressIntervalMs: flags.progressInterval,
    defaultAttempts: flags.attempts,
    defaultBackoffMs: flags.backoff,
    log,
  });
  // Metrics of this process (it has no HTTP API): engine, expert calls, the queue's depth.
  const metricsServer = flags.metricsPort === undefined ? undefined : await (async () => {
    const { startMetricsServer } = await import('../core/metrics-server');
    const { watchQueueDepth } = await import('../coordinator/telemetry');
    const { Queue } = await import('bullmq');
    const queue = new Queue(flags.queue ?? worker.worker.name, { connection });
    const depth = watchQueueDepth((...states) => queue.getJobCounts(...(states as Parameters<typeof queue.getJobCounts>)));
    const srv = await startMetricsServer(flags.metricsPort!, flags.metricsHost);
    log(`worker: metrics on ${srv.url}`);
    return { close: async () => { depth.stop(); await srv.close(); await queue.close(); } };
  })();
  await worker.waitUntilReady();
  log(`worker: taking jobs from ${worker.worker.name} at ${url} (concurrency ${flags.concurrency})`);
  onShutdownSignal(async (signal) => {
    log(`${signal}: no new jobs; finishing ${worker.activeJobs} current job(s) within ${flags.gracePeriod} s`);
    await worker.shutdown(flags.gracePeriod * 1000);
    await metricsServer?.close();
    await serving!.close();
    connection.disconnect();
    log('worker: stopped');
  });
}
