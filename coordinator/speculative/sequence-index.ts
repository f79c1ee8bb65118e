// The n-gram index of one sequence's own tokens (prompt + output so far), shared by the ngram and
// suffix proposers. A proposer is called every decode step with the whole token list, so the index
// is built incrementally: each call indexes only the tokens appended since the previous one.
//
// Layout (per indexed n-gram length n): `heads` maps the hash of an n-gram to the most recent
// position where it ends, and `prev[e]` links position e to the previous position whose n-gram has
// the same hash (a hash chain, as in zlib's LZ77 matcher). Walking a chain yields the earlier
// occurrences of an n-gram most recent first; each is checked token by token, so a hash collision
// costs a step of the walk, never a wrong match.
//
// Positions are exclusive ends: the n-gram ending at e is tokens[e-n..e) and its continuation is
// tokens[e]. Only ends with a continuation (e < tokens.length) are indexed, so the query (the
// sequence's own last n tokens) never matches itself and a proposal never reaches past the end.

/** A token source by position: a sequence's tokens, possibly followed by tokens proposed so far. */
export type TokenAt = (i: number) => number;

const SEED = 0x2f0b3c9d;
const imul = Math.imul; // a module binding: no global lookup per call (much cheaper inside jest's vm context)

/** One token into a running 32-bit hash (MurmurHash3's block step). */
function mixToken(h: number, t: number): number {
  let k = imul(t, 0xcc9e2d51);
  k = (k << 15) | (k >>> 17);
  k = imul(k, 0x1b873593);
  h ^= k;
  h = (h << 13) | (h >>> 19);
  return (imul(h, 5) + 0xe6546b64) | 0;
}

/** MurmurHash3's finalizer, with the n-gram length mixed in; an unsigned 32-bit key. */
function finishKey(h: number, n: number): number {
  h ^= n;
  h ^= h >>> 16;
  h = imul(h, 0x85ebca6b);
  h ^= h >>> 13;
  h = imul(h, 0xc2b2ae35);
  h ^= h >>> 16;
  return h >>> 0;
}

/**
 * The keys of the n-grams ending at `end` (exclusive) for each of `lengths` (ascending), hashed
 * backwards from the last token; -1 where fewer than n tokens precede `end` or, with `stop`, where
 * the n-gram would include a `stop` token (the separator between documents). O(max length).
 */
export function ngramKeys(at: TokenAt, end: number, lengths: readonly number[], stop?: number): number[] {
  const keys = new Array<number>(lengths.length).fill(-1);
  let h = SEED;
  let j = 0;
  for (let i = 0; i < lengths.length; i++) {
    const n = lengths[i];
    while (j < n) {
      if (end - 1 - j < 0) return keys;
      const t = at(end - 1 - j);
      if (t === stop) return keys;
      h = mixToken(h, t);
      j++;
    }
    keys[i] = finishKey(h, n);
  }
  return keys;
}

/** Whether the n tokens of `text` ending at `e` equal the n tokens of `ctx` ending at `ctxEnd`. */
export function sameNgram(text: TokenAt, e: number, ctx: TokenAt, ctxEnd: number, n: number): boolean {
  for (let j = 1; j <= n; j++) if (text(e - j) !== ctx(ctxEnd - j)) return false;
  return true;
}

export class SequenceIndex {
  private readonly heads: Map<number, number>[];
  private prev: Int32Array[];
  /** Ends below `next` are indexed (for each length n, those >= n). */
  private next = 0;
  private tokens: readonly number[] = [];
  /** The first token and the last one indexed, to notice a different token list under the same id. */
  private first = 0;
  private last = 0;
  private readonly at: TokenAt = (i) => this.tokens[i];

  constructor(readonly lengths: readonly number[]) {
    this.heads = lengths.map(() => new Map<number, number>());
    this.prev = lengths.map(() => new Int32Array(64));
  }

  /**
   * Brings the index up to `tokens` (append-only between calls; anything else starts over), and
   * keeps a reference to it for `visit`. O(appended tokens x longest length).
   */
  sync(tokens: readonly number[]): this {
    const len = tokens.length;
    if (this.next > 0 && (len < this.next || tokens[0] !== this.first || tokens[this.next - 1] !== this.last)) {
      this.reset();
    }
    this.tokens = tokens;
    if (len > this.prev[0].length) this.grow(len);
    for (let e = Math.max(this.next, 1); e < len; e++) this.add(e);
    if (len > 0) {
      this.next = len;
      this.first = tokens[0];
      this.last = tokens[len - 1];
    }
    return this;
  }

  /**
   * Calls `fn(e)` for the earlier occurrences of the n-gram of `ctx` ending at `ctxEnd` (n =
   * lengths[i], `key` from ngramKeys over ctx), most recent first, at most `maxMatches` of them and
   * walking at most `maxSteps` chain links. `e` is the occurrence's end: its continuation is tokens[e].
   */
  visit(i: number, key: number, ctx: TokenAt, ctxEnd: number, maxMatches: number, maxSteps: number, fn: (e: number) => void): void {
    const n = this.lengths[i];
    const prev = this.prev[i];
    let e = this.heads[i].get(key) ?? -1;
    let matches = 0;
    for (let steps = 0; e >= 0 && steps < maxSteps; steps++) {
      if (sameNgram(this.at, e, ctx, ctxEnd, n)) {
        fn(e);
        if (++matches >= maxMatches) return;
      }
      e = prev[e];
    }
  }

  private add(e: number): void {
    const keys = ngramKeys(this.at, e, this.lengths);
    for (let i = 0; i < keys.length; i++) {
      if (keys[i] < 0) break;
      const heads = this.heads[i];
      this.prev[i][e] = heads.get(keys[i]) ?? -1;
      heads.set(keys[i], e);
    }
  }

  private grow(len: number): void {
    let cap = this.prev[0].length;
    while (cap < len) cap *= 2;
    this.prev = this.prev.map((old) => {
      const grown = new Int32Array(cap);
      grown.set(old);
      return grown;
    });
  }

  private reset(): void {
    for (const h of this.heads) h.clear();
    this.next = 0;
  }
}

/** Per-sequence indexes, at most `maxSequences` of them (least recently used dropped first). */
export class SequenceIndexes {
  private readonly byId = new Map<number, SequenceIndex>();

  constructor(
    private readonly lengths: readonly number[],
    private readonly maxSequences: number,
  ) {}

  get size(): number {
    return this.byId.size;
  }

  /** The index of `seqId`, synced to `tokens`. */
  sync(seqId: number, tokens: readonly number[]): SequenceIndex {
    let index = this.byId.get(seqId);
    if (index) {
      this.byId.delete(seqId); // re-inserted below: Map order is the LRU order
    } else {
      index = new SequenceIndex(this.lengths);
      if (this.byId.size >= this.maxSequences) this.byId.delete(this.byId.keys().next().value as number);
    }
    this.byId.set(seqId, index);
    return index.sync(tokens);
  }

  delete(seqId: number): void {
    this.byId.delete(seqId);
  }
}
