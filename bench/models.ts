// Models the serving benches run on: built-in ones written once under the temp dir,
// or a model folder given by path.
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { makeDemoModel, type DemoModelOptions } from '../core/demo-model';
import type { Device } from '../core/native';
import { TextTokenizer } from '../core/tokenizer';
import type { Engine } from '../coordinator/engine';
import { loadEngine } from '../coordinator/load-engine';

export function arg(name: string, def: string): string {
  const i = process.argv.indexOf(`--${name}`);
  return i >= 0 ? process.argv[i + 1] : def;
}

/** Built-in models, written once under the temp dir. */
const MODELS: Record<string, { dir: string; opts: Partial<DemoModelOptions>; what: string }> = {
  demo: { dir: 'turbosparse-bench-demo', opts: {}, what: 'demo model (4 layers, hidden 256, intermediate 1024, 8 experts)' },
  mixtral: {
    dir: 'turbosparse-bench-mixtral-1l',
    opts: {
      layers: 1, hidden: 4096, intermediate: 14336, heads: 32, kvHeads: 8, experts: 8, topK: 2, vocab: 2048,
      predictorRank: 1024, shards: 2, dtype: 'bf16', seed: 1, activeFraction: 0.1,
    },
    what: 'one Mixtral-width layer (hidden 4096, intermediate 14336, 8 experts, top-2, bf16)',
  },
};

export async function modelDir(name: string): Promise<{ dir: string; what: string }> {
  const m = MODELS[name];
  if (!m) return { dir: name, what: name };
  const dir = path.join(os.tmpdir(), m.dir);
  if (!fs.existsSync(path.join(dir, 'config.json'))) {
    process.stderr.write(`writing the ${name} bench model to ${dir} (once)\n`);
    await makeDemoModel(dir, m.opts);
  }
  return { dir, what: m.what };
}

/**
 * Loads each model of `--models` (default demo,mixtral) on `--device` (default cpu) with
 * `--threads` (0 = all cores) and runs `fn` on it, closing it after.
 */
export async function forEachModel(fn: (engine: Engine, tok: TextTokenizer, name: string, what: string) => Promise<void>): Promise<void> {
  const device = arg('device', 'cpu') as Device | 'auto';
  const threads = Number(arg('threads', '0'));
  for (const name of arg('models', 'demo,mixtral').split(',')) {
    const { dir, what } = await modelDir(name);
    const engine = await loadEngine({ modelDir: dir, device, threads, log: (l) => process.stderr.write(l + '\n') });
    try {
      await fn(engine, TextTokenizer.fromModel(engine.folder), name, what);
    } finally {
      await engine.close();
    }
  }
}
