// Bad calls through the addon reject (or throw, for the synchronous ones)
// with a message naming the argument, and never crash the process; freed
// handles and closed backends are refused clearly.
import { maskBytes, native, type NativeBackend, type NativeWeight } from '../../core/native';
import { hostMatrix, randomF32 } from './helpers';

const ROWS = 6;
const COLS = 10;

let backend: NativeBackend;
let w: NativeWeight;
beforeAll(async () => {
  backend = native().createBackend('cpu', 2);
  w = await backend.createWeight(hostMatrix(randomF32(ROWS * COLS, 1), ROWS, COLS).m, 'f32');
});
afterAll(() => backend.close());

describe('argument checks', () => {
  test('wrong array length names the argument and the expected size', async () => {
    // (Errors made by the addon belong to Node's realm, not jest's: compare names, not classes.)
    await expect(backend.matmul(w, 3, new Float32Array(3 * COLS - 1), new Float32Array(3 * ROWS))).rejects.toMatchObject({
      name: 'RangeError',
      message: 'matmul: x has 29 elements, expected n * w.cols = 3 * 10 = 30',
    });
    await expect(backend.matmul(w, 3, new Float32Array(3 * COLS), new Float32Array(3 * ROWS + 1))).rejects.toThrow(
      /^matmul: y has 19 elements, expected n \* w.rows = 3 \* 6 = 18$/,
    );
  });

  test('wrong array type is a TypeError naming the argument', async () => {
    const p = backend.matmul(w, 1, new Float64Array(COLS) as unknown as Float32Array, new Float32Array(ROWS));
    await expect(p).rejects.toMatchObject({ name: 'TypeError', message: 'matmul: x must be a Float32Array (got Float64Array)' });
    await expect(backend.matmul({} as NativeWeight, 1, new Float32Array(COLS), new Float32Array(ROWS))).rejects.toThrow(
      /^matmul: w must be a Weight from backend.createWeight\(\)/,
    );
    await expect(backend.matmul(w, -1, new Float32Array(0), new Float32Array(0))).rejects.toThrow(
      /^matmul: n must be a non-negative integer \(got -1\)/,
    );
  });

  test('a rejected call does not throw synchronously', () => {
    let p: Promise<void> | undefined;
    expect(() => {
      p = backend.matmul(w, 1, null as unknown as Float32Array, new Float32Array(ROWS));
    }).not.toThrow();
    return expect(p).rejects.toThrow(/^matmul: x must be a Float32Array \(got null\)/);
  });

  test('host matrix checks name the field', async () => {
    const data = new Uint8Array(ROWS * COLS * 4 - 4);
    await expect(backend.createWeight({ dtype: 'f32', rows: ROWS, cols: COLS, data }, 'f32')).rejects.toThrow(
      'createWeight: m.data has 236 bytes, expected rows * cols * 4 = 240 for f32 [6, 10]',
    );
    await expect(
      backend.createWeight({ dtype: 'f64' as 'f32', rows: 1, cols: 1, data: new Uint8Array(8) }, 'f32'),
    ).rejects.toThrow(/^createWeight: m.dtype must be "f32", "f16" or "bf16" \(got "f64"\)/);
    await expect(backend.createWeight(hostMatrix(new Float32Array(4), 2, 2).m, 'q4' as 'f32')).rejects.toThrow(
      /^createWeight: store must be "f32", "f16", "bf16" or "i8"/,
    );
    const a = hostMatrix(new Float32Array(8 * 4), 8, 4).m;
    const bad = hostMatrix(new Float32Array(8 * 4), 8, 4).m; // w2 must be [4, 8]
    await expect(backend.createExpert(a, a, bad, 'f32')).rejects.toThrow(/^createExpert: w2 is \[8, 4\], expected \[4, 8\]/);
  });

  test('moe call fields: masks length, row range, weight length, handle kind', async () => {
    const I = 70;
    const H = 8;
    const e = await backend.createExpert(
      hostMatrix(randomF32(I * H, 2), I, H).m,
      hostMatrix(randomF32(I * H, 3), I, H).m,
      hostMatrix(randomF32(H * I, 4), H, I).m,
      'f32',
    );
    const x = new Float32Array(2 * H);
    const y = new Float32Array(2 * H);
    const good = { expert: e, rows: Int32Array.from([0, 1]), weight: Float32Array.from([1, 1]), masks: new Uint8Array(2 * maskBytes(I)) };
    await expect(backend.moe('sparse', 2, H, x, [good, { ...good, masks: new Uint8Array(2 * maskBytes(I) - 1) }], y, null)).rejects.toThrow(
      'moe: calls[1].masks has 31 elements, expected rows.length * maskBytes(intermediate) = 2 * 16 = 32',
    );
    await expect(backend.moe('sparse', 2, H, x, [{ ...good, rows: Int32Array.from([0, 2]) }], y, null)).rejects.toThrow(
      /^moe: calls\[0\].rows\[1\] = 2 is not a row of the batch/,
    );
    await expect(backend.moe('sparse', 2, H, x, [{ ...good, weight: new Float32Array(1) }], y, null)).rejects.toThrow(
      /^moe: calls\[0\].weight has 1 elements, expected rows.length = 2/,
    );
    await expect(backend.moe('sparse', 2, H, x, [{ ...good, expert: w as never }], y, null)).rejects.toThrow(
      /^moe: calls\[0\].expert must be a Expert from backend.createExpert\(\)/,
    );
    await expect(backend.moe('sparse', 2, H, x, [good], y, new Int32Array(3))).rejects.toThrow(
      /^moe: active has 3 elements, expected the total rows over calls = 2/,
    );
    await expect(backend.moe('fast' as 'sparse', 2, H, x, [good], y, null)).rejects.toThrow(
      /^moe: mode must be "sparse" or "dense"/,
    );
    await backend.moe('dense', 2, H, x, [good], y, null); // the good call still works
  });

  test('attention checks positions against the cache', async () => {
    const c = backend.createKvCache(1, 4, 1, 2);
    const f = (n: number) => new Float32Array(n);
    await expect(backend.attention(0, 1, [c], Int32Array.from([4]), 1, 1, 2, f(2), f(2), f(2), f(2))).rejects.toThrow(
      /^attention: positions\[0\] = 4 is outside caches\[0\] \(0 <= position < maxTokens = 4\)/,
    );
    await expect(backend.attention(1, 1, [c], Int32Array.from([0]), 1, 1, 2, f(2), f(2), f(2), f(2))).rejects.toThrow(
      /^attention: layer = 1 is out of range for caches\[0\]/,
    );
    await expect(backend.attention(0, 2, [c], Int32Array.from([0, 1]), 1, 1, 2, f(4), f(4), f(4), f(4))).rejects.toThrow(
      /^attention: caches has 1 entries, expected n = 2/,
    );
  });

  test('an error from the kernel library rejects with its message', async () => {
    // RoPE rotates halves: an odd head size passes the size checks but the library refuses it.
    await expect(backend.rope(1, 1, 3, Int32Array.from([0]), 10000, new Float32Array(3))).rejects.toThrow(/^rope: .+/);
  });

  test('synchronous calls throw', () => {
    expect(() => native().createBackend('tpu' as 'cpu', 0)).toThrow(/^createBackend: device must be "cpu", "cuda" or "auto" \(got "tpu"\)/);
    expect(() => native().deviceAvailable('auto' as 'cpu')).toThrow(/^deviceAvailable: device must be "cpu" or "cuda"/);
    expect(() => backend.createKvCache(0, 4, 1, 2)).toThrow(/^createKvCache: layers must be a positive integer \(got 0\)/);
    const Ctor = Object.getPrototypeOf(w).constructor as new () => unknown;
    expect(() => new Ctor()).toThrow(/Weight cannot be constructed from JS; use backend.createWeight\(\)/);
  });
});

