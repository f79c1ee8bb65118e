// `turbosparse generate`: one prompt through the engine, text streamed to stdout.
import type { Command } from 'commander';
import { UserError } from '../core/errors';
import { readModelConfig } from '../core/model-folder';
import { writeSafetensors } from '../core/safetensors';
import { TextTokenizer } from '../core/tokenizer';
import { generate, type GenerateResult } from '../coordinator/generate';
import { loadEngine } from '../coordinator/load-engine';
import type { Engine } from '../coordinator/engine';
import { floatOption, idsOption, intOption } from './options';
import { checkOutputFile } from './output-file';
import { engineOptionsFrom, addEngineOptions, type EngineFlags } from './engine-flags';
import { COORDINATOR_SERVICE, currentTelemetry, setupTelemetry } from '../core/telemetry';
import { buildStatus, engineObservability, formatLatencyTable, observeEngine } from '../coordinator/telemetry';

export interface GenerateFlags extends EngineFlags {
  prompt?: string;
  ids?: number[];
  maxTokens: number;
  temperature: number;
  topK: number;
  topP: number;
  /** Drop tokens less likely than minP x the best one; absent or 0: off. */
  minP?: number;
  seed?: number;
  json?: boolean;
  dumpLogits?: string;
}

export function registerGenerate(program: Command): void {
  const cmd = program
    .command('generate')
    .description('generate text from a prompt (streams to stdout)')
    .requiredOption('--model <dir>', 'Hugging Face model folder (config.json, safetensors, tokenizer.json)')
    .option('--prompt <text>', 'prompt text (BOS added as the tokenizer says)')
    .option('--ids <ids>', 'prompt as comma-separated token ids, used as is', idsOption)
    .option('--max-tokens <n>', 'tokens to generate at most', intOption('--max-tokens'), 64)
    .option('--temperature <t>', 'sampling temperature; 0 = greedy', floatOption('--temperature', 0, 100), 0.8)
    .option('--top-k <k>', 'keep the k most likely tokens; 0 = off', intOption('--top-k'), 40)
    .option('--top-p <p>', 'nucleus sampling mass; 1 = off', floatOption('--top-p', 0, 1), 0.95)
    .option('--min-p <p>', 'drop tokens less likely than p times the most likely one; 0 = off', floatOption('--min-p', 0, 1), 0)
    .option('--seed <s>', 'random seed (same seed, same tokens)', intOption('--seed'))
    .option('--json', 'print one JSON object {tokens, text, stats} instead of streaming text')
    .option('--dump-logits <file>', 'write the logits at every prompt position to a safetensors file (tensor "logits")');
  addEngineOptions(cmd);
  cmd.action(async (flags: GenerateFlags) => {
    await runGenerate(flags);
  });
}

export async function runGenerate(flags: GenerateFlags): Promise<GenerateResult> {
  if ((flags.prompt === undefined) === (flags.ids === undefined)) {
    throw new UserError('give exactly one of --prompt TEXT or --ids 1,5,9');
  }
  // From config.json alone: a wrong id is one line before weights load or expert nodes start.
  if (flags.ids) checkIds(flags.ids, (await readModelConfig(flags.model)).vocabSize);
  // A bad --dump-logits path is found now, not after a 100 GB load and the whole generation.
  if (flags.dumpLogits !== undefined) checkOutputFile('--dump-logits', flags.dumpLogits, 'logits.safetensors');
  // Tracing from OTEL_* (off when unset), unless the caller already set it up.
  if (!currentTelemetry()) setupTelemetry({ serviceName: COORDINATOR_SERVICE });
  const engine = await loadEngine(engineOptionsFrom(flags));
  try {
    observeEngine(engine);
    return await generateWith(engine, flags);
  } finally {
    await engine.close();
  }
}

/** `--ids` must be token ids of the model's vocabulary, 0..vocab_size-1. */
export function checkIds(ids: readonly number[], vocabSize: number): void {
  const bad = ids.find((id) => id >= vocabSize);
  if (bad !== undefined) {
    throw new UserError(`--ids: token id ${bad} is outside the model's vocabulary; valid ids are 0..${vocabSize - 1} (config.json vocab_size ${vocabSize})`);
  }
}

export async function generateWith(engine: Engine, flags: GenerateFlags): Promise<GenerateResult> {
  const tok = TextTokenizer.fromModel(engine.folder);
  const promptIds = flags.ids ?? tok.encode(flags.prompt!);
  const stream = !flags.json;
  const obs = engineObservability(engine);
  const request = obs?.startRequest({
    operation: 'text_completion',
    inputTokens: promptIds.length,
    maxTokens: flags.maxTokens,
    temperature: flags.temperature,
    topP: flags.topP,
    topK: flags.topK,
    seed: flags.seed,
  });
  let result: GenerateResult;
  try {
    const run = () =>
      generate(engine, tok, {
        promptIds,
        sampling: { temperature: flags.temperature, topK: flags.topK, topP: flags.topP, minP: flags.minP, seed: flags.seed },
        maxTokens: flags.maxTokens,
        keepPromptLogits: flags.dumpLogits !== undefined,
        onText: stream ? (t) => process.stdout.write(t) : undefined,
      });
    result = request ? await request.run(run) : await run();
    request?.end({ outputTokens: result.stats.generated_tokens, finishReason: result.finishReason });
  } catch (e) {
    request?.fail(e);
    throw e;
  }
  if (stream) process.stdout.write('\n');
  if (flags.dumpLogits) {
    const V = engine.config.vocabSize;
    const all = new Float32Array(promptIds.length * V);
    result.promptLogits!.forEach((row, i) => all.set(row, i * V));
    try {
      await writeSafetensors(flags.dumpLogits, [
        { name: 'logits', dtype: 'F32', shape: [promptIds.length, V], data: new Uint8Array(all.buffer) },
      ]);
    } catch (e) {
      const code = (e as NodeJS.ErrnoException).code;
      if (!code) throw e;
      throw new UserError(`--dump-logits ${flags.dumpLogits}: cannot write the logits (${code}); give another path`);
    }
  }
  if (flags.json) {
    process.stdout.write(
      JSON.stringify({ tokens: result.tokens, text: result.text, finish_reason: result.finishReason, stats: result.stats }) + '\n',
    );
  } else {
    const s = result.stats;
    process.stderr.write(
      `${s.prompt_tokens} prompt tokens in ${s.prefill_ms.toFixed(0)} ms, ${s.generated_tokens} generated at ` +
        `${s.decode_tokens_per_s.toFixed(1)} tokens/s, ${(100 * s.active_fraction).toFixed(1)}% of expert neurons computed\n`,
    );
    // Per node (experts held, calls, p50/p99 latency, active fraction, bytes per token on the wire),
    // per expert p50/p99, the hottest experts.
    if (obs) process.stderr.write(`\n${formatLatencyTable(buildStatus(obs))}\n`);
  }
  return result;
}
