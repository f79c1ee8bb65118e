// Multi-turn chat with and without the prefix cache: every turn sends the whole
// conversation again (previous prompt + reply + a new user message), as chat clients
// do. Measures each turn's time to first token and the prompt tokens computed.
//   node dist/bench/prefix-cache.js [--models demo,mixtral|DIR] [--turns 6] [--message 64] [--reply 16]
//                                   [--device cpu|cuda|auto] [--threads 0] [--json]
import { Registry } from '../core/metrics';
import type { TextTokenizer } from '../core/tokenizer';
import type { Engine } from '../coordinator/engine';
import { GREEDY } from '../coordinator/sampler';
import { Scheduler } from '../coordinator/scheduler';
import { arg, forEachModel } from './models';

interface Turn {
  turn: number;
  promptTokens: number;
  computedTokens: number;
  ttftMs: number;
}

/** One conversation of `turns` turns; user messages are fixed pseudo-random ids so both runs see the same text. */
async function conversation(engine: Engine, tok: TextTokenizer, prefixCache: boolean, turns: number, message: number, reply: number): Promise<Turn[]> {
  const scheduler = new Scheduler(engine, tok, { metrics: new Registry(), kvBudgetBytes: 2 ** 40, prefixCache, prefillBudget: 512 });
  const vocab = engine.config.vocabSize;
  let prompt = [1];
  const out: Turn[] = [];
  try {
    for (let t = 0; t < turns; t++) {
      for (let i = 0; i < message; i++) prompt.push(3 + ((t * 7919 + i * 104729) % (vocab - 3)));
      let computed = 0;
      scheduler.onStep = (s) => (computed += s.prefillRows);
      const t0 = performance.now();
      let first = 0;
      const h = scheduler.submit({ promptIds: prompt, sampling: GREEDY, maxTokens: reply, stopIds: [], onDelta: () => (first ||= performance.now()) });
      const r = await h.result;
      // A sequence whose prompt was all cached still computes its last prompt token in the first step.
      out.push({ turn: t + 1, promptTokens: prompt.length, computedTokens: computed || 1, ttftMs: first - t0 });
      prompt = [...prompt, ...r.tokenIds];
    }
  } finally {
    await scheduler.close();
  }
  return out;
}

async function main(): Promise<void> {
  const turns = Number(arg('turns', '6'));
  const message = Number(arg('message', '64'));
  const reply = Number(arg('reply', '16'));
  const json = process.argv.includes('--json');
  const out: object[] = [];
  await forEachModel(async (engine, tok, name, what) => {
    await conversation(engine, tok, false, 1, 8, 2); // warm-up
    const without = await conversation(engine, tok, false, turns, message, reply);
    const withCache = await conversation(engine, tok, true, turns, message, reply);
    if (!json) {
      console.log(`\n${what}; ${engine.backend.description}; ${message}-token messages, ${reply}-token replies`);
      console.log('| turn | prompt tokens | computed, no cache | computed, prefix cache | TTFT no cache (ms) | TTFT prefix cache (ms) | speed-up |');
      console.log('| ---: | ---: | ---: | ---: | ---: | ---: | ---: |');
      without.forEach((a, i) => {
        const b = withCache[i];
        console.log(`| ${a.turn} | ${a.promptTokens} | ${a.computedTokens} | ${b.computedTokens} | ${a.ttftMs.toFixed(1)} | ${b.ttftMs.toFixed(1)} | ${(a.ttftMs / b.ttftMs).toFixed(2)}x |`);
      });
    }
    out.push({ bench: 'prefix-cache', model: name, device: engine.backend.description, without, withCache });
  });
  console.log(JSON.stringify(out));
}

main().catch((e) => {
  process.stderr.write(`${e instanceof Error ? e.stack : e}\n`);
  process.exit(1);
});
