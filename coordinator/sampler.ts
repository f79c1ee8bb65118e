// Turns one row of logits into a token: logit bias, penalties (repetition, then
// frequency and presence, as vLLM orders them), then greedy at temperature 0,
// otherwise temperature -> min-p -> top-k -> top-p (nucleus) -> a draw from a
// seeded generator, so the same seed gives the same tokens.

export interface SamplingParams {
  temperature: number; // 0 = greedy
  topK: number; // 0 = off
  topP: number; // 1 = off
  seed?: number;
  /** vLLM/llama.cpp: drop tokens less likely than minP times the most likely one. 0 = off. */
  minP?: number;
  /** OpenAI logit_bias: added to these tokens' logits (-100 bans, +100 forces). */
  logitBias?: ReadonlyMap<number, number>;
  /** OpenAI: subtracted once from every token already in the output. 0 = off. */
  presencePenalty?: number;
  /** OpenAI: subtracted per occurrence of a token in the output. 0 = off. */
  frequencyPenalty?: number;
  /** vLLM/transformers: logits of tokens in the prompt or output divided (positive) or multiplied (negative) by it. 1 = off. */
  repetitionPenalty?: number;
}

export const GREEDY: SamplingParams = { temperature: 0, topK: 0, topP: 1 };

/** A small, fast, seedable generator (mulberry32 over a 32-bit state from a 53-bit seed). */
export class Rng {
  private state: number;
  constructor(seed: number) {
    // Fold the high bits in so seeds above 2^32 still differ.
    this.state = (seed ^ Math.floor(seed / 2 ** 32)) >>> 0;
  }
  /** Uniform in [0, 1). */
  next(): number {
    let t = (this.state = (this.state + 0x6d2b79f5) >>> 0);
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  }
}

export function argmax(logits: Float32Array): number {
  let best = 0;
  for (let i = 1; i < logits.length; i++) if (logits[i] > logits[best]) best = i;
  return best;
}

/** Probabilities below this fraction of the top one are dropped before sorting: e^-30 adds nothing a float can hold. */
const NEGLIGIBLE_LOGIT_GAP = 30;

/** The k largest logits at or above `floor`, best first (ties: lower id), by bounded insertion. */
export function topKIds(logits: Float32Array, k: number, floor: number): number[] {
  const ids: number[] = [];
  for (let i = 0; i < logits.length; i++) {
    const x = logits[i];
    if (x < floor) continue;
    if (ids.length === k) {
      if (x <= logits[ids[k - 1]]) continue;
      ids.pop();
    }
    let j = ids.length;
    while (j > 0 && logits[ids[j - 1]] < x) j--;
    ids.splice(j, 0, i);
  }
  return ids;
}

/** How many of the descending `sorted` logits make up top-p of their probability mass. */
function nucleusSize(sorted: ArrayLike<number>, maxLogit: number, p: SamplingParams): number {
  const w = Array.from(sorted, (x) => Math.exp((x - maxLogit) / p.temperature));
  const total = w.reduce((s, x) => s + x, 0);
  let cum = 0;
  for (let j = 0; j < w.length; j++) {
    cum += w[j] / total;
    if (cum >= p.topP) return j + 1;
  }
  return w.length;
}

export function sample(logits: Float32Array, p: SamplingParams, rng: Rng): number {
  if (p.temperature <= 0) return argmax(logits);
  return draw(candidates(logits, p), rng);
}

/** The tokens sampling can draw (temperature, min-p, top-k, top-p applied) and their unnormalised weights. */
interface Candidates {
  ids: number[];
  probs: number[];
  total: number;
}

function draw(c: Candidates, rng: Rng): number {
  let r = rng.next() * c.total;
  for (let j = 0; j < c.ids.length; j++) {
    r -= c.probs[j];
    if (r < 0) return c.ids[j];
  }
  return c.ids[c.ids.length - 1];
}

/**
 * Speculative verification of one proposed token: the token this position emits, and whether it
 * is the proposal. Greedy: the argmax (identical to `sample`). Sampling: the proposal is kept with
 * its probability p(x), else a token is drawn from p without x (renormalised); for a proposal that is
 * one fixed token this emits exactly the law of `sample` (the standard acceptance rule with q = 1 at x).
 */
