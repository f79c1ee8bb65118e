import { RecentText } from '../../coordinator/speculative/recent-text';
import { ngramKeys } from '../../coordinator/speculative/sequence-index';
import { SuffixProposer } from '../../coordinator/speculative/suffix';

function lcg(seed: number): () => number {
  let s = seed >>> 0;
  return () => {
    s = (Math.imul(s, 1664525) + 1013904223) >>> 0;
    return s / 2 ** 32;
  };
}

function randomTokens(rnd: () => number, n: number, vocab: number, base = 0): number[] {
  return Array.from({ length: n }, () => base + Math.floor(rnd() * vocab));
}

describe('suffix proposer', () => {
  test("a repeat of the sequence's own phrase proposes its continuation", () => {
    const p = new SuffixProposer();
    expect(p.propose(1, [10, 11, 12, 13, 10, 14, 15, 10, 11, 12], 4)).toEqual([13, 10, 14, 15]);
  });

  test('follows the continuation past the end of the known tokens, token by token', () => {
    // Unlike ngram, each proposed token extends the context: a periodic text keeps proposing its period.
    const p = new SuffixProposer({ k: 8 });
    expect(p.propose(1, [1, 2, 3, 1, 2, 3], 8)).toEqual([1, 2, 3, 1, 2, 3, 1, 2]);
  });

  test('no match: no proposal; K caps the proposal', () => {
    const p = new SuffixProposer({ k: 3 });
    expect(p.propose(1, [1, 2, 3, 4, 5], 4)).toEqual([]);
    expect(p.propose(2, [], 4)).toEqual([]);
    expect(p.propose(3, [1, 2, 3, 4, 5, 6, 7, 1, 2], 16)).toEqual([3, 4, 5]);
    expect(p.propose(3, [1, 2, 3, 4, 5, 6, 7, 1, 2], 2)).toEqual([3, 4]);
    expect(p.propose(3, [1, 2, 3, 4, 5, 6, 7, 1, 2], 0)).toEqual([]);
  });

  test('the longest matching suffix decides, then the most frequent continuation', () => {
    const p = new SuffixProposer({ k: 1 });
    // After [5] came 6 three times and 7 once, but [4, 5] was followed by 7 only.
    expect(p.propose(1, [5, 6, 5, 6, 5, 6, 4, 5, 7, 0, 4, 5], 1)).toEqual([7]);
    // Only [5] matches: 6 is the most frequent continuation even though 7 is the most recent.
    expect(p.propose(2, [5, 6, 5, 6, 5, 6, 3, 5, 7, 0, 4, 5], 1)).toEqual([6]);
    // A tie goes to the most recent occurrence.
    expect(p.propose(3, [5, 6, 5, 7, 9, 5], 1)).toEqual([7]);
  });

  test('stops where the most frequent continuation is too rare a guess (minShare)', () => {
    // 9 was followed by 12 different tokens once each: no continuation has 10% of them.
    const toks = [9, 1, 9, 2, 9, 3, 9, 4, 9, 5, 9, 6, 9, 7, 9, 8, 9, 10, 9, 11, 9, 12, 9, 13, 9];
    expect(new SuffixProposer().propose(1, toks, 4)).toEqual([]);
    // Without the threshold the most recent one is proposed (a tie), then the text continues.
    expect(new SuffixProposer({ minShare: 0 }).propose(1, toks, 2)).toEqual([13, 9]);
    // A longer matching suffix is a confident guess: [13, 9] occurred once, followed by 13.
    expect(new SuffixProposer().propose(1, [...toks, 13, 9], 2)).toEqual([13, 9]);
  });

  test('learns from a finished sequence and proposes its continuation for another sequence', () => {
    const p = new SuffixProposer({ k: 6 });
    const prompt = [100, 101, 102, 103];
    const output = [200, 201, 202, 203, 204, 205, 206, 207];
    expect(p.propose(1, [...prompt, ...output.slice(0, 3)], 6)).toEqual([]);
    p.finished(1, [...prompt, ...output], prompt.length);
    expect(p.recentSize).toBe(prompt.length + output.length + 1); // + the separator
    // Another request with a different prompt that starts producing the same text.
    expect(p.propose(2, [300, 301, 200, 201], 6)).toEqual([202, 203, 204, 205, 206, 207]);
    // The same prompt again: the remembered output follows the prompt's tail.
    expect(p.propose(3, [9, ...prompt], 6)).toEqual([200, 201, 202, 203, 204, 205]);
    // Never past the end of a remembered document (nothing follows its last token there).
    expect(p.propose(4, [205, 206, 207], 6)).toEqual([]);
  });

  test('a finished sequence with no output teaches nothing; the prompt before the last 32 tokens is not remembered', () => {
    const p = new SuffixProposer({ k: 2 });
    p.finished(1, [1, 2, 3], 3);
    expect(p.recentSize).toBe(0);
    const prompt = Array.from({ length: 40 }, (_, i) => 1000 + i);
    p.finished(2, [...prompt, 7, 8], 40);
    expect(p.recentSize).toBe(32 + 2 + 1);
    expect(p.propose(3, [1000, 1001], 2)).toEqual([]); // the prompt's head is gone
    expect(p.propose(4, [1038, 1039], 2)).toEqual([7, 8]); // its tail is context for the output
  });

  test('memory is bounded: the oldest finished text is evicted', () => {
    const p = new SuffixProposer({ k: 4, recentTokens: 64 });
    p.finished(1, [1, 2, 3, 4, 5, 6, 7, 8], 0);
    expect(p.propose(9, [50, 3, 4], 4)).toEqual([5, 6, 7, 8]);
    // 5 documents of 12 tokens (+ separators) push the first one out of the 64-token window.
    for (let d = 0; d < 5; d++) {
      const doc = Array.from({ length: 12 }, (_, i) => 1000 + 100 * d + i);
      p.finished(10 + d, doc, 0);
      expect(p.recentSize).toBeLessThanOrEqual(64);
    }
    expect(p.recentSize).toBe(64);
    expect(p.propose(9, [50, 3, 4], 4)).toEqual([]);
    // The most recent documents are still there.
    expect(p.propose(20, [1402, 1403], 4)).toEqual([1404, 1405, 1406, 1407]);
    // A document longer than the window keeps its last tokens.
    const long = Array.from({ length: 200 }, (_, i) => 5000 + i);
    p.finished(30, long, 0);
    expect(p.recentSize).toBe(64);
    expect(p.propose(31, [5001, 5002], 4)).toEqual([]);
    expect(p.propose(31, [5190, 5191], 4)).toEqual([5192, 5193, 5194, 5195]);
  });

  test('incremental calls give the same proposals as a fresh proposer with the same memory', () => {
    const rnd = lcg(7);
    const history = [randomTokens(rnd, 300, 12), randomTokens(rnd, 200, 12)];
    const make = (): SuffixProposer => {
      const p = new SuffixProposer({ k: 5, recentTokens: 256 });
      history.forEach((doc, i) => p.finished(100 + i, doc, 20));
      return p;
    };
    const incremental = make();
    const toks: number[] = [];
    for (let step = 0; step < 300; step++) {
      const add = 1 + Math.floor(rnd() * 3);
      for (let a = 0; a < add; a++) toks.push(Math.floor(rnd() * 12));
      expect(incremental.propose(1, toks, 5)).toEqual(make().propose(1, toks.slice(), 5));
    }
  });

  test('proposals on random text always continue a real occurrence of some suffix', () => {
    // Every proposed token t at context c: some earlier position (own tokens or remembered) has
    // the last token of c followed by t.
    const rnd = lcg(3);
    const p = new SuffixProposer({ k: 6, recentTokens: 1000 });
    const other = randomTokens(rnd, 500, 8);
    p.finished(1, other, 0);
    const toks: number[] = [];
    for (let step = 0; step < 200; step++) {
      toks.push(Math.floor(rnd() * 8));
      const prop = p.propose(2, toks, 6);
      const ctx = [...toks];
      for (const t of prop) {
        const last = ctx[ctx.length - 1];
        const seen = (text: readonly number[], limit: number): boolean =>
          text.some((x, i) => i + 1 < limit && x === last && text[i + 1] === t);
        expect(seen(toks, toks.length) || seen(other, other.length)).toBe(true);
        ctx.push(t);
      }
    }
  });

  test('name and k', () => {
    expect(new SuffixProposer().name).toBe('suffix:4');
    expect(new SuffixProposer({ k: 9 }).k).toBe(9);
  });
});

