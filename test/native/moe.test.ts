// moe through the addon on the CPU backend: sparse equals dense, and both
// match a float64 reference of sum_c weight * w2 (mask * relu(w1 x) * relu(w3 x)).
import { maskBytes, native, type ExpertCall, type NativeBackend, type NativeExpert } from '../../core/native';
import { expectClose, hostMatrix, maxAbs, packMask, randomF32, refExpert, rng, unalignedBytes } from './helpers';

const H = 48;
const I = 100; // not a multiple of 64
const N_ROWS = 5; // row 4 is routed nowhere and must come out 0

let backend: NativeBackend;
beforeAll(() => {
  backend = native().createBackend('cpu', 2);
});
afterAll(() => backend.close());

interface ExpertData {
  w1: Float32Array;
  w3: Float32Array;
  w2: Float32Array;
}
const data: ExpertData[] = [0, 1, 2].map((e) => ({
  w1: randomF32(I * H, 100 + e, 0.5),
  w3: randomF32(I * H, 200 + e, 0.5),
  w2: randomF32(H * I, 300 + e, 0.5),
}));
const x = randomF32(N_ROWS * H, 400);

/** Random masks (about 60% set) for `n` rows. */
function randomMasks(n: number, seed: number, out?: Uint8Array): Uint8Array {
  const r = rng(seed);
  return packMask(Float32Array.from({ length: n * I }, () => (r() > -0.2 ? 1 : 0)), n, I, out);
}

const plan = [
  { expert: 0, rows: [0, 2], weight: [0.7, 0.4] },
  { expert: 1, rows: [1, 2, 3], weight: [1, 0.6, 0.25] },
  { expert: 2, rows: [3, 0], weight: [0.75, 0.3] },
];

function buildCalls(experts: NativeExpert[], unalignedCall = -1): ExpertCall[] {
  return plan.map((p, c) => ({
    expert: experts[p.expert],
    rows: Int32Array.from(p.rows),
    weight: Float32Array.from(p.weight),
    masks: randomMasks(p.rows.length, 500 + c, c === unalignedCall ? unalignedBytes(p.rows.length * maskBytes(I)) : undefined),
  }));
}

function reference(
  calls: ExpertCall[],
  weights: ExpertData[] = data,
): { y: Float64Array; active: number[]; ambiguous: number[] } {
  const y = new Float64Array(N_ROWS * H);
  const active: number[] = [];
  const ambiguous: number[] = [];
  calls.forEach((call, c) => {
    const d = weights[plan[c].expert];
    call.rows.forEach((row, j) => {
      const rb = maskBytes(I);
      const r = refExpert(d.w1, d.w3, d.w2, H, I, x, row * H, (i) => ((call.masks[j * rb + (i >> 3)] >> (i & 7)) & 1) === 1);
      for (let h = 0; h < H; h++) y[row * H + h] += call.weight[j] * r.y[h];
      active.push(r.active);
      ambiguous.push(r.ambiguous);
    });
  });
  return { y, active, ambiguous };
}

async function createExperts(store: 'f32' | 'bf16' = 'f32', source: 'f32' | 'bf16' = 'f32'): Promise<NativeExpert[]> {
  return Promise.all(
    data.map((d) =>
      backend.createExpert(
        hostMatrix(d.w1, I, H, source).m,
        hostMatrix(d.w3, I, H, source).m,
        hostMatrix(d.w2, H, I, source).m,
        store,
      ),
    ),
  );
}

