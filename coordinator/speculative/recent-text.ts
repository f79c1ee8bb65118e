// The suffix proposer's memory of other requests: the last `capacity` tokens of finished sequences
// in a ring buffer, documents separated by a SEPARATOR token, with an n-gram index over them.
//
// The index is the hash chains of sequence-index.ts over a sliding window (zlib's LZ77 window):
// per n-gram length a fixed table of chain heads (the most recent absolute end per hash bucket) and
// per ring slot the distance back to the previous end in the same bucket. Eviction is implicit:
// appending a token overwrites the oldest slot, and a chain walk stops at the first position that
// has left the window, so nothing is ever decremented or rebuilt. Every candidate is checked token by
// token against the ring, so bucket collisions cost walk steps, never wrong matches. N-grams never
// span a separator, so a continuation always comes from the same document.
//
// Memory, fixed at construction: capacity x (4 + 4 x lengths) bytes for the ring and the links,
// plus lengths x 8 x (power of two >= capacity / 2) for the heads; about 84 MiB for 1 Mi tokens
// and the suffix proposer's 10 lengths. Appending costs O(longest length) per token.
import { ngramKeys, sameNgram, type TokenAt } from './sequence-index';

const SEPARATOR = -1;

export class RecentText {
  private readonly ring: Int32Array;
  private readonly heads: Float64Array[];
  private readonly prevDist: Int32Array[];
  private readonly mask: number;
  /** Tokens ever appended (separators included); the window is [total - capacity, total). */
  private total = 0;
  private readonly at: TokenAt = (i) => (i < this.total - this.capacity ? SEPARATOR : this.ring[i % this.capacity]);

  constructor(
    readonly lengths: readonly number[],
    readonly capacity: number,
  ) {
    if (!Number.isInteger(capacity) || capacity < 2) throw new RangeError(`recent text: capacity must be an integer >= 2, got ${capacity}`);
    let buckets = 1024;
    while (buckets < capacity / 2) buckets *= 2;
    this.mask = buckets - 1;
    this.ring = new Int32Array(capacity);
    this.heads = lengths.map(() => new Float64Array(buckets));
    this.prevDist = lengths.map(() => new Int32Array(capacity));
  }

  /** Tokens held now (separators included). */
  get size(): number {
    return Math.min(this.total, this.capacity);
  }

  /** Remembers one document (its last capacity - 1 tokens when longer), evicting the oldest text. */
  append(doc: readonly number[]): void {
    const start = Math.max(0, doc.length - (this.capacity - 1));
    for (let i = start; i < doc.length; i++) this.push(doc[i], true);
    this.push(SEPARATOR, false);
  }

  /**
   * Calls `fn(continuation)` for the remembered occurrences of the n-gram of `ctx` ending at
   * `ctxEnd` (n = lengths[i], `key` from ngramKeys over ctx), most recent first, at most
   * `maxMatches` of them and walking at most `maxSteps` chain links.
   */
  visit(i: number, key: number, ctx: TokenAt, ctxEnd: number, maxMatches: number, maxSteps: number, fn: (next: number) => void): void {
    const n = this.lengths[i];
    const head = this.heads[i][key & this.mask];
    if (head === 0) return;
    const lo = Math.max(0, this.total - this.capacity);
    const prevDist = this.prevDist[i];
    let e = head - 1;
    let matches = 0;
    for (let steps = 0; steps < maxSteps && e - n >= lo; steps++) {
      if (sameNgram(this.at, e, ctx, ctxEnd, n)) {
        fn(this.ring[e % this.capacity]);
        if (++matches >= maxMatches) return;
      }
      const d = prevDist[e % this.capacity];
      if (d === 0) return;
      e -= d;
    }
  }

  /** Writes `t` at position `total`; with `index`, first records the n-grams it continues. */
  private push(t: number, index: boolean): void {
    const p = this.total;
    if (index) {
      const keys = ngramKeys(this.at, p, this.lengths, SEPARATOR);
      const lo = p + 1 - this.capacity; // the window once `t` is written
      for (let i = 0; i < keys.length; i++) {
        if (keys[i] < 0 || p - this.lengths[i] < lo) break;
        const bucket = keys[i] & this.mask;
        const old = this.heads[i][bucket];
        const d = old === 0 ? 0 : p - (old - 1);
        this.prevDist[i][p % this.capacity] = d > 0 && d <= this.capacity ? d : 0;
        this.heads[i][bucket] = p + 1;
      }
    }
    this.ring[p % this.capacity] = t;
    this.total = p + 1;
  }
}
