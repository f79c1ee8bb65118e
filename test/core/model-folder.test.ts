import fs from 'node:fs';
import path from 'node:path';
import { ModelFolder, names } from '../../core/model-folder';
import { makeDemoModel } from '../../core/demo-model';
import { SafetensorsFile } from '../../core/safetensors';
import { UserError } from '../../core/errors';
import { GOLDEN, SMALL, copyFolder, describeGolden, readAll, rewrite, tempDir } from './fixtures';

const tmp = tempDir('ts-folder-');
const single = path.join(tmp.dir, 'single');
const sharded = path.join(tmp.dir, 'sharded');
let caseNo = 0;

beforeAll(async () => {
  await makeDemoModel(single, { ...SMALL, shards: 1 });
  await makeDemoModel(sharded, { ...SMALL, shards: 3 });
});
afterAll(() => tmp.cleanup());

/** A copy of the single-file demo folder to break. */
function scratch(from = single): string {
  const dir = path.join(tmp.dir, `case${caseNo++}`);
  copyFolder(from, dir);
  return dir;
}

async function openError(dir: string): Promise<string> {
  const err = await ModelFolder.open(dir).then(
    async (f) => {
      await f.close();
      return null;
    },
    (e: unknown) => e,
  );
  expect(err).toBeInstanceOf(UserError);
  const msg = (err as Error).message;
  expect(msg).not.toContain('\n');
  return msg;
}

function editJson(file: string, edit: (j: Record<string, unknown>) => void): void {
  const j = JSON.parse(fs.readFileSync(file, 'utf8'));
  edit(j);
  fs.writeFileSync(file, JSON.stringify(j));
}

describeGolden('the golden tiny-a folder', () => {
  test('opens with predictor ranks [896, 896] and reads tensors by offset', async () => {
    const dir = path.join(GOLDEN, 'tiny-a', 'model');
    const f = await ModelFolder.open(dir);
    try {
      expect(f.predictorRanks).toEqual([896, 896]);
      expect(f.config.hiddenSize).toBe(64);
      expect(f.weightFiles).toEqual([path.join(dir, 'model.safetensors')]);
      expect(f.tensorNames()).toHaveLength(3 + 2 * (7 + 4 * 5));
      expect(f.tokenizerConfig).toBeNull();
      expect((f.tokenizerJson as { model: { type: string } }).model.type).toBe('BPE');

      const raw = await SafetensorsFile.open(path.join(dir, 'model.safetensors'));
      const want = await raw.read(names.fc2(1, 3)).finally(() => raw.close());
      const got = await f.readTensor(names.fc2(1, 3), [160, 896]);
      expect(got.dtype).toBe('F32');
      expect(got.shape).toEqual([160, 896]);
      expect(Buffer.from(got.data).equals(Buffer.from(want))).toBe(true);

      const norm = await f.readMatrix(names.finalNorm, 1, 64);
      expect(norm).toMatchObject({ dtype: 'f32', rows: 1, cols: 64 });
      expect(norm.data.byteLength).toBe(256);
      const q = await f.readMatrix(names.q(0), 64, 64);
      expect(new Float32Array(q.data.buffer).length).toBe(64 * 64);
      expect(f.totalBytes()).toBe(fs.statSync(path.join(dir, 'model.safetensors')).size - 8 - 6760);
      expect(f.totalBytes([names.embed, names.lmHead])).toBe(2 * 512 * 64 * 4);
    } finally {
      await f.close();
    }
  });
});

