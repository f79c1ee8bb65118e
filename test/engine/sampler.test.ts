import { logprobEntry } from '../../coordinator/logprobs';
import { applyPenalties, argmax, GREEDY, Rng, sample, TokenHistory } from '../../coordinator/sampler';

describe('sampler', () => {
  const logits = Float32Array.from([0.1, 2.0, 1.9, -1, 0.5, 1.95]);

  test('temperature 0 is argmax (first index on ties)', () => {
    expect(sample(logits, { temperature: 0, topK: 0, topP: 1 }, new Rng(1))).toBe(1);
    expect(argmax(Float32Array.from([3, 5, 5]))).toBe(1);
  });

  test('the same seed gives the same draws; different seeds differ', () => {
    const draw = (seed: number) => {
      const rng = new Rng(seed);
      return Array.from({ length: 50 }, () => sample(logits, { temperature: 1, topK: 0, topP: 1 }, rng));
    };
    expect(draw(7)).toEqual(draw(7));
    expect(draw(7)).not.toEqual(draw(8));
  });

  test('top-k 1 and tiny top-p reduce to greedy', () => {
    const rng = new Rng(3);
    for (let i = 0; i < 20; i++) {
      expect(sample(logits, { temperature: 2, topK: 1, topP: 1 }, rng)).toBe(1);
      expect(sample(logits, { temperature: 2, topK: 0, topP: 0.01 }, rng)).toBe(1);
    }
  });

  test('top-k keeps only the k most likely tokens', () => {
    const rng = new Rng(11);
    const seen = new Set<number>();
    for (let i = 0; i < 500; i++) seen.add(sample(logits, { temperature: 5, topK: 3, topP: 1 }, rng));
    expect([...seen].sort()).toEqual([1, 2, 5]);
  });

  test('draws follow the softmax distribution', () => {
    const two = Float32Array.from([0, Math.log(3)]); // p = 0.25, 0.75
    const rng = new Rng(5);
    let ones = 0;
    const N = 20000;
    for (let i = 0; i < N; i++) ones += sample(two, { temperature: 1, topK: 0, topP: 1 }, rng);
    expect(ones / N).toBeGreaterThan(0.73);
    expect(ones / N).toBeLessThan(0.77);
  });
  test('top-p keeps the smallest set of most likely tokens whose mass reaches p', () => {
    // p = 0.5, 0.25, 0.15, 0.1 for ids 2, 0, 3, 1
    const l = Float32Array.from([0.25, 0.1, 0.5, 0.15].map(Math.log));
    const drawn = (topP: number, topK = 0) => {
      const rng = new Rng(9);
      const seen = new Set<number>();
      for (let i = 0; i < 2000; i++) seen.add(sample(l, { temperature: 1, topK, topP }, rng));
      return [...seen].sort();
    };
    expect(drawn(0.7)).toEqual([0, 2]);
    expect(drawn(0.8)).toEqual([0, 2, 3]);
    expect(drawn(0.95)).toEqual([0, 1, 2, 3]);
    expect(drawn(0.45)).toEqual([2]);
    // After top-k the mass is renormalised over the k kept: 0.5/0.75 reaches 0.6 alone.
    expect(drawn(0.6, 2)).toEqual([2]);
    expect(drawn(0.7, 2)).toEqual([0, 2]);
  });

  test('penalties: repetition scales seen logits toward lower, then frequency and presence subtract per output count', () => {
    const l = Float32Array.from([2, -1, 0.5, 3, 1]);
    expect(applyPenalties(l, GREEDY, new TokenHistory([0], [1]))).toBe(l); // none set: the same array
    const rep = applyPenalties(l, { ...GREEDY, repetitionPenalty: 2 }, new TokenHistory([0, 1], [1, 3]));
    expect(Array.from(rep)).toEqual([1, -2, 0.5, 1.5, 1]);
    const fp = applyPenalties(l, { ...GREEDY, frequencyPenalty: 0.5, presencePenalty: 0.25 }, new TokenHistory([0], [3, 3, 1]));
    expect(Array.from(fp)).toEqual([2, -1.75, 0.5, 3 - 1 - 0.25, 1]);
    expect(Array.from(l)).toEqual([2, -1, 0.5, 3, 1]); // the model's logits are left alone
    // Greedy after a presence penalty moves off the penalised best token.
    expect(sample(applyPenalties(l, { ...GREEDY, presencePenalty: 2 }, new TokenHistory([], [3])), GREEDY, new Rng(1))).toBe(0);
  });

  test('logprob entries are log-softmax of the raw logits with the most likely alternatives first', () => {
    const l = Float32Array.from([0, Math.log(3), Math.log(6)]); // p = 0.1, 0.3, 0.6
    const e = logprobEntry(l, 1, 2);
    expect(e.id).toBe(1);
    expect(e.logprob).toBeCloseTo(Math.log(0.3), 6);
    expect(e.top.map((t) => t.id)).toEqual([2, 1]);
    expect(e.top[0].logprob).toBeCloseTo(Math.log(0.6), 6);
    expect(logprobEntry(l, 0, 0).top).toEqual([]);
  });

  test('min-p keeps the tokens at least min_p times as likely as the best one', () => {
    const l = Float32Array.from([0.5, 0.3, 0.15, 0.05].map(Math.log));
    const drawn = (minP: number) => {
      const rng = new Rng(21);
      const seen = new Set<number>();
      for (let i = 0; i < 3000; i++) seen.add(sample(l, { temperature: 1, topK: 0, topP: 1, minP }, rng));
      return [...seen].sort();
    };
    expect(drawn(0)).toEqual([0, 1, 2, 3]);
    expect(drawn(0.2)).toEqual([0, 1, 2]); // p >= 0.1
    expect(drawn(0.5)).toEqual([0, 1]); // p >= 0.25
    expect(drawn(1)).toEqual([0]);
  });

  test('logit bias is added before the penalties; banned tokens (stop ids before min_tokens) cannot be drawn', () => {
    const l = Float32Array.from([2, -1, 0.5, 3, 1]);
    const biased = applyPenalties(l, { ...GREEDY, logitBias: new Map([[1, 10], [3, -100]]) }, new TokenHistory([]));
    expect(Array.from(biased)).toEqual([2, 9, 0.5, -97, 1]);
    expect(sample(biased, GREEDY, new Rng(1))).toBe(1);
    const banned = applyPenalties(l, GREEDY, new TokenHistory([]), [3, 0]);
    expect(banned[3]).toBe(-Infinity);
    expect(sample(banned, GREEDY, new Rng(1))).toBe(4);
    const rng = new Rng(2);
    for (let i = 0; i < 200; i++) expect([0, 3]).not.toContain(sample(banned, { temperature: 2, topK: 0, topP: 1 }, rng));
  });
});
