// Writes a small random TurboSparse-Mixtral checkpoint in the released layout:
// config.json, bf16 weights in sharded safetensors + model.safetensors.index.json,
// a tokenizer.json / tokenizer_config.json built here (core/demo-tokenizer.ts).
// Every tensor is drawn from its own PRNG stream seeded by (seed, tensor name),
// so the values do not depend on the shard layout or on the write order.
import fs from 'node:fs';
import path from 'node:path';
import { UserError } from './errors';
import { fromF32 } from './dtype';
import { writeSafetensors, type TensorDType, type TensorToWrite } from './safetensors';
import { names, INDEX_FILE, SINGLE_FILE } from './model-folder';
import { makeDemoTokenizer, MIN_DEMO_VOCAB } from './demo-tokenizer';

export interface DemoModelOptions {
  layers: number;
  hidden: number;
  intermediate: number;
  heads: number;
  kvHeads: number;
  experts: number;
  topK: number;
  vocab: number;
  /** Predictor width, one for all layers or one per layer. */
  predictorRank: number | number[];
  /** Number of safetensors shards; 1 writes model.safetensors without an index. */
  shards: number;
  dtype: 'bf16' | 'f32' | 'f16';
  seed: number;
  /** Fraction of expert neurons the predictors mark active for a typical token. */
  activeFraction: number;
  /**
   * Routing skew: 0 draws every router row alike (experts about equally hot); S > 0
   * makes some experts of each layer hot and others cold (S = 1: the hottest about
   * 2-3x the mean share of routes), a different order in every layer. See routerSkew().
   */
  routerSkew: number;
}

export const DEMO_DEFAULTS: DemoModelOptions = {
  layers: 4,
  hidden: 256,
  intermediate: 1024,
  heads: 8,
  kvHeads: 4,
  experts: 8,
  topK: 2,
  vocab: 1024,
  predictorRank: 128,
  shards: 2,
  dtype: 'bf16',
  seed: 42,
  activeFraction: 0.15,
  routerSkew: 0,
};

// ---- A small seeded PRNG: splitmix32 seeding xoshiro128**, polar-method normals ----

// Local bindings: inside a vm context (jest) every global lookup such as `Math.imul`
// goes through an interceptor and makes the hot loop ~50x slower.
const { imul, log, sqrt } = Math;

function splitmix32(state: number): () => number {
  let a = state | 0;
  return () => {
    a = (a + 0x9e3779b9) | 0;
    let t = a ^ (a >>> 16);
    t = imul(t, 0x21f0aaad);
    t ^= t >>> 15;
    t = imul(t, 0x735a2d97);
    return (t ^ (t >>> 15)) >>> 0;
  };
}

function fnv1a(text: string): number {
  let h = 0x811c9dc5;
  for (let i = 0; i < text.length; i++) {
    h ^= text.charCodeAt(i);
    h = imul(h, 0x01000193);
  }
  return h >>> 0;
}

export class Rng {
  private s0: number;
  private s1: number;
  private s2: number;
  private s3: number;
  private spare: number | null = null;

  /** `stream` picks an independent sequence for the same seed (e.g. a tensor name). */
  constructor(seed: number, stream = '') {
    const lo = seed >>> 0;
    const hi = Math.floor(seed / 0x100000000) >>> 0;
    const mix = splitmix32(lo ^ imul(hi, 0x27d4eb2f) ^ fnv1a(stream));
    this.s0 = mix();
    this.s1 = mix();
    this.s2 = mix();
    this.s3 = mix() | 1; // never the all-zero state
  }

  /** xoshiro128**: a uniform uint32. */
  nextU32(): number {
    const result = imul(rotl(imul(this.s1, 5), 7), 9);
    const t = this.s1 << 9;
    this.s2 ^= this.s0;
    this.s3 ^= this.s1;
    this.s1 ^= this.s2;
    this.s0 ^= this.s3;
    this.s2 ^= t;
    this.s3 = rotl(this.s3, 11);
    return result >>> 0;
  }

  /** Uniform in (0, 1), never exactly 0 or 1. */
  uniform(): number {
    return (this.nextU32() + 0.5) / 4294967296;
  }

