// End-to-end decode speed, single process: sparse expert FFN vs dense-with-mask on
// the same loaded model (Mixtral width by default: hidden 4096, intermediate 14336,
// 8 experts, top-2, 2 layers of random bf16 weights made by this script).
//   node dist/bench/decode.js [--layers 2] [--tokens 16] [--json] [--model DIR]
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { makeDemoModel } from '../core/demo-model';
import { loadEngine } from '../coordinator/load-engine';
import type { Engine } from '../coordinator/engine';
import { GREEDY } from '../coordinator/sampler';

function arg(name: string, def: string): string {
  const i = process.argv.indexOf(`--${name}`);
  return i >= 0 ? process.argv[i + 1] : def;
}

async function decodeTokensPerSecond(engine: Engine, prompt: number[], tokens: number): Promise<{ tps: number; active: number }> {
  const seq = engine.newSequence(prompt, { sampling: GREEDY, maxTokens: tokens, stopIds: [] });
  let active = 0;
  let slots = 0;
  await engine.step([seq]); // prefill, not timed
  const t0 = performance.now();
  let n = 0;
  while (!seq.finished) {
    const r = await engine.step([seq]);
    active += r.activeNeurons;
    slots += r.expertSlots;
    n++;
  }
  const s = (performance.now() - t0) / 1000;
  engine.release(seq);
  return { tps: n / s, active: active / (slots * engine.config.intermediateSize) };
}

async function main(): Promise<void> {
  const layers = Number(arg('layers', '2'));
  const tokens = Number(arg('tokens', '16'));
  const json = process.argv.includes('--json');
  let dir = arg('model', '');
  if (!dir) {
    dir = path.join(os.tmpdir(), `turbosparse-bench-mixtral-${layers}l`);
    if (!fs.existsSync(path.join(dir, 'config.json'))) {
      process.stderr.write(`writing a Mixtral-width ${layers}-layer random bf16 model to ${dir} (once)\n`);
      await makeDemoModel(dir, {
        layers, hidden: 4096, intermediate: 14336, heads: 32, kvHeads: 8, experts: 8, topK: 2, vocab: 2048,
        predictorRank: 1024, shards: 2, dtype: 'bf16', seed: 1, activeFraction: 0.1,
      });
    }
  }
  const engine = await loadEngine({ modelDir: dir, device: 'cpu', log: (l) => process.stderr.write(l + '\n') });
  try {
    const experts = engine.experts;
    if (!experts.setMode) throw new Error(`bench/decode needs experts that switch sparse/dense; ${experts.name} cannot`);
    const prompt = [1, 100, 200, 300, 400, 500, 600, 700];
    experts.setMode('sparse');
    await decodeTokensPerSecond(engine, prompt, 2); // warm up
    const sparse = await decodeTokensPerSecond(engine, prompt, tokens);
    experts.setMode('dense');
    const dense = await decodeTokensPerSecond(engine, prompt, tokens);
    const speedup = sparse.tps / dense.tps;
    const rows = [
      { ffn: 'sparse', tokens_per_s: sparse.tps, active_fraction: sparse.active },
      { ffn: 'dense_with_mask', tokens_per_s: dense.tps, active_fraction: dense.active },
    ];
    if (!json) {
      console.log(`decode, ${layers} layers at hidden ${engine.config.hiddenSize} x intermediate ${engine.config.intermediateSize}, ${engine.backend.description}`);
      console.log('ffn              tokens/s  active');
      for (const r of rows) console.log(`${r.ffn.padEnd(16)} ${r.tokens_per_s.toFixed(2).padStart(8)}  ${(100 * r.active_fraction).toFixed(1)}%`);
      console.log(`sparse / dense: ${speedup.toFixed(2)}x`);
    }
    console.log(JSON.stringify({ bench: 'decode', layers, hidden: engine.config.hiddenSize, intermediate: engine.config.intermediateSize,
      sparse_tokens_per_s: sparse.tps, dense_tokens_per_s: dense.tps, speedup, active_fraction: sparse.active }));
  } finally {
    await engine.close();
  }
}

main().catch((e) => {
  process.stderr.write(`${e instanceof Error ? e.stack : e}\n`);
  process.exit(1);
});
