// The engine against the model authors' golden outputs for tiny-a.
import path from 'node:path';
import { SafetensorsFile } from '../../core/safetensors';
import { loadEngine } from '../../coordinator/load-engine';
import type { Engine } from '../../coordinator/engine';
import { GREEDY } from '../../coordinator/sampler';
import { describeGolden, goldenJson, TINY_A, TINY_A_MODEL } from '../helpers/golden';

const quiet = { log: () => undefined };

async function goldenLogits(i: number): Promise<Float32Array> {
  const f = await SafetensorsFile.open(path.join(TINY_A, 'golden.safetensors'));
  try {
    const bytes = await f.read(`logits.${i}`);
    return new Float32Array(bytes.buffer, bytes.byteOffset, bytes.byteLength / 4);
  } finally {
    await f.close();
  }
}

function maxAbsDiff(a: Float32Array, b: Float32Array): number {
  expect(a.length).toBe(b.length);
  let m = 0;
  for (let i = 0; i < a.length; i++) m = Math.max(m, Math.abs(a[i] - b[i]));
  return m;
}

describeGolden('engine on tiny-a (golden)', () => {
  let engine: Engine;
  const golden = goldenJson();
  beforeAll(async () => {
    engine = await loadEngine({ modelDir: TINY_A_MODEL, device: 'cpu', ...quiet });
  });
  afterAll(async () => {
    await engine?.close();
  });

  golden.prompts.forEach((p, i) => {
    test(`prompt ${i}: logits, experts, active neurons and greedy tokens`, async () => {
      const seq = engine.newSequence(p.ids, { sampling: GREEDY, maxTokens: p.greedy.length, stopIds: [], keepPromptLogits: true });
      const first = await engine.step([seq], { record: true });
      // Prompt logits at every position.
      const V = engine.config.vocabSize;
      const ours = new Float32Array(p.ids.length * V);
      seq.promptLogits.forEach((row, t) => ours.set(row, t * V));
      expect(maxAbsDiff(ours, await goldenLogits(i))).toBeLessThanOrEqual(golden.tolerance.logits_max_abs);
      // Routing and sparsity of every prompt token at every layer.
      first.layers!.forEach((rec, L) => {
        for (let t = 0; t < p.ids.length; t++) {
          expect([rec.experts[2 * t], rec.experts[2 * t + 1]]).toEqual(p.experts[L][t]);
          expect([rec.active[2 * t], rec.active[2 * t + 1]]).toEqual(p.active_neurons[L][t]);
          expect(rec.weights[2 * t]).toBeCloseTo(p.route_weights[L][t][0], 4);
        }
      });
      while (!seq.finished) await engine.step([seq]);
      expect(seq.outputIds).toEqual(p.greedy);
      engine.release(seq);
    });
  });

  test('KV-cache decoding equals recomputing the whole sequence', async () => {
    const p = golden.prompts[0];
    const seq = engine.newSequence(p.ids, { sampling: GREEDY, maxTokens: 6, stopIds: [] });
    const decodeLogits: Float32Array[] = [];
    while (!seq.finished) {
      const r = await engine.step([seq]);
      decodeLogits.push(...r.sampled.map((s) => s.logits.slice()));
    }
    const all = [...p.ids, ...seq.outputIds];
    const full = engine.newSequence(all.slice(0, -1), { sampling: GREEDY, maxTokens: 0, stopIds: [], keepPromptLogits: true });
    while (!full.finished) await engine.step([full]);
    // Position p.ids.length-1+j of the full pass produced decode token j.
    decodeLogits.forEach((row, j) => {
      expect(maxAbsDiff(row, full.promptLogits[p.ids.length - 1 + j])).toBeLessThan(1e-4);
    });
    engine.release(seq);
    engine.release(full);
  });

  test('chunked prefill and batching several sequences give the same tokens', async () => {
    const seqs = golden.prompts.map((p) => engine.newSequence(p.ids, { sampling: GREEDY, maxTokens: p.greedy.length, stopIds: [] }));
    while (seqs.some((s) => !s.finished)) await engine.step(seqs, { prefillChunk: 2 });
    seqs.forEach((s, i) => {
      expect(s.outputIds).toEqual(golden.prompts[i].greedy);
      engine.release(s);
    });
  });
});

describeGolden('dense-with-mask FFN on tiny-a', () => {
  test('gives the golden greedy tokens', async () => {
    const engine = await loadEngine({ modelDir: TINY_A_MODEL, device: 'cpu', dense: true, ...quiet });
    try {
      for (const p of goldenJson().prompts) {
        const seq = engine.newSequence(p.ids, { sampling: GREEDY, maxTokens: p.greedy.length, stopIds: [] });
        while (!seq.finished) await engine.step([seq]);
        expect(seq.outputIds).toEqual(p.greedy);
        engine.release(seq);
      }
    } finally {
      await engine.close();
    }
  });
});
