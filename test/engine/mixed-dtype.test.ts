// A checkpoint whose tensors come in different dtypes (some kept in F32, some F16, some
// BF16) loads with 'auto' storage without rounding any of them into another 16-bit type:
// its logits equal those of the same values stored all in F32.
import path from 'node:path';
import { makeDemoModel } from '../../core/demo-model';
import { fromF32, toF32 } from '../../core/dtype';
import { loadEngine } from '../../coordinator/load-engine';
import { parseExpertSpec } from '../../core/expert-spec';
import { ModelFolder } from '../../core/model-folder';
import { native } from '../../core/native';
import { ExpertStore } from '../../expert-node/expert-store';
import { GREEDY } from '../../coordinator/sampler';
import type { TensorDType } from '../../core/safetensors';
import { copyFolder, rewrite, SMALL, tempDir, type RawTensor } from '../core/fixtures';

const tmp = tempDir('ts-mixed-');
afterAll(() => tmp.cleanup());
const mixed = path.join(tmp.dir, 'mixed');
const wide = path.join(tmp.dir, 'wide');

/** The dtype each tensor gets in the mixed checkpoint. */
function mixedDtype(name: string): TensorDType {
  if (/\.(k_proj|v_proj|w1|w3|fc1)\.weight$/.test(name)) return 'BF16';
  if (/\.(w2|fc2|gate)\.weight$/.test(name)) return 'F16';
  return 'F32'; // q_proj, o_proj, norms, embeddings, lm_head
}

beforeAll(async () => {
  await makeDemoModel(mixed, { ...SMALL, shards: 1, dtype: 'f32' });
  const file = path.join(mixed, 'model.safetensors');
  // Round each tensor to its mixed dtype...
  await rewrite(file, (ts) =>
    ts.map((t): RawTensor => {
      const dtype = mixedDtype(t.name);
      return { ...t, dtype, data: fromF32(dtype, toF32('F32', t.data)) };
    }),
  );
  // ...and the same (rounded) values all widened back to F32.
  copyFolder(mixed, wide);
  await rewrite(path.join(wide, 'model.safetensors'), (ts) =>
    ts.map((t): RawTensor => {
      const f = toF32(t.dtype, t.data);
      return { ...t, dtype: 'F32', data: new Uint8Array(f.buffer, f.byteOffset, f.byteLength) };
    }),
  );
}, 60000);

async function promptLogits(dir: string, ids: number[]): Promise<Float32Array[]> {
  const engine = await loadEngine({ modelDir: dir, device: 'cpu', threads: 1, log: () => undefined });
  try {
    const seq = engine.newSequence(ids, { sampling: GREEDY, maxTokens: 0, stopIds: [], keepPromptLogits: true });
    while (!seq.finished) await engine.step([seq]);
    engine.release(seq);
    return seq.promptLogits;
  } finally {
    await engine.close();
  }
}

test('mixed F32/F16/BF16 tensors give the logits of the same values in F32', async () => {
  const ids = [1, 40, 41, 42, 43, 44, 45, 46];
  const a = await promptLogits(mixed, ids);
  const b = await promptLogits(wide, ids);
  expect(a).toHaveLength(ids.length);
  let worst = 0;
  a.forEach((row, t) => row.forEach((x, i) => (worst = Math.max(worst, Math.abs(x - b[t][i])))));
  expect(worst).toBeLessThan(1e-5);
}, 60000);

test('an expert node stores a pair whose w1/w3 (BF16) and w2 (F16) differ as f32 under auto, not rounded to bf16', async () => {
  const folder = await ModelFolder.open(mixed);
  const backend = native().createBackend('cpu', 1);
  try {
    const store = await ExpertStore.load({
      source: folder, dims: folder.config, pairs: parseExpertSpec('0:*', folder.config), backend, weights: 'auto',
    });
    expect(store.dtype).toBe('f32');
    store.close();
    const asked = await ExpertStore.load({
      source: folder, dims: folder.config, pairs: parseExpertSpec('0:0', folder.config), backend, weights: 'bf16',
    });
    expect(asked.dtype).toBe('bf16'); // an explicit --weights still wins
    asked.close();
  } finally {
    backend.close();
    await folder.close();
  }
}, 60000);