describe('freed handles and closed backends', () => {
  test('free() is idempotent; a freed handle is refused; its shape stays readable', async () => {
    const h = await backend.createWeight(hostMatrix(randomF32(ROWS * COLS, 9), ROWS, COLS).m, 'f32');
    h.free();
    h.free();
    expect([h.rows, h.cols]).toEqual([ROWS, COLS]);
    await expect(backend.matmul(h, 1, new Float32Array(COLS), new Float32Array(ROWS))).rejects.toThrow(
      'matmul: w was freed (free() was called on it); create a new weight',
    );
    const c = backend.createKvCache(1, 4, 1, 2);
    c.free();
    await expect(
      backend.attention(0, 1, [c], Int32Array.from([0]), 1, 1, 2, new Float32Array(2), new Float32Array(2), new Float32Array(2), new Float32Array(2)),
    ).rejects.toThrow(/^attention: caches\[0\] was freed/);
  });

  test('a handle from another backend is refused', async () => {
    const other = native().createBackend('cpu', 1);
    try {
      const h = await other.createWeight(hostMatrix(randomF32(ROWS * COLS, 9), ROWS, COLS).m, 'f32');
      await expect(backend.matmul(h, 1, new Float32Array(COLS), new Float32Array(ROWS))).rejects.toThrow(
        'matmul: w belongs to a different backend',
      );
    } finally {
      other.close();
    }
  });

  test('close() is idempotent, frees every handle, and refuses further use', async () => {
    const b = native().createBackend('cpu', 1);
    const h = await b.createWeight(hostMatrix(randomF32(ROWS * COLS, 9), ROWS, COLS).m, 'f32');
    const c = b.createKvCache(1, 4, 1, 2);
    b.close();
    b.close();
    h.free(); // after close: a no-op, not a double free
    c.free();
    expect(b.device).toBe('cpu');
    await expect(b.matmul(h, 1, new Float32Array(COLS), new Float32Array(ROWS))).rejects.toThrow(
      'matmul: the backend is closed; create a new one with createBackend()',
    );
    await expect(b.createWeight(hostMatrix(new Float32Array(4), 2, 2).m, 'f32')).rejects.toThrow(/^createWeight: the backend is closed/);
    expect(() => b.createKvCache(1, 4, 1, 2)).toThrow(/^createKvCache: the backend is closed/);
    expect(() => b.weightBytes()).toThrow(/^weightBytes: the backend is closed/);
    expect(() => b.setVariant('auto')).toThrow(/^setVariant: the backend is closed/);
  });

  test('free() and close() while an op runs: the op completes, the memory goes after it', async () => {
    const R = 512;
    const C = 1024;
    const N = 64;
    const b = native().createBackend('cpu', 1);
    const W = randomF32(R * C, 13);
    const big = await b.createWeight(hostMatrix(W, R, C).m, 'f32');
    const x = randomF32(N * C, 14);
    const y = new Float32Array(N * R);
    const running = b.matmul(big, N, x, y);
    big.free();
    await expect(b.matmul(big, N, x, new Float32Array(N * R))).rejects.toThrow(/was freed/);
    const creating = expect(b.createWeight(hostMatrix(randomF32(16, 1), 4, 4).m, 'f32')).rejects.toThrow(
      /^createWeight: the backend was closed before the weight was ready$/,
    );
    b.close();
    await running; // completed on a live weight
    let s = 0;
    for (let c = 0; c < C; c++) s += W[c] * x[c];
    expect(Math.abs(y[0] - s)).toBeLessThan(1e-3);
    await creating;
  });
});
