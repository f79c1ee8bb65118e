// The random-weight models the cluster benches run (bench/cluster.ts, bench/speculative.ts), written
// once per shape and layer count under the temp dir so every bench and run shares them.
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { type DemoModelOptions, makeDemoModel } from '../core/demo-model';
import { UserError } from '../core/errors';
import type { HostMatrix } from '../core/native';
import { f32ToBf16 } from '../core/wire/rows';

export const BENCH_SHAPES: Record<string, { opts: Partial<DemoModelOptions>; dir: string }> = {
  // Mixtral width: hidden 4096, intermediate 14336, 8 experts top-2, predictor rank 1024.
  mixtral: {
    dir: 'turbosparse-bench-mixtral',
    opts: { hidden: 4096, intermediate: 14336, heads: 32, kvHeads: 8, experts: 8, topK: 2, vocab: 2048, predictorRank: 1024, shards: 2, dtype: 'bf16', seed: 1, activeFraction: 0.1 },
  },
  // The issue targets' "16-layer demo model": hidden 1024, intermediate 3584, 8 experts top-2, predictor rank 256.
  demo: {
    dir: 'turbosparse-bench-demo-h1024',
    opts: { hidden: 1024, intermediate: 3584, heads: 8, kvHeads: 4, experts: 8, topK: 2, vocab: 2048, predictorRank: 256, shards: 2, dtype: 'bf16', seed: 1, activeFraction: 0.15 },
  },
};

/** Options of a bench model beyond its shape and layer count. */
export interface BenchModelOptions {
  /** Router skew (DemoModelOptions.routerSkew): a few hot experts per layer; 0 (the default) is the plain model. */
  routerSkew?: number;
}

/** The folder of a `shape` model with `layers` layers (and its router skew), written (atomically) the first time. */
export async function benchModelDir(shape: string, layers: number, log: (line: string) => void, opts: BenchModelOptions = {}): Promise<string> {
  const s = BENCH_SHAPES[shape];
  if (!s) throw new UserError(`--shape "${shape}": expected ${Object.keys(BENCH_SHAPES).join(' or ')}`);
  const skew = opts.routerSkew ?? 0;
  // Skew 0 writes the same bytes as no skew, so it shares the plain model's folder.
  const dir = path.join(os.tmpdir(), skew > 0 ? `${s.dir}-skew${skew}-${layers}l` : `${s.dir}-${layers}l`);
  if (!fs.existsSync(path.join(dir, 'config.json'))) {
    log(`writing a ${shape}-shaped ${layers}-layer random bf16 model${skew > 0 ? ` with router skew ${skew}` : ''} to ${dir} (once)`);
    const partial = `${dir}.partial-${process.pid}`;
    await makeDemoModel(partial, { ...s.opts, layers, ...(skew > 0 ? { routerSkew: skew } : {}) });
    fs.renameSync(partial, dir);
  }
  return dir;
}

/** Seeded bf16 weights, small values (the benches that time kernels on made-up weights). */
export function randomBf16(rows: number, cols: number, seed: number): HostMatrix {
  const d = new Uint16Array(rows * cols);
  let s = seed >>> 0;
  for (let i = 0; i < d.length; i++) {
    s = (Math.imul(s, 1103515245) + 12345) >>> 0;
    d[i] = f32ToBf16(((s >>> 8) / 2 ** 24 - 0.5) * 0.05);
  }
  return { dtype: 'bf16', rows, cols, data: new Uint8Array(d.buffer) };
}
