// Serving throughput: total generated tokens/s with 1, 4 and 16 concurrent
// requests through the continuous-batching scheduler (each step one forward pass
// over every live sequence), on the demo model and on a Mixtral-width layer.
//   node dist/bench/serving.js [--models demo,mixtral|DIR] [--concurrency 1,4,16] [--tokens 32]
//                              [--device cpu|cuda|auto] [--threads 0] [--json]
// Goal: 16 concurrent >= 8x the tokens/s of 1.
import { Registry } from '../core/metrics';
import type { TextTokenizer } from '../core/tokenizer';
import type { Engine } from '../coordinator/engine';
import { GREEDY } from '../coordinator/sampler';
import { Scheduler } from '../coordinator/scheduler';
import { arg, forEachModel } from './models';

interface Run {
  concurrency: number;
  tokens: number;
  seconds: number;
  tokensPerS: number;
  steps: number;
  meanStepMs: number;
  meanRows: number;
}

/** c requests of `tokens` tokens each, distinct prompts, submitted at once; timed until the last finishes. */
async function measure(engine: Engine, tok: TextTokenizer, c: number, tokens: number): Promise<Run> {
  const scheduler = new Scheduler(engine, tok, { metrics: new Registry(), kvBudgetBytes: 2 ** 40, maxRunning: 1024 });
  const prompt = (i: number) => [1, 10 + (i % 200), 20 + ((i * 7) % 200), 30, 40, 50, 60, 70];
  const req = (i: number, n: number) => ({ promptIds: prompt(i), sampling: GREEDY, maxTokens: n, stopIds: [] });
  await Promise.all(scheduler.submitAll(Array.from({ length: c }, (_, i) => req(i, 2))).map((h) => h.result)); // warm-up
  let steps = 0;
  let stepMs = 0;
  let rows = 0;
  scheduler.onStep = (s) => {
    steps++;
    stepMs += s.ms;
    rows += s.rows;
  };
  const t0 = performance.now();
  const results = await Promise.all(scheduler.submitAll(Array.from({ length: c }, (_, i) => req(i + 1000, tokens))).map((h) => h.result));
  const seconds = (performance.now() - t0) / 1000;
  await scheduler.close();
  const total = results.reduce((s, r) => s + r.tokenIds.length, 0);
  return { concurrency: c, tokens: total, seconds, tokensPerS: total / seconds, steps, meanStepMs: stepMs / steps, meanRows: rows / steps };
}

async function main(): Promise<void> {
  const levels = arg('concurrency', '1,4,16').split(',').map(Number);
  const tokens = Number(arg('tokens', '32'));
  const json = process.argv.includes('--json');
  const out: object[] = [];
  await forEachModel(async (engine, tok, name, what) => {
    const runs: Run[] = [];
    for (const c of levels) runs.push(await measure(engine, tok, c, tokens));
    const base = runs[0].tokensPerS;
    if (!json) {
      console.log(`\n${what}; ${engine.backend.description}; ${tokens} tokens per request`);
      console.log('| concurrent | tokens/s | vs 1 | steps | mean step (ms) | mean rows/step |');
      console.log('| ---: | ---: | ---: | ---: | ---: | ---: |');
      for (const r of runs) {
        console.log(`| ${r.concurrency} | ${r.tokensPerS.toFixed(1)} | ${(r.tokensPerS / base).toFixed(2)}x | ${r.steps} | ${r.meanStepMs.toFixed(1)} | ${r.meanRows.toFixed(1)} |`);
      }
    }
    out.push({ bench: 'serving', model: name, device: engine.backend.description, runs });
  });
  if (json) console.log(JSON.stringify(out));
}

main().catch((e) => {
  process.stderr.write(`${e instanceof Error ? e.stack : e}\n`);
  process.exit(1);
});