  /** One N(0, 1) draw (Box-Muller; fillNormal is the fast path for arrays). */
  normal(): number {
    if (this.spare !== null) {
      const s = this.spare;
      this.spare = null;
      return s;
    }
    const r = Math.sqrt(-2 * Math.log(this.uniform()));
    const theta = 2 * Math.PI * this.uniform();
    this.spare = r * Math.sin(theta);
    return r * Math.cos(theta);
  }

  /** Fills `out` with mean + std * N(0, 1): Marsaglia's polar method with the generator inlined (the hot loop). */
  fillNormal(out: Float32Array, mean: number, std: number): Float32Array {
    let s0 = this.s0, s1 = this.s1, s2 = this.s2, s3 = this.s3;
    const INV = 1 / 2147483648; // a signed int32 -> [-1, 1)
    for (let i = 0; i < out.length; i += 2) {
      let u: number, v: number, q: number;
      do {
        let r = imul(rotl(imul(s1, 5), 7), 9);
        let t = s1 << 9;
        s2 ^= s0; s3 ^= s1; s1 ^= s2; s0 ^= s3; s2 ^= t; s3 = rotl(s3, 11);
        u = r * INV;
        r = imul(rotl(imul(s1, 5), 7), 9);
        t = s1 << 9;
        s2 ^= s0; s3 ^= s1; s1 ^= s2; s0 ^= s3; s2 ^= t; s3 = rotl(s3, 11);
        v = r * INV;
        q = u * u + v * v;
      } while (q >= 1 || q === 0);
      const f = std * sqrt((-2 * log(q)) / q);
      out[i] = mean + u * f;
      if (i + 1 < out.length) out[i + 1] = mean + v * f;
    }
    this.s0 = s0; this.s1 = s1; this.s2 = s2; this.s3 = s3;
    return out;
  }
}

function rotl(x: number, k: number): number {
  return (x << k) | (x >>> (32 - k));
}

/** The standard normal quantile (Acklam's rational approximation, |error| < 1.2e-9). */
function normalQuantile(p: number): number {
  const a = [-39.69683028665376, 220.9460984245205, -275.9285104469687, 138.357751867269, -30.66479806614716, 2.506628274631];
  const b = [-54.47609879822406, 161.5858368580409, -155.6989798598866, 66.80131188771972, -13.28068155288572];
  const c = [-0.007784894002430293, -0.3223964580411365, -2.400758277161838, -2.549732539343734, 4.374664141464968, 2.938163982698783];
  const d = [0.007784695709041462, 0.3224671290700398, 2.445134137142996, 3.754408661907416];
  const lo = 0.02425;
  if (p < lo) {
    const q = Math.sqrt(-2 * Math.log(p));
    return (((((c[0] * q + c[1]) * q + c[2]) * q + c[3]) * q + c[4]) * q + c[5]) / ((((d[0] * q + d[1]) * q + d[2]) * q + d[3]) * q + 1);
  }
  if (p > 1 - lo) return -normalQuantile(1 - p);
  const q = p - 0.5;
  const r = q * q;
  return ((((((a[0] * r + a[1]) * r + a[2]) * r + a[3]) * r + a[4]) * r + a[5]) * q) / (((((b[0] * r + b[1]) * r + b[2]) * r + b[3]) * r + b[4]) * r + 1);
}

// ---- The checkpoint ----

interface TensorSpec {
  name: string;
  shape: number[];
  mean: number;
  std: number;
  /** Optional factor per row (first dimension). */
  rowScale?: (row: number) => number;
  /** Optional term added after drawing (and scaling): rows are [shape[0], values / shape[0]]. */
  add?: (values: Float32Array) => void;
}