describe('ModelFolder on demo checkpoints', () => {
  test('sharded and single-file folders hold the same tensors', async () => {
    const a = await ModelFolder.open(single);
    const b = await ModelFolder.open(sharded).catch(async (e: unknown) => {
      await a.close();
      throw e;
    });
    try {
      expect(a.weightFiles.map((p) => path.basename(p))).toEqual(['model.safetensors']);
      expect(b.weightFiles.map((p) => path.basename(p))).toEqual([
        'model-00001-of-00003.safetensors',
        'model-00002-of-00003.safetensors',
        'model-00003-of-00003.safetensors',
      ]);
      expect(a.tensorNames()).toEqual(b.tensorNames());
      expect(a.predictorRanks).toEqual([24, 24]);
      expect(b.predictorRanks).toEqual([24, 24]);
      expect(new Set(a.tensorNames().map((n) => path.basename(a.info(n)!.file))).size).toBe(1);
      expect(new Set(b.tensorNames().map((n) => path.basename(b.info(n)!.file))).size).toBe(3);
      for (const n of a.tensorNames()) {
        const x = await a.readTensor(n);
        const y = await b.readTensor(n);
        expect(y.shape).toEqual(x.shape);
        expect(y.dtype).toBe('BF16');
        expect(Buffer.from(y.data).equals(Buffer.from(x.data))).toBe(true);
      }
      expect(b.totalBytes()).toBe(a.totalBytes());
    } finally {
      await a.close();
      await b.close();
    }
  });

  test('shards without an index are found by name; a missing shard is an error', async () => {
    const dir = scratch(sharded);
    fs.rmSync(path.join(dir, 'model.safetensors.index.json'));
    const f = await ModelFolder.open(dir);
    try {
      expect(f.weightFiles).toHaveLength(3);
    } finally {
      await f.close();
    }
    fs.rmSync(path.join(dir, 'model-00002-of-00003.safetensors'));
    expect(await openError(dir)).toMatch(/found 2 of 3 weight shards and no model\.safetensors\.index\.json: a shard is missing/);
  });

  test('the progress listener sees every byte read', async () => {
    let seen = 0;
    const f = await ModelFolder.open(sharded, { onRead: (n) => (seen += n) });
    try {
      const want = [names.embed, names.q(0), names.w2(1, 3)];
      for (const n of want) await f.readTensor(n);
      expect(seen).toBe(f.totalBytes(want));
      let other = 0;
      f.setProgressListener((n) => (other += n));
      await f.readMatrix(names.finalNorm, 1, SMALL.hidden);
      expect(other).toBe(SMALL.hidden * 2);
      expect(seen).toBe(f.totalBytes(want));
    } finally {
      await f.close();
    }
  });

  test('per-layer predictor ranks come from the fc1 shapes', async () => {
    const dir = path.join(tmp.dir, 'ranks');
    await makeDemoModel(dir, { ...SMALL, shards: 1, predictorRank: [16, 40] });
    const f = await ModelFolder.open(dir);
    try {
      expect(f.predictorRanks).toEqual([16, 40]);
      expect(f.info(names.fc2(1, 2))!.shape).toEqual([SMALL.intermediate, 40]);
    } finally {
      await f.close();
    }
  });

  test('a missing tensor names the tensor, folder and files', async () => {
    const dir = scratch();
    await rewrite(path.join(dir, 'model.safetensors'), (ts) => ts.filter((t) => t.name !== names.w2(1, 3)));
    expect(await openError(dir)).toBe(
      `tensor 'model.layers.1.block_sparse_moe.experts.3.w2.weight' is missing from ${dir} (looked in model.safetensors)`,
    );
  });

  test('a wrong shape names the tensor, both shapes and the file', async () => {
    const dir = scratch();
    await rewrite(path.join(dir, 'model.safetensors'), (ts) =>
      ts.map((t) => (t.name === names.k(1) ? { ...t, shape: [16, 64], data: t.data.subarray(0, 16 * 64 * 2) } : t)),
    );
    expect(await openError(dir)).toBe(
      `tensor 'model.layers.1.self_attn.k_proj.weight' in ${path.join(dir, 'model.safetensors')} has shape [16, 64], expected [32, 64] (num_key_value_heads*head_dim x hidden_size): config.json does not match the weights`,
    );
  });

  test('a config that does not match the weights', async () => {
    const dir = scratch();
    editJson(path.join(dir, 'config.json'), (j) => (j.intermediate_size = 128));
    expect(await openError(dir)).toMatch(
      /^tensor 'model\.layers\.0\.block_sparse_moe\.experts\.0\.w1\.weight' in .*model\.safetensors has shape \[96, 64\], expected \[128, 64\] \(intermediate_size x hidden_size\)/,
    );
  });

  test('experts of one layer must agree on the predictor rank', async () => {
    const dir = scratch();
    await rewrite(path.join(dir, 'model.safetensors'), (ts) =>
      ts.map((t) => (t.name === names.fc1(0, 2) ? { ...t, shape: [12, 64], data: t.data.subarray(0, 12 * 64 * 2) } : t)),
    );
    expect(await openError(dir)).toMatch(
      /tensor 'model\.layers\.0\.block_sparse_moe\.experts\.2\.predictor\.fc1\.weight' in .* has shape \[12, 64\], but expert 0 of layer 0 has predictor rank 24: all experts of a layer must have the same predictor rank/,
    );
  });

  test('a checkpoint without predictors says which architecture is needed', async () => {
    const dir = scratch();
    editJson(path.join(dir, 'config.json'), (j) => (j.architectures = ['MixtralForCausalLM']));
    await rewrite(path.join(dir, 'model.safetensors'), (ts) => ts.filter((t) => !t.name.includes('.predictor.')));
    expect(await openError(dir)).toMatch(/predictor\.fc1\.weight' is missing .* \(architecture 'MixtralForCausalLM' has no activation predictors; turbosparse needs a TurboSparseMixtralForCausalLM checkpoint\)$/);
  });

  test('tie_word_embeddings: lm_head falls back to the embedding', async () => {
    const dir = scratch();
    await rewrite(path.join(dir, 'model.safetensors'), (ts) => ts.filter((t) => t.name !== names.lmHead));
    expect(await openError(dir)).toMatch(/^tensor 'lm_head\.weight' is missing from/);
    editJson(path.join(dir, 'config.json'), (j) => (j.tie_word_embeddings = true));
    const f = await ModelFolder.open(dir);
    try {
      expect(f.has(names.lmHead)).toBe(true);
      expect(f.tensorNames()).not.toContain(names.lmHead);
      const lm = await f.readTensor(names.lmHead);
      const emb = await f.readTensor(names.embed);
      expect(Buffer.from(lm.data).equals(Buffer.from(emb.data))).toBe(true);
    } finally {
      await f.close();
    }
  });

  test('missing folder, config.json, tokenizer.json or weights', async () => {
    expect(await openError(path.join(tmp.dir, 'nowhere'))).toBe(`model folder ${path.join(tmp.dir, 'nowhere')} does not exist`);
    const a = scratch();
    fs.rmSync(path.join(a, 'config.json'));
    expect(await openError(a)).toBe(`${path.join(a, 'config.json')} not found: a model folder needs config.json`);
    const b = scratch();
    fs.rmSync(path.join(b, 'tokenizer.json'));
    expect(await openError(b)).toBe(`${path.join(b, 'tokenizer.json')} not found: a model folder needs tokenizer.json (the Hugging Face fast-tokenizer file)`);
    const c = scratch();
    fs.rmSync(path.join(c, 'model.safetensors'));
    expect(await openError(c)).toMatch(/has no weights: expected model\.safetensors, or model-0000N-of-0000M\.safetensors shards with model\.safetensors\.index\.json$/);
  });

  test('a bad config.json is reported with its path', async () => {
    const dir = scratch();
    editJson(path.join(dir, 'config.json'), (j) => delete j.num_local_experts);
    expect(await openError(dir)).toBe(`${path.join(dir, 'config.json')}: field 'num_local_experts' is missing (expected a positive integer)`);
    fs.writeFileSync(path.join(dir, 'config.json'), '{"hidden_size": 64,');
    expect(await openError(dir)).toMatch(/config\.json: not valid JSON/);
  });

  test('an index that points at a missing file or a tensor the file lacks', async () => {
    const a = scratch(sharded);
    fs.rmSync(path.join(a, 'model-00003-of-00003.safetensors'));
    expect(await openError(a)).toMatch(/model-00003-of-00003\.safetensors not found: model\.safetensors\.index\.json maps tensor '.*' to it$/);
    const b = scratch(sharded);
    editJson(path.join(b, 'model.safetensors.index.json'), (j) => {
      (j.weight_map as Record<string, string>)[names.embed] = 'model-00003-of-00003.safetensors';
    });
    expect(await openError(b)).toMatch(/maps tensor 'model\.embed_tokens\.weight' to model-00003-of-00003\.safetensors, but that file does not contain it$/);
  });

  test('a truncated shard names the file', async () => {
    const dir = scratch(sharded);
    const shard = path.join(dir, 'model-00002-of-00003.safetensors');
    fs.truncateSync(shard, fs.statSync(shard).size - 100);
    expect(await openError(dir)).toMatch(/^tensor '.*' in .*model-00002-of-00003\.safetensors: data_offsets \[\d+, \d+\] run past the end of the data section/);
  });

  test('readTensor with an expected shape, and unknown names', async () => {
    const f = await ModelFolder.open(single);
    try {
      await expect(f.readTensor(names.q(0), [64, 32])).rejects.toThrow(/has shape \[64, 64\], expected \[64, 32\]/);
      await expect(f.readTensor('model.nope')).rejects.toThrow(/tensor 'model\.nope' is missing from/);
      await expect(f.readMatrix(names.gate(0), 4, 32)).rejects.toThrow(UserError);
      expect(f.has('model.nope')).toBe(false);
      expect(f.info('model.nope')).toBeUndefined();
    } finally {
      await f.close();
    }
  });

  test('readAll helper sanity: the demo writes bf16 with format metadata', async () => {
    const f = await SafetensorsFile.open(path.join(single, 'model.safetensors'));
    try {
      expect(f.metadata).toEqual({ format: 'pt' });
    } finally {
      await f.close();
    }
    expect((await readAll(path.join(sharded, 'model-00001-of-00003.safetensors'))).every((t) => t.dtype === 'BF16')).toBe(true);
  });
});