export function sampleVerifying(logits: Float32Array, p: SamplingParams, rng: Rng, proposal: number): { token: number; accepted: boolean } {
  if (p.temperature <= 0) {
    const token = argmax(logits);
    return { token, accepted: token === proposal };
  }
  const c = candidates(logits, p);
  const at = c.ids.indexOf(proposal);
  const px = at < 0 ? 0 : c.probs[at] / c.total;
  if (px > 0 && rng.next() < px) return { token: proposal, accepted: true };
  if (at < 0) return { token: draw(c, rng), accepted: false };
  const rest: Candidates = { ids: c.ids.filter((_, j) => j !== at), probs: c.probs.filter((_, j) => j !== at), total: c.total - c.probs[at] };
  if (!(rest.total > 0)) return { token: proposal, accepted: true }; // the others' mass rounds to 0
  return { token: draw(rest, rng), accepted: false };
}

function candidates(logits: Float32Array, p: SamplingParams): Candidates {
  const V = logits.length;
  // Only tokens within reach of the maximum can be drawn: select them in one pass
  // instead of sorting the whole vocabulary (32k+) for every token.
  const maxLogit = logits[argmax(logits)];
  // min-p: p_i >= minP * p_max  <=>  logit_i >= maxLogit + T * ln(minP).
  const minP = p.minP ?? 0;
  const floor = maxLogit - (minP > 0 ? Math.min(NEGLIGIBLE_LOGIT_GAP, -Math.log(minP)) : NEGLIGIBLE_LOGIT_GAP) * p.temperature;
  let ids: number[];
  if (p.topK > 0) {
    ids = topKIds(logits, p.topK, floor);
    if (p.topP < 1) ids = ids.slice(0, nucleusSize(ids.map((i) => logits[i]), maxLogit, p));
  } else {
    // No top-k: find the nucleus' smallest logit with a typed-array sort of the values,
    // then keep the tokens at or above it in id order (any fixed order draws the same law).
    let cutoff = floor;
    if (p.topP < 1) {
      const vals = logits.filter((x) => x >= floor).sort().reverse(); // filter of a Float32Array is one
      cutoff = vals[nucleusSize(vals, maxLogit, p) - 1];
    }
    ids = [];
    for (let i = 0; i < V; i++) if (logits[i] >= cutoff) ids.push(i);
  }
  const probs = ids.map((i) => Math.exp((logits[i] - maxLogit) / p.temperature));
  const total = probs.reduce((s, x) => s + x, 0);
  return { ids, probs, total };
}

/**
 * What the penalties look at, kept up to date as tokens come out (not rebuilt per token):
 * how often each token came out, and (built on first use, for the repetition penalty) the
 * set of tokens in the prompt or the output.
 */
export class TokenHistory {
  readonly counts = new Map<number, number>();
  private seenSet: Set<number> | null = null;

  constructor(private readonly promptIds: readonly number[], outputIds: readonly number[] = []) {
    for (const id of outputIds) this.add(id);
  }

  add(id: number): void {
    this.counts.set(id, (this.counts.get(id) ?? 0) + 1);
    this.seenSet?.add(id);
  }

  get seen(): ReadonlySet<number> {
    return (this.seenSet ??= new Set([...this.promptIds, ...this.counts.keys()]));
  }
}

/**
 * The logits with the logit bias and penalties applied, and `banned` tokens (stop ids before
 * min_tokens) at -Infinity: a copy, or the same array when there is nothing to do.
 */
export function applyPenalties(logits: Float32Array, p: SamplingParams, history: TokenHistory, banned: readonly number[] = []): Float32Array {
  const rep = p.repetitionPenalty ?? 1;
  const freq = p.frequencyPenalty ?? 0;
  const pres = p.presencePenalty ?? 0;
  const bias = p.logitBias;
  if (rep === 1 && freq === 0 && pres === 0 && !bias?.size && banned.length === 0) return logits;
  const out = logits.slice();
  if (bias) for (const [id, b] of bias) out[id] += b;
  if (rep !== 1) for (const id of history.seen) out[id] = out[id] > 0 ? out[id] / rep : out[id] * rep;
  if (freq !== 0 || pres !== 0) for (const [id, c] of history.counts) out[id] -= freq * c + pres;
  for (const id of banned) out[id] = -Infinity;
  return out;
}