function checkOptions(o: DemoModelOptions): number[] {
  const positive: (keyof DemoModelOptions)[] = ['layers', 'hidden', 'intermediate', 'heads', 'kvHeads', 'experts', 'topK', 'vocab', 'shards'];
  for (const k of positive) {
    const v = o[k];
    if (typeof v !== 'number' || !Number.isInteger(v) || v <= 0) throw new UserError(`demo model: ${k} must be a positive integer, got ${String(v)}`);
  }
  if (o.hidden % o.heads !== 0) throw new UserError(`demo model: hidden (${o.hidden}) must be a multiple of heads (${o.heads})`);
  if (o.heads % o.kvHeads !== 0) throw new UserError(`demo model: heads (${o.heads}) must be a multiple of kvHeads (${o.kvHeads})`);
  if ((o.hidden / o.heads) % 2 !== 0) throw new UserError(`demo model: the head dimension hidden/heads (${o.hidden / o.heads}) must be even for rotary embeddings`);
  if (o.vocab < MIN_DEMO_VOCAB) throw new UserError(`demo model: vocab must be at least ${MIN_DEMO_VOCAB} (3 special tokens, 256 byte tokens, '▁', 2 chat markers), got ${o.vocab}`);
  if (o.topK > o.experts) throw new UserError(`demo model: topK (${o.topK}) must be at most experts (${o.experts})`);
  if (!['bf16', 'f32', 'f16'].includes(o.dtype)) throw new UserError(`demo model: dtype must be bf16, f16 or f32, got ${String(o.dtype)}`);
  if (!Number.isSafeInteger(o.seed) || o.seed < 0) throw new UserError(`demo model: seed must be a non-negative integer, got ${String(o.seed)}`);
  if (!(o.activeFraction > 0 && o.activeFraction < 1)) throw new UserError(`demo model: activeFraction must be between 0 and 1, got ${String(o.activeFraction)}`);
  if (typeof o.routerSkew !== 'number' || !Number.isFinite(o.routerSkew) || o.routerSkew < 0) {
    throw new UserError(`demo model: routerSkew must be a number >= 0 (0 = no skew), got ${String(o.routerSkew)}`);
  }
  const ranks = Array.isArray(o.predictorRank) ? o.predictorRank : new Array<number>(o.layers).fill(o.predictorRank);
  if (ranks.length !== o.layers) throw new UserError(`demo model: predictorRank lists ${ranks.length} values for ${o.layers} layers`);
  for (const r of ranks) {
    if (!Number.isInteger(r) || r <= 0) throw new UserError(`demo model: predictor rank must be a positive integer, got ${String(r)}`);
  }
  return ranks;
}

/** Every tensor of the model, in model order, with the distribution it is drawn from. */
function tensorSpecs(o: DemoModelOptions, ranks: number[]): TensorSpec[] {
  const H = o.hidden;
  const I = o.intermediate;
  const headDim = H / o.heads;
  const qDim = o.heads * headDim;
  const kvDim = o.kvHeads * headDim;
  const w = (name: string, rows: number, cols: number): TensorSpec => ({ name, shape: [rows, cols], mean: 0, std: 1 / Math.sqrt(cols) });
  const norm = (name: string, add?: (v: Float32Array) => void): TensorSpec => ({ name, shape: [H], mean: 1, std: 0.1, add });
  const skew = o.routerSkew > 0 ? routerSkew(o) : undefined;
  const specs: TensorSpec[] = [{ name: names.embed, shape: [o.vocab, H], mean: 0, std: 0.5, add: skew?.embed }];
  for (let l = 0; l < o.layers; l++) {
    specs.push(norm(names.inputNorm(l), skew?.inputNorm), w(names.q(l), qDim, H), w(names.k(l), kvDim, H), w(names.v(l), kvDim, H), w(names.o(l), H, qDim));
    specs.push(norm(names.postNorm(l)), { ...w(names.gate(l), o.experts, H), add: skew?.gate(l) });
    const r = ranks[l];
    // The predictor's mask is fc2(relu(fc1 n)) > 0 with no bias. With fc1 ~ N(0, 1/H) and a
    // unit-RMS input, relu(fc1 n) has r entries of mean m = 1/sqrt(2 pi) and mean square 1/2;
    // fc2 ~ N(mu, 1/r) then gives a logit with mean mu*r*m and std sqrt(1/2). Choosing
    // mu = -z * sqrt(1/2) / (r*m) with z the (1 - activeFraction) normal quantile puts about
    // activeFraction of the logits above zero.
    const z = normalQuantile(1 - o.activeFraction);
    const m = 1 / Math.sqrt(2 * Math.PI);
    const mu = (-z * Math.SQRT1_2) / (r * m);
    for (let e = 0; e < o.experts; e++) {
      specs.push(w(names.w1(l, e), I, H), w(names.w2(l, e), H, I), w(names.w3(l, e), I, H));
      specs.push(w(names.fc1(l, e), r, H), { name: names.fc2(l, e), shape: [I, r], mean: mu, std: 1 / Math.sqrt(r) });
    }
  }
  // Shrink the lm_head rows of control and byte-fallback tokens so that a random model
  // mostly emits word pieces (readable demo output) rather than stray bytes, and reaches
  // EOS only now and then.
  const lmHead: TensorSpec = { ...w(names.lmHead, o.vocab, H), rowScale: (row) => (row === 2 ? 0.5 : row < 3 + 256 || row >= o.vocab - 2 ? 0.1 : 1) };
  specs.push(norm(names.finalNorm), lmHead);
  return specs;
}

