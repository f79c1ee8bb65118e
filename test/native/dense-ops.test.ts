// rmsnorm, rope and routerTopk through the addon on the CPU backend, against
// float64 references; plus the module functions and backend properties.
import { native, type NativeBackend } from '../../core/native';
import { expectClose, hostMatrix, randomF32 } from './helpers';

let backend: NativeBackend;
beforeAll(() => {
  backend = native().createBackend('cpu', 2);
});
afterAll(() => backend.close());

describe('module and backend', () => {
  test('version, deviceAvailable, device and description', () => {
    const mod = native();
    expect(mod.version()).toMatch(/\d/);
    expect(mod.deviceAvailable('cpu')).toBe(true);
    expect(typeof mod.deviceAvailable('cuda')).toBe('boolean');
    expect(backend.device).toBe('cpu');
    expect(backend.description).toMatch(/cpu/);
  });

  test('setVariant: scalar always runs; an unknown variant throws the library message', () => {
    const b = native().createBackend('cpu', 1);
    try {
      b.setVariant('scalar');
      expect(b.description).toMatch(/scalar/);
      expect(() => b.setVariant('bogus')).toThrow(/^setVariant: .+/);
      b.setVariant('auto');
    } finally {
      b.close();
    }
  });
});

describe('rmsnorm (cpu)', () => {
  const N = 3;
  const D = 50;
  const x = randomF32(N * D, 11, 3);
  const wv = randomF32(D, 12);
  function ref(eps: number): Float64Array {
    const y = new Float64Array(N * D);
    for (let i = 0; i < N; i++) {
      let ss = 0;
      for (let j = 0; j < D; j++) ss += x[i * D + j] ** 2;
      const inv = 1 / Math.sqrt(ss / D + eps);
      for (let j = 0; j < D; j++) y[i * D + j] = x[i * D + j] * inv * wv[j];
    }
    return y;
  }

  test('y = x / rms(x) * w', async () => {
    const w = await backend.createWeight(hostMatrix(wv, 1, D).m, 'f32');
    const y = new Float32Array(N * D);
    await backend.rmsnorm(w, N, D, x, 1e-5, y);
    expectClose(y, ref(1e-5), 1e-5, 1e-5);
  });

  test('in place (y is x)', async () => {
    const w = await backend.createWeight(hostMatrix(wv, 1, D).m, 'f32');
    const xy = x.slice();
    await backend.rmsnorm(w, N, D, xy, 0.5, xy);
    expectClose(xy, ref(0.5), 1e-5, 1e-5);
  });
});

describe('rope (cpu)', () => {
  test('rotate-half at the given positions', async () => {
    const N = 4;
    const HEADS = 3;
    const HD = 16;
    const THETA = 10000;
    const positions = Int32Array.from([0, 1, 7, 100]);
    const x0 = randomF32(N * HEADS * HD, 21);
    const want = new Float64Array(x0.length);
    const half = HD / 2;
    for (let t = 0; t < N; t++)
      for (let h = 0; h < HEADS; h++) {
        const o = (t * HEADS + h) * HD;
        for (let i = 0; i < half; i++) {
          const angle = positions[t] * THETA ** ((-2 * i) / HD);
          const a = x0[o + i];
          const b = x0[o + i + half];
          want[o + i] = a * Math.cos(angle) - b * Math.sin(angle);
          want[o + i + half] = b * Math.cos(angle) + a * Math.sin(angle);
        }
      }
    const x = x0.slice();
    await backend.rope(N, HEADS, HD, positions, THETA, x);
    expectClose(x, want, 2e-5, 1e-4);
    // Position 0 is the identity.
    expectClose(x.subarray(0, HEADS * HD), x0.subarray(0, HEADS * HD), 1e-7);
  });
});

describe('routerTopk (cpu)', () => {
  test('softmax, top-k, renormalised, ties to the lower id', async () => {
    const N = 4;
    const E = 8;
    const K = 2;
    const logits = randomF32(N * E, 31, 4);
    logits.set([0.5, 2, 1, 2, -1, 0, 0, 0], 3 * E); // row 3: a tie between experts 1 and 3
    const idx = new Int32Array(N * K);
    const weight = new Float32Array(N * K);
    await backend.routerTopk(N, E, logits, K, idx, weight);
    for (let t = 0; t < N; t++) {
      const row = Array.from(logits.subarray(t * E, (t + 1) * E));
      const order = row.map((v, e) => [v, e]).sort((a, b) => b[0] - a[0] || a[1] - b[1]);
      const top = order.slice(0, K);
      const m = Math.max(...row);
      const p = top.map(([v]) => Math.exp(v - m));
      const sum = p.reduce((a, b) => a + b, 0);
      expect(Array.from(idx.subarray(t * K, (t + 1) * K))).toEqual(top.map(([, e]) => e));
      expectClose(weight.subarray(t * K, (t + 1) * K), p.map((v) => v / sum), 1e-6, 1e-5);
    }
    expect(Array.from(idx.subarray(3 * K, 4 * K))).toEqual([1, 3]);
  });
});
