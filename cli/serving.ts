// What `serve` and `worker` share: the flags of the scheduler, and building the
// serving stack (engine -> tokenizer, chat template -> continuous-batching scheduler).
import path from 'node:path';
import type { Command } from 'commander';
import { ChatTemplate } from '../core/chat-template';
import type { ExpertBackend } from '../core/expert-backend';
import { metrics } from '../core/metrics';
import { TextTokenizer } from '../core/tokenizer';
import type { Engine } from '../coordinator/engine';
import { loadEngine } from '../coordinator/load-engine';
import { Scheduler } from '../coordinator/scheduler';
import { addEngineOptions, engineOptionsFrom, type EngineFlags } from './engine-flags';
import { COORDINATOR_SERVICE, currentTelemetry, setupTelemetry, shutdownTelemetry } from '../core/telemetry';
import { observeEngine, submitTracing, type EngineObservability } from '../coordinator/telemetry';
import { choiceOption, intOption } from './options';
import { METRICS_DETAIL_CHOICES, type MetricsDetail } from '../coordinator/telemetry/metrics';

export interface ServingFlags extends EngineFlags {
  kvBudgetMb: number;
  kvGrowTokens: number;
  prefixCache: boolean;
  maxQueue: number;
  maxRunning: number;
  prefillChunk: number;
  servedModelName?: string;
  metricsDetail?: MetricsDetail;
}

export function addServingOptions(cmd: Command): Command {
  addEngineOptions(cmd);
  return cmd
    .option('--served-model-name <name>', 'the model id clients pass as "model" (default: the folder name)')
    .option('--kv-budget-mb <mb>', 'KV-cache memory all running sequences may use; beyond it requests wait', intOption('--kv-budget-mb', 1), 4096)
    .option('--kv-grow-tokens <n>', 'positions a KV cache gets past what it holds, and the least it grows by', intOption('--kv-grow-tokens', 1), 256)
    .option('--no-prefix-cache', 'do not keep finished sequences\' KV caches for prompts that start with the same tokens')
    .option('--max-queue <n>', 'requests that may wait for KV budget; beyond it: 429 queue full', intOption('--max-queue'), 256)
    .option('--max-running <n>', 'sequences decoded together at most', intOption('--max-running', 1), 256)
    .option('--prefill-chunk <n>', 'prompt tokens prefilled per step (a long prompt does not stall decoding)', intOption('--prefill-chunk', 1), 256)
    .option('--metrics-detail <d>', 'expert-call histograms per node, or per (layer, expert, node) with expert (~100 series per pair: ~25k at 32x8)',
      choiceOption('--metrics-detail', METRICS_DETAIL_CHOICES), 'node');
}

export interface Serving {
  engine: Engine;
  tokenizer: TextTokenizer;
  chatTemplate: ChatTemplate;
  scheduler: Scheduler;
  modelName: string;
  /** True while every expert is reachable. */
  ready: () => boolean;
  /** Metrics, stats and spans of the engine (coordinator/telemetry); the status page reads it. */
  observability: EngineObservability;
  close(): Promise<void>;
}

export async function loadServing(flags: ServingFlags, log: (line: string) => void): Promise<Serving> {
  // Tracing from OTEL_* (off when unset), unless the caller already set it up.
  if (!currentTelemetry()) setupTelemetry({ serviceName: COORDINATOR_SERVICE, log });
  const engine = await loadEngine({ ...engineOptionsFrom(flags), log });
  try {
    const tokenizer = TextTokenizer.fromModel(engine.folder);
    const chatTemplate = ChatTemplate.fromModel(engine.folder.dir, engine.folder.tokenizerConfig);
    // Metrics, stats and spans through the engine's hooks and an ObservedExperts around its experts.
    const observability = observeEngine(engine, { modelName: flags.servedModelName ?? path.basename(engine.folder.dir), metricsDetail: flags.metricsDetail });
    const scheduler = new Scheduler(engine, tokenizer, {
      kvBudgetBytes: flags.kvBudgetMb * 2 ** 20,
      kvGrowTokens: flags.kvGrowTokens,
      prefixCache: flags.prefixCache,
      maxQueue: flags.maxQueue,
      maxRunning: flags.maxRunning,
      prefillBudget: flags.prefillChunk,
      metrics,
      onSubmit: submitTracing(observability),
    });
    log(`chat template: ${chatTemplate.origin}`);
    return {
      engine,
      tokenizer,
      chatTemplate,
      scheduler,
      modelName: flags.servedModelName ?? path.basename(engine.folder.dir),
      ready: () => expertsReady(engine.experts),
      observability,
      async close() {
        await scheduler.close();
        await tokenizer.close();
        await engine.close();
        // Signal handlers exit with process.exit, which skips beforeExit: flush spans here.
        await shutdownTelemetry();
      },
    };
  } catch (e) {
    await engine.close();
    throw e;
  }
}

/**
 * Whether every expert is reachable: a backend's own `ready()` when it has one,
 * else (remote experts) every node healthy; local experts are always there.
 */
export function expertsReady(experts: ExpertBackend): boolean {
  if (experts.ready) return experts.ready();
  if (experts.stats) return experts.stats().every((n) => n.healthy);
  return true;
}

/** Runs `stop` once on SIGINT/SIGTERM; a second signal exits at once. */
export function onShutdownSignal(stop: (signal: NodeJS.Signals) => Promise<void>): void {
  let stopping = false;
  const handler = (signal: NodeJS.Signals) => {
    if (stopping) process.exit(130);
    stopping = true;
    stop(signal).then(
      () => process.exit(0),
      (e) => {
        process.stderr.write(`shutdown failed: ${e instanceof Error ? e.message : String(e)}\n`);
        process.exit(1);
      },
    );
  };
  process.on('SIGINT', handler);
  process.on('SIGTERM', handler);
}
