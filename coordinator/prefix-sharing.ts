// Prefix sharing: a sequence starting with tokens whose K/V a kept cache (coordinator/prefix-cache.ts)
// or a running sequence holds copies them instead of computing them; when a running sequence
// will soon have computed a longer shared start, the new one parks (waitFor) until it has.
import type { NativeKvCache } from '../core/native';
import type { Engine } from './engine';
import type { PrefixCache, PrefixEntry } from './prefix-cache';
import type { SequenceHandle } from './sequence-handle';

/** Where a new sequence's prefix comes from: a cache holding it now, or a running sequence soon. */
export type PrefixHit = { cache: NativeKvCache; length: number; entry?: PrefixEntry } | { from: SequenceHandle; length: number };

export class PrefixSharing {
  constructor(
    /** Kept caches; null when prefix caching is off (then nothing is shared and nothing parks). */
    private readonly prefix: PrefixCache | null,
    /** The shortest shared prefix worth copying. */
    private readonly minTokens: number,
    private readonly engine: Pick<Engine, 'copyPrefix'>,
    /** Called with the prompt positions of every copy started (the hit counter). */
    private readonly onHit: (tokens: number) => void,
  ) {}

  /**
   * The longest start of `tokens` (at most `limit`, at least prefixMinTokens) whose K/V a kept
   * prefix cache or a running sequence holds. A running sequence's computed positions stay
   * as they are while it runs (a step writes only past them; a grow or free waits for a
   * queued copy), so requests sharing a prefix need not wait for the first to finish.
   * When a running sequence will soon have computed a longer shared start (n choices of one
   * prompt, jobs sharing a context, submitted together), `from` names it: worth waiting for.
   */
  find(running: readonly SequenceHandle[], tokens: readonly number[], limit: number, self?: SequenceHandle): PrefixHit | null {
    const kept = this.prefix!.match(tokens, limit);
    let best: PrefixHit | null = kept && { cache: kept.entry.cache, length: kept.length, entry: kept.entry };
    let soon: { from: SequenceHandle; length: number } | null = null;
    for (const r of running) {
      const seq = r.seq;
      if (!seq?.cache || r === self) continue;
      // Compared in place (no copy of every running sequence's tokens per admission).
      const n = Math.min(limit, seq.length, tokens.length);
      let known = 0;
      while (known < n && seq.tokenAt(known) === tokens[known]) known++;
      const now = r.copying || r.waitFor ? 0 : Math.min(known, seq.computed);
      if (now >= this.minTokens && now > (best?.length ?? 0)) best = { cache: seq.cache, length: now };
      // Only an unparked one is waited for: waits never chain, so they never form a cycle.
      if (!r.waitFor && known > (soon?.length ?? 0)) soon = { from: r, length: known };
    }
    if (soon && soon.length >= (best?.length ?? 0) + this.minTokens) return soon;
    return best;
  }

  /**
   * Parked sequences whose source has computed what they share copy it now (and step from
   * the next step on); those whose source left compute it themselves.
   */
  resolveWaits(running: readonly SequenceHandle[]): void {
    for (const h of running) {
      const w = h.waitFor;
      if (!w) continue;
      const src = w.src;
      if (!running.includes(src) || !src.seq?.cache || src.preemptions !== w.srcPreemptions) {
        // Its source left (finished: its cache may now be kept) or lost its cache: look again.
        const known = h.seq!.tokens();
        this.use(h, this.find(running, known, known.length - 1, h));
        continue;
      }
      if (src.copying || src.waitFor || src.seq.computed < w.length) continue;
      h.waitFor = null;
      this.startCopy(h, src.seq.cache, w.length);
    }
    // Waits point only at unparked sequences, so one is always free; never leave a batch empty anyway.
    if (running.length > 0 && running.every((h) => h.waitFor)) for (const h of running) h.waitFor = null;
  }

  /** Acts on a prefix hit for h (new cache, nothing computed): copy it now, wait for it, or neither. */
  use(h: SequenceHandle, hit: PrefixHit | null): void {
    h.waitFor = null;
    if (hit && 'from' in hit) h.waitFor = { src: hit.from, length: hit.length, srcPreemptions: hit.from.preemptions };
    else if (hit) this.startCopy(h, hit.cache, hit.length);
  }

  /** Queues the copy of a shared prefix into h's new cache (awaited before h's first step). */
  startCopy(h: SequenceHandle, src: NativeKvCache, length: number): void {
    h.cachedTokens = length;
    this.onHit(length);
    h.copying = this.engine.copyPrefix(h.seq!, src, length);
    h.copying.catch(() => undefined); // awaited before its first step; it may leave before that
  }
}