test('sparse == dense == reference; untouched rows are 0; active counts', async () => {
  const experts = await createExperts();
  expect(experts.map((e) => [e.hidden, e.intermediate])).toEqual([[H, I], [H, I], [H, I]]);
  const calls = buildCalls(experts, 1);
  const ref = reference(calls);
  const scale = maxAbs(ref.y);

  const ySparse = new Float32Array(N_ROWS * H).fill(NaN); // overwritten, not accumulated
  const aSparse = new Int32Array(7);
  await backend.moe('sparse', N_ROWS, H, x, calls, ySparse, aSparse);
  const yDense = new Float32Array(N_ROWS * H).fill(NaN);
  const aDense = new Int32Array(7);
  await backend.moe('dense', N_ROWS, H, x, calls, yDense, aDense);

  expectClose(ySparse, ref.y, 1e-5 * scale);
  expectClose(yDense, ref.y, 1e-5 * scale);
  expectClose(ySparse, yDense, 1e-6 * scale);
  expect(Array.from(ySparse.subarray(4 * H))).toEqual(new Array(H).fill(0));
  expect(Array.from(aSparse)).toEqual(Array.from(aDense));
  ref.active.forEach((want, j) => expect(Math.abs(aSparse[j] - want)).toBeLessThanOrEqual(ref.ambiguous[j]));
  expect(ref.active.reduce((a, b) => a + b, 0)).toBeGreaterThan(0);
});

test('experts evaluated together or apart give the same sum', async () => {
  const experts = await createExperts();
  const calls = buildCalls(experts);
  const together = new Float32Array(N_ROWS * H);
  await backend.moe('sparse', N_ROWS, H, x, calls, together, null);
  const apart = new Float32Array(N_ROWS * H);
  for (const call of calls) {
    const y = new Float32Array(N_ROWS * H);
    await backend.moe('sparse', N_ROWS, H, x, [call], y, null);
    for (let i = 0; i < y.length; i++) apart[i] += y[i];
  }
  expectClose(together, apart, 1e-6 * maxAbs(apart));
});

test('bf16 weights: sparse == dense and near the reference on the rounded weights', async () => {
  const experts = await createExperts('bf16', 'bf16');
  const calls = buildCalls(experts);
  const rounded = data.map((d) => ({
    w1: hostMatrix(d.w1, I, H, 'bf16').rounded,
    w3: hostMatrix(d.w3, I, H, 'bf16').rounded,
    w2: hostMatrix(d.w2, H, I, 'bf16').rounded,
  }));
  const ref = reference(calls, rounded).y;
  const ys = new Float32Array(N_ROWS * H);
  const yd = new Float32Array(N_ROWS * H);
  await backend.moe('sparse', N_ROWS, H, x, calls, ys, null);
  await backend.moe('dense', N_ROWS, H, x, calls, yd, null);
  expectClose(ys, ref, 1e-4 * maxAbs(ref));
  expectClose(ys, yd, 1e-5 * maxAbs(ref));
});

test('no calls: y becomes all zeros', async () => {
  const y = new Float32Array(N_ROWS * H).fill(7);
  await backend.moe('sparse', N_ROWS, H, x, [], y, new Int32Array(0));
  expect(maxAbs(y)).toBe(0);
});

test('setInlineRows: a one-row call on an idle backend runs before moe returns, with the pool\'s bits; behind a running call it waits its turn', async () => {
  const experts = await createExperts();
  const x1 = x.slice(0, H);
  const one = [{ expert: experts[1], rows: Int32Array.of(0), weight: Float32Array.of(0.6), masks: randomMasks(1, 900) }];
  const pooled = new Float32Array(H).fill(NaN);
  await backend.moe('sparse', 1, H, x1, one, pooled, null);
  expect(maxAbs(pooled)).toBeGreaterThan(0);
  backend.setInlineRows(1);
  try {
    const inline = new Float32Array(H).fill(NaN);
    const done = backend.moe('sparse', 1, H, x1, one, inline, null);
    expect(Array.from(inline)).toEqual(Array.from(pooled)); // already computed when moe returned
    await done;
    // Over the bound: the pool. A one-row call made meanwhile queues behind it, in call order.
    const order: string[] = [];
    const big = backend.moe('sparse', N_ROWS, H, x, buildCalls(experts), new Float32Array(N_ROWS * H), null).then(() => order.push('big'));
    const behind = new Float32Array(H).fill(NaN);
    const small = backend.moe('sparse', 1, H, x1, one, behind, null).then(() => order.push('small'));
    expect(Number.isNaN(behind[0])).toBe(true); // not run inline: the backend was busy
    await Promise.all([big, small]);
    expect(order).toEqual(['big', 'small']);
    expect(Array.from(behind)).toEqual(Array.from(pooled));
  } finally {
    backend.setInlineRows(0);
  }
});
