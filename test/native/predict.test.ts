// predictMany through the addon on the CPU backend: mask bit i is
// (fc2 . relu(fc1 . x))_i > 0, per call over its own rows of the batch.
import { maskBytes, native, type NativeBackend, type PredictCall } from '../../core/native';
import { hostMatrix, maskBit, randomF32, unalignedBytes } from './helpers';

const H = 32;
const R = 12;
const I = 100; // not a multiple of 64: the last mask word is partial

let backend: NativeBackend;
beforeAll(() => {
  backend = native().createBackend('cpu', 2);
});
afterAll(() => backend.close());

/** fc2 . relu(fc1 . x_row) in float64. */
function refScores(fc1: Float32Array, fc2: Float32Array, x: Float32Array, row: number): Float64Array {
  const hidden = new Float64Array(R);
  for (let r = 0; r < R; r++) {
    let s = 0;
    for (let c = 0; c < H; c++) s += fc1[r * H + c] * x[row * H + c];
    hidden[r] = Math.max(0, s);
  }
  const z = new Float64Array(I);
  for (let i = 0; i < I; i++) {
    let s = 0;
    for (let r = 0; r < R; r++) s += fc2[i * R + r] * hidden[r];
    z[i] = s;
  }
  return z;
}

test('predictMany: masks and counts per call, including an unaligned mask buffer', async () => {
  const N = 5;
  const x = randomF32(N * H, 41);
  const weights = [0, 1].map((p) => ({ fc1: randomF32(R * H, 50 + p), fc2: randomF32(I * R, 60 + p) }));
  const predictors = await Promise.all(
    weights.map((w) => backend.createPredictor(hostMatrix(w.fc1, R, H).m, hostMatrix(w.fc2, I, R).m, 'f32')),
  );
  expect(predictors.map((p) => p.rank)).toEqual([R, R]);

  const rowsPer = [Int32Array.from([0, 2, 4]), Int32Array.from([4, 1, 3, 0])];
  const calls: PredictCall[] = [
    {
      predictor: predictors[0],
      rows: rowsPer[0],
      masks: new Uint8Array(3 * maskBytes(I)),
      counts: new Int32Array(3),
    },
    // An 8-unaligned Uint8Array takes the copy-back path; no counts wanted.
    { predictor: predictors[1], rows: rowsPer[1], masks: unalignedBytes(4 * maskBytes(I)) },
  ];
  await backend.predictMany(N, H, x, calls);

  calls.forEach((call, c) => {
    call.rows.forEach((row, j) => {
      const z = refScores(weights[c].fc1, weights[c].fc2, x, row);
      let want = 0;
      let ambiguous = 0;
      for (let i = 0; i < I; i++) {
        if (z[i] > 0) want++;
        if (Math.abs(z[i]) < 1e-4) {
          ambiguous++;
          continue;
        }
        if (maskBit(call.masks, j, I, i) !== z[i] > 0) {
          throw new Error(`call ${c} row ${row} neuron ${i}: bit ${maskBit(call.masks, j, I, i)}, score ${z[i]}`);
        }
      }
      let got = 0;
      for (let i = 0; i < I; i++) if (maskBit(call.masks, j, I, i)) got++;
      expect(Math.abs(got - want)).toBeLessThanOrEqual(ambiguous);
      if (call.counts) expect(call.counts[j]).toBe(got);
    });
  });
  // Something was predicted active, and not everything.
  const bits = calls[0].masks.reduce((s, b) => s + (b.toString(2).split('1').length - 1), 0);
  expect(bits).toBeGreaterThan(0);
  expect(bits).toBeLessThan(3 * I);
});

test('predictMany with no calls and with an empty call', async () => {
  const p = await backend.createPredictor(
    hostMatrix(randomF32(R * H, 1), R, H).m,
    hostMatrix(randomF32(I * R, 2), I, R).m,
    'f32',
  );
  const x = randomF32(2 * H, 3);
  await backend.predictMany(2, H, x, []);
  await backend.predictMany(2, H, x, [{ predictor: p, rows: new Int32Array(0), masks: new Uint8Array(0) }]);
});
