// `--speculative suffix[:K]`: suffix decoding (as in vLLM's suffix proposer / Arctic's suffix
// decoding), kept simple. Two indexes of the same kind (n-gram hash chains, sequence-index.ts):
// the sequence's own tokens, and — one per server, since one proposer serves every sequence of an
// engine — the recent outputs of finished requests (recent-text.ts: the last `recentTokens` tokens,
// oldest evicted first), which is what repeated agent and batch prompts reuse.
//
// Proposing, token by token up to K: take the longest of the indexed context lengths (by default
// 32, 24, 16, 12, 8, 6, 4, 3, 2, 1 — "the longest suffix" measured on this ladder, not to the exact token)
// whose last tokens occur earlier in either index, count what followed its most recent occurrences
// (at most `maxMatches` per index), and append the most frequent continuation (ties: the sequence's
// own most recent one first); the next token is looked up with the proposal appended to the context.
// Stops at K, when nothing matches, or when the most frequent continuation has less than
// `minShare` of the counted occurrences (a guess that would mostly waste a verification row: e.g.
// a lone last token looked up in a large memory of other requests).
//
// Cost per call: indexing the appended tokens, O(appended x 32), then per proposed token at most
// lengths x 2 chain walks of at most `maxChainSteps` links, each link an O(n) check:
// O(K x 2 x maxChainSteps x sum of lengths) in the worst case (a few tens of thousands of integer
// compares at the defaults), usually far less as the longest matching length stops the search.
// `finished` costs O((32 + output length) x 32). Memory: O(length x 10) per live sequence, plus the
// fixed RecentText (about 84 MiB at the default 1 Mi tokens, allocated on the first finished sequence).
import type { DraftProposer } from './proposer';
import { RecentText } from './recent-text';
import { ngramKeys, SequenceIndexes, type TokenAt } from './sequence-index';

export interface SuffixOptions {
  /** Most tokens proposed (K). Default 4. */
  k?: number;
  /** Context lengths indexed, ascending; the longest is the longest suffix looked for. */
  lengths?: readonly number[];
  /** Tokens of finished sequences remembered across requests (oldest evicted). Default 1 << 20. */
  recentTokens?: number;
  /** Occurrences counted per index and lookup (the most recent ones). Default 32. */
  maxMatches?: number;
  /** Chain links walked per index and lookup (bounds the work on hash collisions). Default 128. */
  maxChainSteps?: number;
  /** Sequences indexed at once; the least recently used is dropped (and rebuilt if it comes back). */
  maxSequences?: number;
  /** Stop proposing when the best continuation has less than this share of the occurrences. Default 0.1. */
  minShare?: number;
}

export const SUFFIX_LENGTHS: readonly number[] = [1, 2, 3, 4, 6, 8, 12, 16, 24, 32];

export class SuffixProposer implements DraftProposer {
  readonly name: string;
  readonly k: number;
  private readonly lengths: readonly number[];
  private readonly maxLength: number;
  private readonly recentTokens: number;
  private readonly maxMatches: number;
  private readonly maxChainSteps: number;
  private readonly minShare: number;
  private readonly seqs: SequenceIndexes;
  private recent: RecentText | null = null;

  constructor(opts: SuffixOptions = {}) {
    this.k = opts.k ?? 4;
    if (!Number.isInteger(this.k) || this.k < 1) throw new RangeError(`suffix: k must be a positive integer, got ${this.k}`);
    this.lengths = opts.lengths ?? SUFFIX_LENGTHS;
    if (this.lengths.length === 0 || this.lengths.some((n, i) => !Number.isInteger(n) || n < 1 || (i > 0 && n <= this.lengths[i - 1]))) {
      throw new RangeError(`suffix: lengths must be ascending positive integers, got ${this.lengths.join(',')}`);
    }
    this.maxLength = this.lengths[this.lengths.length - 1];
    this.recentTokens = opts.recentTokens ?? 1 << 20;
    this.maxMatches = opts.maxMatches ?? 32;
    this.maxChainSteps = opts.maxChainSteps ?? 128;
    this.minShare = opts.minShare ?? 0.1;
    this.name = `suffix:${this.k}`;
    this.seqs = new SequenceIndexes(this.lengths, opts.maxSequences ?? 4096);
  }

  propose(seqId: number, tokens: readonly number[], k: number): number[] {
    const want = Math.min(k, this.k);
    const len = tokens.length;
    if (want <= 0 || len === 0) return [];
    const own = this.seqs.sync(seqId, tokens);
    const out: number[] = [];
    const ctx: TokenAt = (i) => (i < len ? tokens[i] : out[i - len]);
    const counts = new Map<number, number>();
    const count = (t: number): void => {
      counts.set(t, (counts.get(t) ?? 0) + 1);
    };
    while (out.length < want) {
      const end = len + out.length;
      const keys = ngramKeys(ctx, end, this.lengths);
      let best = -1;
      let bestCount = 0;
      let total = 0;
      for (let i = this.lengths.length - 1; i >= 0 && best < 0; i--) {
        if (keys[i] < 0) continue;
        counts.clear();
        own.visit(i, keys[i], ctx, end, this.maxMatches, this.maxChainSteps, (e) => count(tokens[e]));
        this.recent?.visit(i, keys[i], ctx, end, this.maxMatches, this.maxChainSteps, count);
        for (const [t, c] of counts) {
          total += c;
          if (c > bestCount) {
            best = t;
            bestCount = c;
          }
        }
      }
      if (best < 0 || bestCount < this.minShare * total) break;
      out.push(best);
    }
    return out;
  }

  /** Forgets the sequence's own index and remembers its output (with up to 32 prompt tokens before it as context). */
  finished(seqId: number, tokens: readonly number[], promptLength: number): void {
    this.seqs.delete(seqId);
    if (promptLength >= tokens.length) return;
    this.recent ??= new RecentText(this.lengths, this.recentTokens);
    this.recent.append(tokens.slice(Math.max(0, promptLength - this.maxLength)));
  }

  /** Tokens of finished sequences held now (for tests and stats). */
  get recentSize(): number {
    return this.recent?.size ?? 0;
  }
}