/**
 * Skewed routing through the router's weights (Mixtral's router has no bias). One
 * hidden dimension c becomes a routing channel: every token embedding gets a large
 * constant there, the attention does not read it (input-norm weight 0), so the
 * residual stream carries it through every layer and each router input after its
 * RMSNorm holds about A / rms(x_l) there for every token. Gate column c is then a
 * bias per expert: S * SKEW_GAIN * (the normal quantile of the expert's rank) in units of
 * the logits' token-to-token spread (~1), ranks from a per-layer permutation, so
 * experts range from hot to cold and a different one is hottest in each layer.
 */
function routerSkew(o: DemoModelOptions): {
  embed: (v: Float32Array) => void;
  inputNorm: (v: Float32Array) => void;
  gate: (layer: number) => (v: Float32Array) => void;
} {
  const H = o.hidden;
  const E = o.experts;
  const c = new Rng(o.seed, 'router-skew.channel').nextU32() % H;
  const A = CHANNEL_VALUE;
  // The router input's value at c: A over the residual's RMS, which grows with the layers'
  // outputs (measured on the default demo model: rms(x_l)^2 ~ (A^2 + 0.25 H) / H + 0.1 l + 0.2 l^2).
  const channelAt = (l: number) => A / Math.sqrt((A * A + 0.25 * H) / H + 0.1 * l + 0.2 * l * l);
  return {
    embed: (v) => {
      for (let r = 0; r < v.length / H; r++) v[r * H + c] += A;
    },
    inputNorm: (v) => {
      v[c] = 0;
    },
    gate: (l) => (v) => {
      const rank = routerSkewRanks(o.seed, l, E);
      for (let e = 0; e < E; e++) v[e * H + c] = (o.routerSkew * SKEW_GAIN * normalQuantile((E - rank[e] - 0.5) / E)) / channelAt(l);
    },
  };
}

/** Each expert's rank in a skewed layer (0 = hottest): a seeded Fisher-Yates shuffle, different per layer. */
export function routerSkewRanks(seed: number, layer: number, experts: number): number[] {
  const rank = Array.from({ length: experts }, (_, i) => i);
  const rng = new Rng(seed, `router-skew.order.${layer}`);
  for (let i = experts - 1; i > 0; i--) {
    const k = rng.nextU32() % (i + 1);
    [rank[i], rank[k]] = [rank[k], rank[i]];
  }
  return rank;
}

/** Logit bias per unit of S and of the rank's normal quantile (measured: S = 1 puts the hottest expert at ~2-3x the mean share). */
const SKEW_GAIN = 0.5;

/** The routing channel's constant in every token embedding (the other values have RMS 0.5). */
const CHANNEL_VALUE = 6;

const DTYPE_NAME: Record<DemoModelOptions['dtype'], TensorDType> = { bf16: 'BF16', f16: 'F16', f32: 'F32' };
const TORCH_DTYPE: Record<DemoModelOptions['dtype'], string> = { bf16: 'bfloat16', f16: 'float16', f32: 'float32' };

/** Splits tensors (in model order) into `shards` contiguous groups of about equal bytes. */
function assignShards(bytes: number[], shards: number): number[] {
  const total = bytes.reduce((a, b) => a + b, 0);
  let start = 0;
  const out = bytes.map((b) => {
    const s = Math.min(shards - 1, Math.floor(((start + b / 2) / total) * shards));
    start += b;
    return s;
  });
  const used = new Set(out);
  if (used.size === shards) return out;
  return bytes.map((_, i) => Math.floor((i * shards) / bytes.length)); // one huge tensor: split by count
}

export function shardFileName(i: number, n: number): string {
  const p = (x: number) => String(x).padStart(5, '0');
  return `model-${p(i + 1)}-of-${p(n)}.safetensors`;
}

