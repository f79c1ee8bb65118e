// The golden expert cases (../shared/golden/tiny-a/expert_cases.safetensors)
// through moe on the CPU backend: every expert of every layer, sparse and
// dense, within 1e-4 relative of the reference outputs.
import fs from 'node:fs';
import path from 'node:path';
import { native, type HostMatrix, type NativeBackend } from '../../core/native';
import { GOLDEN_DIR, TINY_A, TINY_A_MODEL } from '../helpers/golden';
import { maxAbs, packMask, readSafetensors, type SafeTensor } from './helpers';

const CASES = path.join(TINY_A, 'expert_cases.safetensors');
const haveCases = fs.existsSync(CASES);
if (!haveCases) {
  // eslint-disable-next-line no-console
  console.warn(`skipping the golden moe cases: ${CASES} not found (golden data lives in ${GOLDEN_DIR})`);
}
const describeIf = haveCases ? describe : describe.skip;

describeIf('golden expert cases through moe (cpu)', () => {
  let backend: NativeBackend;
  let cases: Map<string, SafeTensor>;
  let model: Map<string, SafeTensor>;
  let config: { hidden_size: number; intermediate_size: number; num_hidden_layers: number; num_local_experts: number };

  beforeAll(() => {
    backend = native().createBackend('cpu', 2);
    cases = readSafetensors(CASES);
    model = readSafetensors(path.join(TINY_A_MODEL, 'model.safetensors'));
    config = JSON.parse(fs.readFileSync(path.join(TINY_A_MODEL, 'config.json'), 'utf8'));
  });
  afterAll(() => backend?.close());

  /** A checkpoint tensor as a host matrix over the file's own bytes (alignment as it comes). */
  function matrix(name: string): HostMatrix {
    const t = model.get(name);
    if (!t) throw new Error(`model.safetensors has no ${name}`);
    return { dtype: 'f32', rows: t.shape[0], cols: t.shape[1], data: t.bytes };
  }

  test('every layer and expert, sparse and dense', async () => {
    const H = config.hidden_size;
    const I = config.intermediate_size;
    let checked = 0;
    for (let L = 0; L < config.num_hidden_layers; L++) {
      for (let E = 0; E < config.num_local_experts; E++) {
        const key = `${L}.${E}`;
        const x = cases.get(`${key}.x`);
        const mask = cases.get(`${key}.mask`);
        const want = cases.get(`${key}.y`);
        if (!x || !mask || !want) throw new Error(`expert_cases.safetensors lacks ${key}.x/.mask/.y`);
        const n = x.shape[0];
        const prefix = `model.layers.${L}.block_sparse_moe.experts.${E}`;
        const expert = await backend.createExpert(
          matrix(`${prefix}.w1.weight`),
          matrix(`${prefix}.w3.weight`),
          matrix(`${prefix}.w2.weight`),
          'f32',
        );
        const call = {
          expert,
          rows: Int32Array.from({ length: n }, (_, i) => i),
          weight: new Float32Array(n).fill(1),
          masks: packMask(mask.values, n, I),
        };
        const scale = maxAbs(want.values);
        for (const mode of ['sparse', 'dense'] as const) {
          const y = new Float32Array(n * H);
          await backend.moe(mode, n, H, x.values, [call], y, null);
          let worst = 0;
          for (let i = 0; i < y.length; i++) worst = Math.max(worst, Math.abs(y[i] - want.values[i]));
          if (!(worst <= 1e-4 * scale)) {
            throw new Error(`layer ${L} expert ${E} ${mode}: max |diff| ${worst} > 1e-4 * ${scale}`);
          }
        }
        expert.free();
        checked++;
      }
    }
    expect(checked).toBe(config.num_hidden_layers * config.num_local_experts);
  });

  test('all experts of layer 0 in one call equal the weighted sum of their cases', async () => {
    const H = config.hidden_size;
    const I = config.intermediate_size;
    const E = config.num_local_experts;
    // Every case of layer 0 has its own inputs: stack them as rows, expert e on rows e*n..(e+1)*n-1,
    // and also route each row to expert (e+1)%E with a zero mask (contributes nothing).
    const n = cases.get('0.0.x')!.shape[0];
    const x = new Float32Array(E * n * H);
    const want = new Float32Array(E * n * H);
    const calls = [];
    for (let e = 0; e < E; e++) {
      x.set(cases.get(`0.${e}.x`)!.values, e * n * H);
      const w = 0.25 + 0.1 * e;
      const y = cases.get(`0.${e}.y`)!.values;
      for (let i = 0; i < n * H; i++) want[e * n * H + i] = w * y[i];
      const prefix = `model.layers.0.block_sparse_moe.experts.${e}`;
      const expert = await backend.createExpert(
        matrix(`${prefix}.w1.weight`),
        matrix(`${prefix}.w3.weight`),
        matrix(`${prefix}.w2.weight`),
        'f32',
      );
      const rows = Int32Array.from({ length: n }, (_, i) => e * n + i);
      const prev = (e + E - 1) % E;
      calls.push({ expert, rows, weight: new Float32Array(n).fill(w), masks: packMask(cases.get(`0.${e}.mask`)!.values, n, I) });
      calls.push({
        expert,
        rows: Int32Array.from({ length: n }, (_, i) => prev * n + i),
        weight: new Float32Array(n).fill(0.5),
        masks: new Uint8Array(n * Math.ceil(I / 64) * 8),
      });
    }
    const y = new Float32Array(E * n * H);
    const active = new Int32Array(2 * E * n);
    await backend.moe('sparse', E * n, H, x, calls, y, active);
    const scale = maxAbs(want);
    for (let i = 0; i < y.length; i++) {
      if (!(Math.abs(y[i] - want[i]) <= 1e-4 * scale)) throw new Error(`y[${i}] = ${y[i]}, want ${want[i]}`);
    }
    // Zero-mask calls activate nothing; the real ones activate something.
    for (let c = 0; c < 2 * E; c++) {
      const a = active.subarray(c * n, (c + 1) * n);
      if (c % 2 === 1) expect(Array.from(a)).toEqual(new Array(n).fill(0));
      else expect(a.reduce((s, v) => s + v, 0)).toBeGreaterThan(0);
    }
  });
});
