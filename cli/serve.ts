// `turbosparse serve`: the OpenAI-compatible HTTP API over the continuous-batching scheduler.
// The server and engine modules load inside the action, so other commands start fast.
import type { Command } from 'commander';
import { floatOption, intOption } from './options';
import { addServingOptions, type ServingFlags } from './serving';

export interface ServeFlags extends ServingFlags {
  port: number;
  host: string;
  apiKey?: string;
  gracePeriod: number;
}

export function registerServe(program: Command): void {
  const cmd = program
    .command('serve')
    .description('serve the model over an OpenAI-compatible HTTP API (/v1/completions, /v1/chat/completions)')
    .requiredOption('--model <dir>', 'Hugging Face model folder')
    .option('--port <p>', 'TCP port (0 = any free port)', intOption('--port'), 8000)
    .option('--host <addr>', 'address to bind', '127.0.0.1')
    .option('--api-key <key>', 'require "Authorization: Bearer KEY" on /v1/* (default: $TURBOSPARSE_API_KEY)')
    .option('--grace-period <s>', 'on SIGTERM: /ready turns 503 and requests in flight get this long to finish', floatOption('--grace-period', 0, 86400), 30);
  addServingOptions(cmd);
  cmd.action(async (flags: ServeFlags) => {
    await runServe(flags);
  });
}

export async function runServe(flags: ServeFlags): Promise<void> {
  const { createHttpServer } = await import('../coordinator/http/server');
  const { observeApi, statusRoutes } = await import('../coordinator/telemetry');
  const { loadServing, onShutdownSignal } = await import('./serving');
  const { listenWhileLoading } = await import('../coordinator/http/loading-server');
  const log = (line: string) => process.stderr.write(line + '\n');
  // Until the engine is up (weights, expert nodes): /health 200, /ready 503, the rest 503.
  const loading = await listenWhileLoading(flags.port, flags.host, 'the model and its expert nodes');
  log(`loading; ${loading.url}/ready answers 503 until the model is loaded and every expert is reachable`);
  let serving;
  try {
    serving = await loadServing(flags, log);
  } finally {
    await loading.close();
  }
  const http = createHttpServer({
    scheduler: serving.scheduler,
    tokenizer: serving.tokenizer,
    modelName: serving.modelName,
    chatTemplate: serving.chatTemplate,
    apiKey: flags.apiKey ?? process.env.TURBOSPARSE_API_KEY,
    ready: serving.ready,
    log,
    // The status page at / and its JSON at /status.json.
    routes: [statusRoutes(serving.observability)],
  });
  observeApi(http.api, serving.observability);
  const { url } = await http.listen(loading.port, flags.host);
  log(`serving ${serving.modelName} at ${url}/v1 (status page ${url}/, health ${url}/health, metrics ${url}/metrics)`);
  onShutdownSignal(async (signal) => {
    log(`${signal}: no new requests; ${flags.gracePeriod} s for those in flight`);
    await http.close(flags.gracePeriod * 1000);
    await serving.close();
  });
}
