// `--speculative ngram[:K[:N]]`: prompt lookup (vLLM's ngram proposer, llama.cpp's lookup). The
// last N tokens of the sequence are looked up among its own earlier tokens (prompt + output); at
// the most recent earlier occurrence, the tokens that followed it are the proposal (up to K, never
// past the end of the known tokens). Without an occurrence of N tokens it tries N-1, ... down to 1.
//
// Cost per call: indexing the tokens appended since the last call, O(appended x N), then at most N
// lookups of the sequence's n-gram index (each a hash-chain walk that stops at the first verified
// match; O(N) per chain step). Memory: O(sequence length x N) per live sequence, dropped in `finished`.
import type { DraftProposer } from './proposer';
import { ngramKeys, SequenceIndexes, type TokenAt } from './sequence-index';

export interface NgramOptions {
  /** Most tokens proposed (K). Default 4. */
  k?: number;
  /** Longest n-gram matched (N); shorter ones are the fallback. Default 3. */
  n?: number;
  /** Sequences indexed at once; the least recently used is dropped (and rebuilt if it comes back). */
  maxSequences?: number;
}

/** Chain links walked per lookup: a bound on hash-collision work, far above what real text needs. */
const MAX_CHAIN_STEPS = 64;

export class NgramProposer implements DraftProposer {
  readonly name: string;
  readonly k: number;
  readonly n: number;
  private readonly lengths: number[];
  private readonly seqs: SequenceIndexes;

  constructor(opts: NgramOptions = {}) {
    this.k = opts.k ?? 4;
    this.n = opts.n ?? 3;
    if (!Number.isInteger(this.k) || this.k < 1) throw new RangeError(`ngram: k must be a positive integer, got ${this.k}`);
    if (!Number.isInteger(this.n) || this.n < 1) throw new RangeError(`ngram: n must be a positive integer, got ${this.n}`);
    this.name = `ngram:${this.k}:${this.n}`;
    this.lengths = Array.from({ length: this.n }, (_, i) => i + 1);
    this.seqs = new SequenceIndexes(this.lengths, opts.maxSequences ?? 4096);
  }

  propose(seqId: number, tokens: readonly number[], k: number): number[] {
    const want = Math.min(k, this.k);
    const len = tokens.length;
    if (want <= 0 || len < 2) return [];
    const index = this.seqs.sync(seqId, tokens);
    const at: TokenAt = (i) => tokens[i];
    const keys = ngramKeys(at, len, this.lengths);
    for (let i = this.lengths.length - 1; i >= 0; i--) {
      if (keys[i] < 0) continue;
      let found = -1;
      index.visit(i, keys[i], at, len, 1, MAX_CHAIN_STEPS, (e) => (found = e));
      if (found >= 0) return tokens.slice(found, Math.min(found + want, len));
    }
    return [];
  }

  finished(seqId: number): void {
    this.seqs.delete(seqId);
  }

  /** Sequences currently indexed (for tests and stats). */
  get trackedSequences(): number {
    return this.seqs.size;
  }
}
