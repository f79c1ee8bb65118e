// Turns one row of logits into a token: greedy at temperature 0, otherwise
// temperature -> top-k -> top-p (nucleus) -> a draw from a seeded generator,
// so the same seed gives the same tokens.

export interface SamplingParams {
  temperature: number; // 0 = greedy
  topK: number; // 0 = off
  topP: number; // 1 = off
  seed?: number;
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

export function sample(logits: Float32Array, p: SamplingParams, rng: Rng): number {
  if (p.temperature <= 0) return argmax(logits);
  const V = logits.length;
  let ids = Array.from({ length: V }, (_, i) => i).sort((a, b) => logits[b] - logits[a] || a - b);
  if (p.topK > 0 && p.topK < V) ids = ids.slice(0, p.topK);
  const maxLogit = logits[ids[0]];
  let probs = ids.map((i) => Math.exp((logits[i] - maxLogit) / p.temperature));
  let total = probs.reduce((s, x) => s + x, 0);
  if (p.topP < 1) {
    let cum = 0;
    let keep = ids.length;
    for (let j = 0; j < ids.length; j++) {
      cum += probs[j] / total;
      if (cum >= p.topP) {
        keep = j + 1;
        break;
      }
    }
    ids = ids.slice(0, keep);
    probs = probs.slice(0, keep);
    total = probs.reduce((s, x) => s + x, 0);
  }
  let r = rng.next() * total;
  for (let j = 0; j < ids.length; j++) {
    r -= probs[j];
    if (r < 0) return ids[j];
  }
  return ids[ids.length - 1];
}
