import fs from 'node:fs';
import path from 'node:path';
import { makeDemoModel, Rng, DEMO_DEFAULTS } from '../../core/demo-model';
import { ModelFolder, names } from '../../core/model-folder';
import { TextTokenizer } from '../../core/tokenizer';
import { toF32 } from '../../core/dtype';
import { UserError } from '../../core/errors';
import { SMALL, tempDir } from './fixtures';

const tmp = tempDir('ts-demo-');
afterAll(() => tmp.cleanup());

describe('makeDemoModel', () => {
  test('the default model: real layout, loads, tokenizer round-trips English', async () => {
    const dir = path.join(tmp.dir, 'default');
    const t0 = Date.now();
    await makeDemoModel(dir);
    const ms = Date.now() - t0;
    expect(ms).toBeLessThan(30000); // ~1 s on a laptop, 10 s on a 2-core box at load 8: catches a hang, not noise
    expect(fs.readdirSync(dir).sort()).toEqual([
      'config.json',
      'model-00001-of-00002.safetensors',
      'model-00002-of-00002.safetensors',
      'model.safetensors.index.json',
      'tokenizer.json',
      'tokenizer_config.json',
    ]);
    const config = JSON.parse(fs.readFileSync(path.join(dir, 'config.json'), 'utf8'));
    expect(config).toMatchObject({ architectures: ['TurboSparseMixtralForCausalLM'], model_type: 'turbosparsemixtral', torch_dtype: 'bfloat16', hidden_act: 'relu' });
    const index = JSON.parse(fs.readFileSync(path.join(dir, 'model.safetensors.index.json'), 'utf8'));

    const f = await ModelFolder.open(dir);
    try {
      const c = f.config;
      expect(c).toMatchObject({ numLayers: 4, hiddenSize: 256, intermediateSize: 1024, numHeads: 8, numKvHeads: 4, headDim: 32, numExperts: 8, topK: 2, vocabSize: 1024 });
      expect(c.eosTokenIds).toEqual([2, 1023]);
      expect(f.predictorRanks).toEqual([128, 128, 128, 128]);
      expect(f.dtypes()).toEqual(['BF16']);
      expect(index.metadata.total_size).toBe(f.totalBytes());
      expect(Object.keys(index.weight_map).sort()).toEqual(f.tensorNames());

      const tok = TextTokenizer.fromModel(f);
      expect(tok.eosIds).toEqual([2, 1023]);
      const text = 'In the morning the baker opened the shop, and people wanted coffee.';
      const ids = tok.encode(text);
      expect(ids[0]).toBe(1);
      expect(ids.length).toBeLessThan(25);
      expect(tok.decode(ids)).toBe(text);
      expect((f.tokenizerConfig as { chat_template: string }).chat_template).toContain('<|im_start|>');
    } finally {
      await f.close();
    }
  });

  test('deterministic from the seed; f32 and f16 variants hold the same values', async () => {
    const a = path.join(tmp.dir, 'a');
    const b = path.join(tmp.dir, 'b');
    const c = path.join(tmp.dir, 'c');
    const d32 = path.join(tmp.dir, 'd32');
    await makeDemoModel(a, { ...SMALL, seed: 1 });
    await makeDemoModel(b, { ...SMALL, seed: 1 });
    await makeDemoModel(c, { ...SMALL, seed: 2 });
    await makeDemoModel(d32, { ...SMALL, seed: 1, dtype: 'f32', shards: 1 });
    for (const file of ['model-00001-of-00002.safetensors', 'model-00002-of-00002.safetensors', 'tokenizer.json', 'config.json']) {
      expect(fs.readFileSync(path.join(a, file)).equals(fs.readFileSync(path.join(b, file)))).toBe(true);
    }
    expect(fs.readFileSync(path.join(a, 'model-00001-of-00002.safetensors')).equals(fs.readFileSync(path.join(c, 'model-00001-of-00002.safetensors')))).toBe(false);

    const fa = await ModelFolder.open(a);
    const fd = await ModelFolder.open(d32).catch(async (e: unknown) => {
      await fa.close();
      throw e;
    });
    try {
      const x = await fa.readTensor(names.w1(1, 2));
      const y = await fd.readTensor(names.w1(1, 2));
      expect(y.dtype).toBe('F32');
      const xa = toF32(x.dtype, x.data);
      const ya = toF32(y.dtype, y.data);
      for (let i = 0; i < xa.length; i++) expect(Math.abs(xa[i] - ya[i])).toBeLessThanOrEqual(Math.abs(ya[i]) / 128);
    } finally {
      await fa.close();
      await fd.close();
    }

    const f16 = path.join(tmp.dir, 'f16');
    await makeDemoModel(f16, { ...SMALL, dtype: 'f16', shards: 4 });
    const ff = await ModelFolder.open(f16);
    try {
      expect(ff.dtypes()).toEqual(['F16']);
      expect(ff.weightFiles).toHaveLength(4);
    } finally {
      await ff.close();
    }
  });

  test('weights have std ~ 1/sqrt(fan_in) and predictors mark ~activeFraction of neurons', async () => {
    const dir = path.join(tmp.dir, 'stats');
    const opts = { ...SMALL, hidden: 128, intermediate: 256, predictorRank: 64, shards: 1, activeFraction: 0.2 };
    await makeDemoModel(dir, opts);
    const f = await ModelFolder.open(dir);
    try {
      const read = async (n: string) => {
        const t = await f.readTensor(n);
        return toF32(t.dtype, t.data);
      };
      const std = (v: Float32Array) => Math.sqrt(v.reduce((s, x) => s + x * x, 0) / v.length);
      expect(std(await read(names.w1(0, 0)))).toBeCloseTo(1 / Math.sqrt(128), 2);
      expect(std(await read(names.w2(0, 0)))).toBeCloseTo(1 / Math.sqrt(256), 2);

      // Predicted-active fraction on random unit-RMS inputs, as the engine computes it.
      const H = 128, I = 256, r = 64;
      const rng = new Rng(99, 'inputs');
      let active = 0, total = 0;
      for (let e = 0; e < SMALL.experts; e++) {
        const fc1 = await read(names.fc1(1, e));
        const fc2 = await read(names.fc2(1, e));
        for (let s = 0; s < 20; s++) {
          const x = rng.fillNormal(new Float32Array(H), 0, 1);
          const h = new Float32Array(r);
          for (let i = 0; i < r; i++) {
            let acc = 0;
            for (let j = 0; j < H; j++) acc += fc1[i * H + j] * x[j];
            h[i] = Math.max(0, acc);
          }
          for (let i = 0; i < I; i++) {
            let acc = 0;
            for (let j = 0; j < r; j++) acc += fc2[i * r + j] * h[j];
            if (acc > 0) active++;
            total++;
          }
        }
      }
      const frac = active / total;
      expect(frac).toBeGreaterThan(0.12);
      expect(frac).toBeLessThan(0.3);
    } finally {
      await f.close();
    }
  });

  test('rewriting a folder with another shard count removes the stale weights', async () => {
    const dir = path.join(tmp.dir, 'restale');
    await makeDemoModel(dir, { ...SMALL, shards: 3 });
    await makeDemoModel(dir, { ...SMALL, shards: 1 });
    expect(fs.readdirSync(dir).filter((n) => n.includes('safetensors'))).toEqual(['model.safetensors']);
    const f = await ModelFolder.open(dir);
    try {
      expect(f.weightFiles).toHaveLength(1);
    } finally {
      await f.close();
    }
  });

  test('bad options are user errors', async () => {
    const dir = path.join(tmp.dir, 'bad');
    await expect(makeDemoModel(dir, { heads: 6 })).rejects.toThrow(new UserError('demo model: hidden (256) must be a multiple of heads (6)'));
    await expect(makeDemoModel(dir, { kvHeads: 3 })).rejects.toThrow('demo model: heads (8) must be a multiple of kvHeads (3)');
    await expect(makeDemoModel(dir, { topK: 9 })).rejects.toThrow('demo model: topK (9) must be at most experts (8)');
    await expect(makeDemoModel(dir, { layers: 0 })).rejects.toThrow('demo model: layers must be a positive integer, got 0');
    await expect(makeDemoModel(dir, { predictorRank: [8, 8] })).rejects.toThrow('demo model: predictorRank lists 2 values for 4 layers');
    await expect(makeDemoModel(dir, { activeFraction: 1.5 })).rejects.toThrow(/activeFraction must be between 0 and 1/);
    await expect(makeDemoModel(dir, { ...SMALL, vocab: 100 })).rejects.toThrow("demo model: vocab must be at least 262 (3 special tokens, 256 byte tokens, '▁', 2 chat markers), got 100");
    expect(DEMO_DEFAULTS.dtype).toBe('bf16');
  });
});
