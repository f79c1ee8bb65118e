import { NgramProposer } from '../../coordinator/speculative/ngram';

/** The definition, by brute force: the most recent earlier occurrence of the last n tokens, n = N..1. */
function reference(tokens: readonly number[], k: number, n: number): number[] {
  const len = tokens.length;
  for (let m = Math.min(n, len - 1); m >= 1; m--) {
    for (let e = len - 1; e >= m; e--) {
      let same = true;
      for (let j = 1; j <= m && same; j++) same = tokens[e - j] === tokens[len - j];
      if (same) return tokens.slice(e, Math.min(e + k, len));
    }
  }
  return [];
}

/** A deterministic pseudo-random generator (tests must be reproducible). */
function lcg(seed: number): () => number {
  let s = seed >>> 0;
  return () => {
    s = (Math.imul(s, 1664525) + 1013904223) >>> 0;
    return s / 2 ** 32;
  };
}

describe('ngram proposer', () => {
  test('a repeated phrase proposes what followed it before', () => {
    const p = new NgramProposer();
    //           the  cat  sat  on   the  mat  .   the  cat  sat
    const toks = [10, 11, 12, 13, 10, 14, 15, 10, 11, 12];
    expect(p.propose(1, toks, 4)).toEqual([13, 10, 14, 15]);
  });

  test('no earlier occurrence of even the last token: no proposal', () => {
    const p = new NgramProposer();
    expect(p.propose(1, [1, 2, 3, 4, 5], 4)).toEqual([]);
    expect(p.propose(2, [7], 4)).toEqual([]);
    expect(p.propose(3, [], 4)).toEqual([]);
  });

  test('falls back to shorter n-grams, and prefers the longer match over a more recent shorter one', () => {
    const p = new NgramProposer({ k: 2, n: 3 });
    // Only the last token (9) occurred before: the 1-gram match proposes what followed it.
    expect(p.propose(1, [9, 5, 6, 1, 2, 9], 2)).toEqual([5, 6]);
    // [2, 9] occurred at the start; the later [9] (after 7) is more recent but shorter.
    expect(p.propose(2, [2, 9, 4, 4, 7, 9, 8, 1, 2, 9], 2)).toEqual([4, 4]);
    // With N = 1 only the last token is matched: the most recent 9 (followed by 8).
    const one = new NgramProposer({ k: 2, n: 1 });
    expect(one.propose(2, [2, 9, 4, 4, 7, 9, 8, 1, 2, 9], 2)).toEqual([8, 1]);
  });

  test('the most recent earlier occurrence wins', () => {
    const p = new NgramProposer({ k: 1, n: 2 });
    expect(p.propose(1, [1, 2, 3, 1, 2, 4, 1, 2], 4)).toEqual([4]);
  });

  test('K caps the proposal, both the proposer K and the per-call k', () => {
    const toks = [1, 2, 3, 4, 5, 6, 7, 8, 9, 1, 2, 3];
    expect(new NgramProposer({ k: 2 }).propose(1, toks, 16)).toEqual([4, 5]);
    expect(new NgramProposer({ k: 8 }).propose(1, toks, 3)).toEqual([4, 5, 6]);
    expect(new NgramProposer({ k: 8 }).propose(1, toks, 0)).toEqual([]);
  });

  test('never proposes past the known tokens', () => {
    const p = new NgramProposer({ k: 8, n: 3 });
    // The last 3 tokens (5 5 5) last occurred ending one token earlier: only one token follows it.
    expect(p.propose(1, [5, 5, 5, 5], 8)).toEqual([5]);
    expect(p.propose(2, [1, 2, 3, 1, 2, 3], 8)).toEqual([1, 2, 3]);
  });

  test('matches the brute-force definition, called incrementally as tokens are appended and fresh', () => {
    const rnd = lcg(42);
    for (const [vocab, n, k] of [[3, 3, 4], [6, 2, 5], [20, 3, 4], [4, 8, 16]] as const) {
      const incremental = new NgramProposer({ k, n });
      const toks: number[] = [];
      for (let step = 0; step < 400; step++) {
        // Sometimes several tokens at once (a speculative step accepts several).
        const add = 1 + Math.floor(rnd() * 3);
        for (let a = 0; a < add; a++) toks.push(Math.floor(rnd() * vocab));
        const want = reference(toks, k, n);
        expect(incremental.propose(7, toks, k)).toEqual(want);
        expect(new NgramProposer({ k, n }).propose(7, toks.slice(), k)).toEqual(want);
      }
    }
  });

  test('a different token list under a reused id starts over; finished forgets the sequence', () => {
    const p = new NgramProposer();
    expect(p.propose(1, [1, 2, 3, 9, 1, 2, 3], 4)).toEqual([9, 1, 2, 3]);
    // Same id, other tokens (shorter, then same length but different): the old index must not leak.
    expect(p.propose(1, [4, 5, 4], 4)).toEqual([5, 4]);
    expect(p.propose(1, [6, 2, 3, 7, 1, 2, 3], 4)).toEqual([7, 1, 2, 3]);
    expect(p.propose(1, [6, 8, 8, 7, 1, 2, 3], 4)).toEqual([]);
    expect(p.trackedSequences).toBe(1);
    p.finished(1);
    expect(p.trackedSequences).toBe(0);
  });

  test('sequences are independent, and the number indexed at once is bounded', () => {
    const p = new NgramProposer({ maxSequences: 2 });
    expect(p.propose(1, [1, 2, 3, 1, 2], 4)).toEqual([3, 1, 2]);
    expect(p.propose(2, [4, 5, 1, 2], 4)).toEqual([]);
    expect(p.propose(3, [7, 8, 7], 4)).toEqual([8, 7]);
    expect(p.trackedSequences).toBe(2);
    // Sequence 1 was dropped (least recently used) and is rebuilt from its tokens.
    expect(p.propose(1, [1, 2, 3, 1, 2, 3], 4)).toEqual([1, 2, 3]);
    expect(p.trackedSequences).toBe(2);
  });

  test('name and k', () => {
    expect(new NgramProposer().name).toBe('ngram:4:3');
    expect(new NgramProposer({ k: 6, n: 2 }).name).toBe('ngram:6:2');
    expect(new NgramProposer({ k: 6 }).k).toBe(6);
  });
});
