// `turbosparse serve`: the OpenAI-compatible HTTP API over the continuous-batching scheduler.
// The server and engine modules load inside the action, so other commands start fast.
import type { Command } from 'commander';
import { resolveApiKey, type ApiKeyFlags } from './api-key';
import { addBatchApiOptions, startBatchApi, type BatchApiFlags } from './batch-api';
import { floatOption, intOption } from './options';
import { addServingOptions, type ServingFlags } from './serving';

export interface ServeFlags extends ServingFlags, ApiKeyFlags, BatchApiFlags {
  port: number;
  host: string;
  publicMetrics?: boolean;
  metricsPort?: number;
  metricsHost: string;
  requestTimeout: number;
  maxConnections: number;
  gracePeriod: number;
  rebalanceEvery?: number;
}

export function registerServe(program: Command): void {
  const cmd = program
    .command('serve')
    .description('serve the model over an OpenAI-compatible HTTP API (/v1/completions, /v1/chat/completions)')
    .requiredOption('--model <dir>', 'Hugging Face model folder')
    .option('--port <p>', 'TCP port (0 = any free port)', intOption('--port'), 8000)
    .option('--host <addr>', 'address to bind', '127.0.0.1')
    .option('--api-key <key>', 'require "Authorization: Bearer KEY" on /v1/*, /tokenize, /detokenize, /status.json, /metrics (default: $TURBOSPARSE_API_KEY)')
    .option('--api-key-file <file>', 'read the API key from FILE (keeps it out of `ps`)')
    .option('--public-metrics', 'with an API key: /metrics answers without it (for a Prometheus scraper)')
    .option('--metrics-port <p>', 'also serve /metrics (no API key) on this port, e.g. for a scraper on an internal network', intOption('--metrics-port'))
    .option('--metrics-host <addr>', 'address --metrics-port binds', '127.0.0.1')
    .option('--request-timeout <s>', 'a request\'s headers and body must arrive within this (responses may take longer)', floatOption('--request-timeout', 1, 3600), 30)
    .option('--max-connections <n>', 'open HTTP connections at most; more are closed at once', intOption('--max-connections', 1), 1024)
    .option('--grace-period <s>', 'on SIGTERM: /ready turns 503 and requests in flight get this long to finish', floatOption('--grace-period', 0, 86400), 30);
  addServingOptions(cmd);
  cmd.option('--rebalance-every <min>', 'move experts between the nodes every MIN minutes to match the measured routing, when the predicted gain is 5% or more', floatOption('--rebalance-every', 0.1, 10080));
  addBatchApiOptions(cmd);
  cmd.action(async (flags: ServeFlags) => {
    await runServe(flags);
  });
}

export async function runServe(flags: ServeFlags): Promise<void> {
  const { createHttpServer } = await import('../coordinator/http/server');
  const { requestTracing, statusRoutes } = await import('../coordinator/telemetry');
  const { routingStatsRoute } = await import('../coordinator/telemetry/routing-route');
  const { loadServing, onShutdownSignal } = await import('./serving');
  const { listenWhileLoading } = await import('../coordinator/http/loading-server');
  const { startMetricsServer } = await import('../core/metrics-server');
  const log = (line: string) => process.stderr.write(line + '\n');
  // Before anything loads: a bad key file is one line now, not after minutes of loading.
  const apiKey = resolveApiKey(flags);
  (await import('./rebalance')).checkRebalanceFlags(flags);
  // A bad model folder (config, tokenizer, weight files) is its one line, before any "loading" line.
  const { ModelFolder } = await import('../core/model-folder');
  await (await ModelFolder.open(flags.model)).close();
  // Until the engine is up (weights, expert nodes): /health 200, /ready 503, the rest 503.
  const loading = await listenWhileLoading(flags.port, flags.host, 'the model and its expert nodes');
  log(`loading; ${loading.url}/ready answers 503 until the model is loaded and every expert is reachable`);
  let serving;
  let metricsServer;
  try {
    // Metrics without the API key, on a port of their own (e.g. for a scraper inside the cluster).
    metricsServer = flags.metricsPort === undefined ? undefined : await startMetricsServer(flags.metricsPort, flags.metricsHost);
    serving = await loadServing(flags, log);
  } catch (e) {
    await metricsServer?.close();
    throw e;
  } finally {
    await loading.close();
  }
  // The Batch API (serve --redis): /v1/files and /v1/batches, requests run by `worker`s.
  const batchApi = await startBatchApi(flags, log).catch(async (e: unknown) => {
    await serving.close(); // e.g. Redis unreachable: exit with its one line instead of hanging
    throw e;
  });
  // POST /v1/admin/rebalance (and --rebalance-every): live expert placement over the expert nodes.
  const rebalanceRoute = await (await import('./rebalance')).serveRebalancing(serving, flags, log);
  const http = createHttpServer({
    scheduler: serving.scheduler,
    tokenizer: serving.tokenizer,
    modelName: serving.modelName,
    chatTemplate: serving.chatTemplate,
    apiKey,
    publicMetrics: flags.publicMetrics,
    requestTimeoutMs: flags.requestTimeout * 1000,
    maxConnections: flags.maxConnections,
    ready: serving.ready,
    log,
    // The status page at / and its JSON at /status.json.
    routes: [statusRoutes(serving.observability), routingStatsRoute(serving.observability), ...(batchApi ? [batchApi.route] : []), rebalanceRoute],
    // A GenAI request span per request.
    onRequest: requestTracing(serving.observability),
  });
  const { url } = await http.listen(loading.port, flags.host);
  log(`serving ${serving.modelName} at ${url}/v1 (status page ${url}/, health ${url}/health, metrics ${metricsServer?.url ?? `${url}/metrics`})`);
  onShutdownSignal(async (signal) => {
    log(`${signal}: no new requests; ${flags.gracePeriod} s for those in flight`);
    await http.close(flags.gracePeriod * 1000);
    await batchApi?.close();
    await metricsServer?.close();
    await serving.close();
  });
}