/** Writes a random TurboSparse-Mixtral checkpoint into `dir` (created if needed). */
export async function makeDemoModel(dir: string, opts: Partial<DemoModelOptions> = {}): Promise<void> {
  const o: DemoModelOptions = { ...DEMO_DEFAULTS, ...opts };
  const ranks = checkOptions(o);
  const specs = tensorSpecs(o, ranks);
  if (o.shards > specs.length) throw new UserError(`demo model: shards (${o.shards}) must be at most the number of tensors (${specs.length})`);
  const dtype = DTYPE_NAME[o.dtype];
  const elemBytes = dtype === 'F32' ? 4 : 2;
  const maxPositions = 4096;
  const tok = makeDemoTokenizer(o.vocab, maxPositions);

  await fs.promises.mkdir(dir, { recursive: true });
  // Stale weights from an earlier run with another shard count would shadow the new ones.
  for (const f of await fs.promises.readdir(dir)) {
    if (f === INDEX_FILE || f === SINGLE_FILE || /^model-\d+-of-\d+\.safetensors$/.test(f)) await fs.promises.rm(path.join(dir, f));
  }

  const config = {
    architectures: ['TurboSparseMixtralForCausalLM'],
    model_type: 'turbosparsemixtral',
    hidden_size: o.hidden,
    intermediate_size: o.intermediate,
    num_hidden_layers: o.layers,
    num_attention_heads: o.heads,
    num_key_value_heads: o.kvHeads,
    head_dim: o.hidden / o.heads,
    num_local_experts: o.experts,
    num_experts_per_tok: o.topK,
    rope_theta: 1000000.0,
    rms_norm_eps: 1e-5,
    max_position_embeddings: maxPositions,
    sliding_window: null,
    hidden_act: 'relu',
    vocab_size: o.vocab,
    tie_word_embeddings: false,
    bos_token_id: 1,
    eos_token_id: [2, tok.imEndId],
    torch_dtype: TORCH_DTYPE[o.dtype],
    router_jitter_noise: 0.0,
    router_aux_loss_coef: 0.02,
    output_router_logits: false,
    initializer_range: 0.02,
    attention_dropout: 0.0,
    use_cache: true,
    // router_skew only when set: a model without skew stays byte for byte what it was.
    demo: { seed: o.seed, active_fraction: o.activeFraction, ...(o.routerSkew > 0 ? { router_skew: o.routerSkew } : {}) },
  };
  const writeJson = (name: string, value: unknown) => fs.promises.writeFile(path.join(dir, name), `${JSON.stringify(value, null, 2)}\n`);
  await writeJson('config.json', config);
  await writeJson('tokenizer.json', tok.tokenizerJson);
  await writeJson('tokenizer_config.json', tok.tokenizerConfig);

  const toWrite = (s: TensorSpec): TensorToWrite => ({
    name: s.name,
    dtype,
    shape: s.shape,
    data: () => {
      const values = new Rng(o.seed, s.name).fillNormal(new Float32Array(s.shape.reduce((a, b) => a * b, 1)), s.mean, s.std);
      if (s.rowScale) {
        const cols = values.length / s.shape[0];
        for (let r = 0; r < s.shape[0]; r++) {
          const k = s.rowScale(r);
          if (k !== 1) for (let j = r * cols; j < (r + 1) * cols; j++) values[j] *= k;
        }
      }
      s.add?.(values);
      return fromF32(dtype, values);
    },
  });
  const metadata = { format: 'pt' };
  const byName = (a: TensorSpec, b: TensorSpec) => (a.name < b.name ? -1 : 1);
  if (o.shards === 1) {
    await writeSafetensors(path.join(dir, SINGLE_FILE), [...specs].sort(byName).map(toWrite), metadata);
    return;
  }
  const bytes = specs.map((s) => s.shape.reduce((a, b) => a * b, 1) * elemBytes);
  const shardOf = assignShards(bytes, o.shards);
  const weightMap: Record<string, string> = {};
  for (let i = 0; i < o.shards; i++) {
    const file = shardFileName(i, o.shards);
    const mine = specs.filter((_, j) => shardOf[j] === i).sort(byName);
    for (const s of mine) weightMap[s.name] = file;
    await writeSafetensors(path.join(dir, file), mine.map(toWrite), metadata);
  }
  const sortedMap = Object.fromEntries(Object.entries(weightMap).sort(([a], [b]) => (a < b ? -1 : 1)));
  await writeJson(INDEX_FILE, { metadata: { total_size: bytes.reduce((a, b) => a + b, 0) }, weight_map: sortedMap });
}
