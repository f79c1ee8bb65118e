// matmul through the addon on the CPU backend, for every stored dtype, against
// a float64 reference. Odd sizes exercise the SIMD tails.
import { native, type NativeBackend, type SourceDType, type StoreDType } from '../../core/native';
import { expectClose, hostMatrix, randomF32, refMatmul } from './helpers';

const ROWS = 37;
const COLS = 70;
const N = 5;

let backend: NativeBackend;
beforeAll(() => {
  backend = native().createBackend('cpu', 2);
});
afterAll(() => backend.close());

/** Per-output bound: |y - ref| <= rel * sum_j |w_rj x_j| + tiny. */
function rowBounds(W: Float32Array, x: Float32Array, rel: number): Float64Array {
  const b = new Float64Array(N * ROWS);
  for (let i = 0; i < N; i++)
    for (let r = 0; r < ROWS; r++) {
      let s = 0;
      for (let c = 0; c < COLS; c++) s += Math.abs(W[r * COLS + c] * x[i * COLS + c]);
      b[i * ROWS + r] = rel * s + 1e-6;
    }
  return b;
}

function expectWithin(y: Float32Array, ref: Float64Array, bound: Float64Array): void {
  for (let i = 0; i < ref.length; i++) {
    if (!(Math.abs(y[i] - ref[i]) <= bound[i])) {
      throw new Error(`y[${i}] = ${y[i]}, want ${ref[i]} +- ${bound[i]}`);
    }
  }
}

describe('matmul (cpu)', () => {
  const W = randomF32(ROWS * COLS, 1);
  const x = randomF32(N * COLS, 2);

  // Source dtype = stored dtype: the kernel sees exactly the rounded weights.
  test.each<[SourceDType]>([['f32'], ['f16'], ['bf16']])('%s source stored as is', async (dtype) => {
    const { m, rounded } = hostMatrix(W, ROWS, COLS, dtype);
    const w = await backend.createWeight(m, dtype);
    expect([w.rows, w.cols]).toEqual([ROWS, COLS]);
    const y = new Float32Array(N * ROWS);
    await backend.matmul(w, N, x, y);
    expectWithin(y, refMatmul(rounded, ROWS, COLS, N, x), rowBounds(rounded, x, 1e-5));
    w.free();
  });

  // f32 source converted on upload: the error is bounded by the store's precision.
  test.each<[StoreDType, number]>([
    ['f32', 1e-5],
    ['f16', 2 ** -11 + 1e-5],
    ['bf16', 2 ** -8 + 1e-5],
  ])('f32 source stored as %s', async (store, rel) => {
    const w = await backend.createWeight(hostMatrix(W, ROWS, COLS).m, store);
    const y = new Float32Array(N * ROWS);
    await backend.matmul(w, N, x, y);
    expectWithin(y, refMatmul(W, ROWS, COLS, N, x), rowBounds(W, x, rel));
    w.free();
  });

  test('f32 source stored as i8 (per-row scale)', async () => {
    const w = await backend.createWeight(hostMatrix(W, ROWS, COLS).m, 'i8');
    const y = new Float32Array(N * ROWS);
    await backend.matmul(w, N, x, y);
    const ref = refMatmul(W, ROWS, COLS, N, x);
    // Rounding w to a step of max|w_r|/127 moves it by at most half a step; if the
    // kernel also quantises x per row, that adds max|x_i|/254 per element.
    for (let i = 0; i < N; i++)
      for (let r = 0; r < ROWS; r++) {
        let maxW = 0, sumW = 0, maxX = 0, sumX = 0;
        for (let c = 0; c < COLS; c++) {
          maxW = Math.max(maxW, Math.abs(W[r * COLS + c]));
          sumW += Math.abs(W[r * COLS + c]);
          maxX = Math.max(maxX, Math.abs(x[i * COLS + c]));
          sumX += Math.abs(x[i * COLS + c]);
        }
        const bound = 1.1 * ((maxW / 254) * sumX + (maxX / 254) * sumW) + 1e-5;
        const k = i * ROWS + r;
        if (!(Math.abs(y[k] - ref[k]) <= bound)) throw new Error(`y[${k}] = ${y[k]}, want ${ref[k]} +- ${bound}`);
      }
    // Quantisation is not a no-op, nor garbage: the result is close to f32 overall.
    expectClose(y, ref, 0.05);
    w.free();
  });

  test('n = 1 and a single-row weight', async () => {
    const w = await backend.createWeight(hostMatrix(W.subarray(0, COLS), 1, COLS).m, 'f32');
    const y = new Float32Array(1);
    await backend.matmul(w, 1, x.subarray(0, COLS), y);
    expectClose(y, refMatmul(W, 1, COLS, 1, x), 1e-5, 1e-5);
    w.free();
  });

  test('unaligned host data is accepted (copied before upload)', async () => {
    const { m } = hostMatrix(W, ROWS, COLS);
    const odd = new Uint8Array(new ArrayBuffer(m.data.byteLength + 1), 1, m.data.byteLength);
    odd.set(m.data);
    const w = await backend.createWeight({ ...m, data: odd }, 'f32');
    const y = new Float32Array(N * ROWS);
    await backend.matmul(w, N, x, y);
    expectWithin(y, refMatmul(W, ROWS, COLS, N, x), rowBounds(W, x, 1e-5));
    w.free();
  });

  test('typed arrays over a SharedArrayBuffer (as worker threads share them)', async () => {
    const w = await backend.createWeight(hostMatrix(W, ROWS, COLS).m, 'f32');
    const xs = new Float32Array(new SharedArrayBuffer(N * COLS * 4));
    xs.set(x);
    const ys = new Float32Array(new SharedArrayBuffer(N * ROWS * 4));
    await backend.matmul(w, N, xs, ys);
    expectWithin(ys, refMatmul(W, ROWS, COLS, N, x), rowBounds(W, x, 1e-5));
    w.free();
  });

  test('weightBytes counts stored weights and drops on free', async () => {
    const before = backend.weightBytes();
    const w = await backend.createWeight(hostMatrix(W, ROWS, COLS).m, 'f32');
    expect(backend.weightBytes()).toBeGreaterThanOrEqual(before + ROWS * COLS * 4);
    w.free();
    expect(backend.weightBytes()).toBe(before);
  });
});
