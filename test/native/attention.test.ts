// attention through the addon on the CPU backend: a prefill of 5 tokens then
// one decode token equals recomputing all 6 at once, and both match a float64
// causal GQA reference; rows of different sequences can share a batch.
import { native, type NativeBackend } from '../../core/native';
import { expectClose, randomF32 } from './helpers';

const LAYERS = 2;
const MAX_TOKENS = 16;
const HEADS = 4;
const KV_HEADS = 2;
const HD = 8;
const Q = HEADS * HD;
const KV = KV_HEADS * HD;

let backend: NativeBackend;
beforeAll(() => {
  backend = native().createBackend('cpu', 2);
});
afterAll(() => backend.close());

/** Output row t of causal GQA over tokens 0..t (q, k, v already rotated). */
function refAttention(q: Float32Array, k: Float32Array, v: Float32Array, t: number): Float64Array {
  const out = new Float64Array(Q);
  const group = HEADS / KV_HEADS;
  for (let h = 0; h < HEADS; h++) {
    const kh = Math.floor(h / group);
    const scores: number[] = [];
    for (let s = 0; s <= t; s++) {
      let d = 0;
      for (let i = 0; i < HD; i++) d += q[t * Q + h * HD + i] * k[s * KV + kh * HD + i];
      scores.push(d / Math.sqrt(HD));
    }
    const m = Math.max(...scores);
    const p = scores.map((s) => Math.exp(s - m));
    const sum = p.reduce((a, b) => a + b, 0);
    for (let s = 0; s <= t; s++)
      for (let i = 0; i < HD; i++) out[h * HD + i] += (p[s] / sum) * v[s * KV + kh * HD + i];
  }
  return out;
}

const T = 6;
const q = randomF32(T * Q, 71, 2);
const k = randomF32(T * KV, 72, 2);
const v = randomF32(T * KV, 73);

test('prefill 5 then decode 1 equals recomputing 6; both match the reference', async () => {
  const layer = 1;
  const cache = backend.createKvCache(LAYERS, MAX_TOKENS, KV_HEADS, HD);
  expect(cache.bytes).toBeGreaterThanOrEqual(2 * LAYERS * MAX_TOKENS * KV * 4);

  const prefill = new Float32Array(5 * Q);
  await backend.attention(layer, 5, [cache, cache, cache, cache, cache], Int32Array.from([0, 1, 2, 3, 4]),
    HEADS, KV_HEADS, HD, q.subarray(0, 5 * Q), k.subarray(0, 5 * KV), v.subarray(0, 5 * KV), prefill);
  const decode = new Float32Array(Q);
  await backend.attention(layer, 1, [cache], Int32Array.from([5]), HEADS, KV_HEADS, HD,
    q.subarray(5 * Q), k.subarray(5 * KV), v.subarray(5 * KV), decode);

  const fresh = backend.createKvCache(LAYERS, MAX_TOKENS, KV_HEADS, HD);
  const all = new Float32Array(T * Q);
  await backend.attention(layer, T, Array(T).fill(fresh), Int32Array.from([0, 1, 2, 3, 4, 5]),
    HEADS, KV_HEADS, HD, q, k, v, all);

  expectClose(decode, all.subarray(5 * Q), 1e-6, 1e-5);
  expectClose(prefill, all.subarray(0, 5 * Q), 1e-6, 1e-5);
  for (let t = 0; t < T; t++) expectClose(all.subarray(t * Q, (t + 1) * Q), refAttention(q, k, v, t), 1e-5, 1e-4);
  cache.free();
  fresh.free();
});

test('rows of two sequences in one batch; layers are separate', async () => {
  const a = backend.createKvCache(LAYERS, MAX_TOKENS, KV_HEADS, HD);
  const b = backend.createKvCache(LAYERS, MAX_TOKENS, KV_HEADS, HD);
  // Fill layer 0 of both with the first 3 tokens, then write junk into layer 1 of a.
  const junk = new Float32Array(3 * Q);
  await backend.attention(0, 3, [a, a, a], Int32Array.from([0, 1, 2]), HEADS, KV_HEADS, HD,
    q.subarray(0, 3 * Q), k.subarray(0, 3 * KV), v.subarray(0, 3 * KV), junk);
  await backend.attention(0, 3, [b, b, b], Int32Array.from([0, 1, 2]), HEADS, KV_HEADS, HD,
    q.subarray(0, 3 * Q), k.subarray(0, 3 * KV), v.subarray(0, 3 * KV), junk);
  await backend.attention(1, 3, [a, a, a], Int32Array.from([0, 1, 2]), HEADS, KV_HEADS, HD,
    randomF32(3 * Q, 5), randomF32(3 * KV, 6), randomF32(3 * KV, 7), junk);
  // One batch: token 3 of a and token 3 of b (the same token, so the same output).
  const qq = new Float32Array(2 * Q);
  qq.set(q.subarray(3 * Q, 4 * Q), 0);
  qq.set(q.subarray(3 * Q, 4 * Q), Q);
  const kk = new Float32Array(2 * KV);
  kk.set(k.subarray(3 * KV, 4 * KV), 0);
  kk.set(k.subarray(3 * KV, 4 * KV), KV);
  const vv = new Float32Array(2 * KV);
  vv.set(v.subarray(3 * KV, 4 * KV), 0);
  vv.set(v.subarray(3 * KV, 4 * KV), KV);
  const out = new Float32Array(2 * Q);
  await backend.attention(0, 2, [a, b], Int32Array.from([3, 3]), HEADS, KV_HEADS, HD, qq, kk, vv, out);
  const want = refAttention(q, k, v, 3);
  expectClose(out.subarray(0, Q), want, 1e-5, 1e-4);
  expectClose(out.subarray(Q), want, 1e-5, 1e-4);
});

