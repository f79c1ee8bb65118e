// Finished sequences' KV caches, kept for reuse: a new request whose prompt starts with
// the same tokens copies those positions instead of computing them (vLLM's automatic
// prefix caching, at the granularity of whole sequences). A multi-turn chat re-sends
// the whole conversation each turn, and batch jobs often share a long few-shot prefix:
// their prefill shrinks to the new tokens. Entries live in the unused part of the KV
// budget; the scheduler evicts them, least recently used first, whenever it needs room.
import type { NativeKvCache } from '../core/native';

export interface PrefixEntry {
  /** The tokens whose K/V the cache holds, from position 0. */
  readonly tokens: readonly number[];
  readonly cache: NativeKvCache;
  readonly bytes: number;
  used: number;
}

/** How many leading tokens a and b share, at most `limit`. */
export function commonPrefix(a: readonly number[], b: readonly number[], limit = Infinity): number {
  const n = Math.min(limit, a.length, b.length);
  let i = 0;
  while (i < n && a[i] === b[i]) i++;
  return i;
}

export class PrefixCache {
  private readonly entries: PrefixEntry[] = [];
  private clock = 0;
  /** Bytes the kept caches hold. */
  bytes = 0;

  /** minTokens: shorter prefixes are not worth a copy (and shorter caches not worth keeping). */
  constructor(readonly minTokens: number) {}

  get size(): number {
    return this.entries.length;
  }

  has(e: PrefixEntry): boolean {
    return this.entries.includes(e);
  }

  /** The entry sharing the longest prefix with `tokens`, used for at most `limit` of them (>= minTokens), marked used. */
  match(tokens: readonly number[], limit: number): { entry: PrefixEntry; length: number } | null {
    let best: { entry: PrefixEntry; length: number } | null = null;
    for (const entry of this.entries) {
      const i = commonPrefix(entry.tokens, tokens, limit);
      if (i >= this.minTokens && (!best || i > best.length)) best = { entry, length: i };
    }
    if (best) best.entry.used = ++this.clock;
    return best;
  }

  /**
   * Keeps `cache` (holding `tokens`) and takes ownership of it; entries it extends are
   * freed. False when it is too short or an entry already holds all of its tokens: the
   * caller still owns the cache then.
   */
  insert(tokens: readonly number[], cache: NativeKvCache, bytes: number): boolean {
    if (tokens.length < this.minTokens) return false;
    const startsWith = (a: readonly number[], b: readonly number[]) => commonPrefix(a, b) === b.length;
    const covering = this.entries.find((e) => startsWith(e.tokens, tokens));
    if (covering) {
      covering.used = ++this.clock;
      return false;
    }
    for (const e of this.entries.filter((x) => startsWith(tokens, x.tokens))) this.remove(e);
    this.entries.push({ tokens, cache, bytes, used: ++this.clock });
    this.bytes += bytes;
    return true;
  }

  /** Frees the least recently used entry other than `keep`; the bytes freed (0: none left). */
  evict(keep?: PrefixEntry): number {
    let lru: PrefixEntry | null = null;
    for (const e of this.entries) if (e !== keep && (!lru || e.used < lru.used)) lru = e;
    if (!lru) return 0;
    this.remove(lru);
    return lru.bytes;
  }

  remove(e: PrefixEntry): void {
    const i = this.entries.indexOf(e);
    if (i < 0) return;
    this.entries.splice(i, 1);
    this.bytes -= e.bytes;
    e.cache.free();
  }

  clear(): void {
    for (const e of [...this.entries]) this.remove(e);
  }
}