describe('recent text window', () => {
  test('matches never span two documents', () => {
    const r = new RecentText([1, 2], 100);
    r.append([1, 2]);
    r.append([3, 4]);
    expect(r.size).toBe(6); // two documents and their separators
    const lookup = (ctx: number[], i: number): number[] => {
      const next: number[] = [];
      const keys = ngramKeys((j) => ctx[j], ctx.length, r.lengths);
      r.visit(i, keys[i], (j) => ctx[j], ctx.length, 32, 128, (t) => next.push(t));
      return next;
    };
    expect(lookup([2], 0)).toEqual([]); // 2 ended its document: the separator is no continuation
    expect(lookup([2, 3], 1)).toEqual([]); // [2, 3] spans the two documents
    expect(lookup([9, 3], 0)).toEqual([4]);
    expect(lookup([1, 2], 1)).toEqual([]);
    expect(lookup([0, 1], 0)).toEqual([2]);
  });

  test('survives many wraps of the ring (positions far beyond the capacity)', () => {
    const rnd = lcg(11);
    const p = new SuffixProposer({ k: 3, recentTokens: 50 });
    for (let d = 0; d < 2000; d++) p.finished(d, randomTokens(rnd, 20, 1000), 0);
    p.finished(9999, [1, 2, 3, 4, 5, 6], 0);
    expect(p.propose(1, [7, 2, 3], 3)).toEqual([4, 5, 6]);
    expect(p.recentSize).toBe(50);
  });
});