test('a grown cache keeps every layer it held: decoding past its first size matches the reference', async () => {
  const cache = backend.createKvCache(LAYERS, 3, KV_HEADS, HD);
  expect(cache.maxTokens).toBe(3);
  const small = cache.bytes;
  const sink = new Float32Array(3 * Q);
  for (const layer of [0, 1]) {
    await backend.attention(layer, 3, [cache, cache, cache], Int32Array.from([0, 1, 2]), HEADS, KV_HEADS, HD,
      q.subarray(0, 3 * Q), k.subarray(0, 3 * KV), v.subarray(0, 3 * KV), sink);
  }
  // Position 3 does not fit yet: one clear error, nothing written.
  await expect(backend.attention(0, 1, [cache], Int32Array.from([3]), HEADS, KV_HEADS, HD,
    q.subarray(3 * Q, 4 * Q), k.subarray(3 * KV, 4 * KV), v.subarray(3 * KV, 4 * KV), new Float32Array(Q))).rejects.toThrow(/maxTokens = 3/);

  await backend.growKvCache(cache, 2); // smaller: nothing changes
  expect(cache.maxTokens).toBe(3);
  await backend.growKvCache(cache, T);
  expect(cache.maxTokens).toBe(T);
  expect(cache.bytes).toBe((small / 3) * T);
  for (const layer of [0, 1]) {
    for (let t = 3; t < T; t++) {
      const out = new Float32Array(Q);
      await backend.attention(layer, 1, [cache], Int32Array.from([t]), HEADS, KV_HEADS, HD,
        q.subarray(t * Q, (t + 1) * Q), k.subarray(t * KV, (t + 1) * KV), v.subarray(t * KV, (t + 1) * KV), out);
      expectClose(out, refAttention(q, k, v, t), 1e-5, 1e-4);
    }
  }
  cache.free();
  await expect(backend.growKvCache(cache, 8)).rejects.toThrow(/cache was freed/);
});

test('copyKvCache: a prefix copied into another cache attends as the original', async () => {
  const src = backend.createKvCache(LAYERS, 8, KV_HEADS, HD);
  const sink = new Float32Array(5 * Q);
  await backend.attention(1, 5, Array(5).fill(src), Int32Array.from([0, 1, 2, 3, 4]), HEADS, KV_HEADS, HD,
    q.subarray(0, 5 * Q), k.subarray(0, 5 * KV), v.subarray(0, 5 * KV), sink);
  const dst = backend.createKvCache(LAYERS, MAX_TOKENS, KV_HEADS, HD);
  await expect(backend.copyKvCache(dst, src, 9)).rejects.toThrow(/tokens = 9/);
  await backend.copyKvCache(dst, src, 5);
  const out = new Float32Array(Q);
  await backend.attention(1, 1, [dst], Int32Array.from([5]), HEADS, KV_HEADS, HD, q.subarray(5 * Q), k.subarray(5 * KV), v.subarray(5 * KV), out);
  expectClose(out, refAttention(q, k, v, 5), 1e-5, 1e-4);
  const odd = backend.createKvCache(LAYERS, 8, KV_HEADS, HD * 2);
  await expect(backend.copyKvCache(odd, src, 2)).rejects.toThrow(/differ in shape/);
  for (const c of [src, dst, odd]) c.free();
});

test('bf16 and f16 caches: half the bytes, K/V rounded when written, attention close to f32', async () => {
  for (const dtype of ['bf16', 'f16'] as const) {
    const c = backend.createKvCache(LAYERS, MAX_TOKENS, KV_HEADS, HD, dtype);
    expect(c.bytes).toBe(2 * LAYERS * MAX_TOKENS * KV * 2);
    const all = new Float32Array(T * Q);
    await backend.attention(0, T, Array(T).fill(c), Int32Array.from([0, 1, 2, 3, 4, 5]), HEADS, KV_HEADS, HD, q, k, v, all);
    // Against the reference over K/V as stored (rounded): f32 math only.
    const round = (x: Float32Array) => {
      const out = new Float32Array(x.length);
      for (let i = 0; i < x.length; i++) {
        if (dtype === 'bf16') {
          const u = new Uint32Array(Float32Array.of(x[i]).buffer)[0];
          out[i] = new Float32Array(Uint32Array.of(((u + 0x7fff + ((u >>> 16) & 1)) >>> 16) << 16).buffer)[0];
        } else {
          out[i] = f16Round(x[i]);
        }
      }
      return out;
    };
    const kr = round(k);
    const vr = round(v);
    for (let t = 0; t < T; t++) {
      expectClose(all.subarray(t * Q, (t + 1) * Q), refAttention(q, kr, vr, t), 1e-5, 1e-4);
      expectClose(all.subarray(t * Q, (t + 1) * Q), refAttention(q, k, v, t), 2e-2, 2e-2); // and near the f32 answer
    }
    c.free();
  }
  expect(() => backend.createKvCache(LAYERS, 4, KV_HEADS, HD, 'i8' as never)).toThrow(/dtype must be "f32", "f16" or "bf16"/);
});

/** Round to the nearest f16 (ties to even), for the values of this test (normal range). */
function f16Round(x: number): number {
  if (x === 0) return 0;
  const e = Math.floor(Math.log2(Math.abs(x)));
  const ulp = 2 ** (e - 10);
  const m = x / ulp;
  const r = Math.round(m);
  const even = Math.abs(m - Math.trunc(m)) === 0.5 ? 2 * Math.round(m / 2) : r;
  return even * ulp;
}
