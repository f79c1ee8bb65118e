// The scheduler's KV budget, as vLLM does it: a sequence holds cache for what it has plus some
// room (growTokens), not for prompt + max_tokens, and grows by a quarter (at least growTokens)
// when a step would pass its end. Kept prefix caches (coordinator/prefix-cache.ts) live in the
// unused part of the budget and are evicted before anything waits or is preempted.
// Which sequence is preempted when growth does not fit is policy (scheduling-policy.ts).
import type { Engine } from './engine';
import type { PrefixCache, PrefixEntry } from './prefix-cache';

/** What the budget needs of the engine. */
export type KvEngine = Pick<Engine, 'config' | 'kvBytesFor' | 'kvTokensLimit'>;

export class KvBudget {
  /** Bytes of KV cache running sequences hold (kept prefixes not included). */
  reserved = 0;

  constructor(
    private readonly engine: KvEngine,
    /** Bytes all running sequences (and kept prefixes) may hold together. */
    readonly budgetBytes: number,
    /** Positions of room a cache gets past what it holds, and the least it grows by. */
    readonly growTokens: number,
    private readonly prefix: PrefixCache | null,
  ) {}

  /** Bytes of a cache of this many positions. */
  bytesFor(tokens: number): number {
    return this.engine.kvBytesFor(tokens);
  }

  /** Positions a cache starts with: what must be computed plus growTokens of room, within the limit. */
  firstTokens(known: number, promptTokens: number, maxTokens: number): number {
    return Math.min(this.engine.kvTokensLimit(promptTokens, maxTokens), known + this.growTokens);
  }

  /** `bytes` more fit beside what running sequences hold (kept prefixes are evicted for them). */
  admits(bytes: number): boolean {
    return this.reserved + bytes <= this.budgetBytes;
  }

  /**
   * How far a cache of `have` positions that needs `need` grows: `want` (a quarter more, at
   * least growTokens, within `limit`), and `least`, a growTokens step (growing one token at a
   * time would copy the whole cache per token): only when not even that fits is anyone preempted.
   */
  growth(need: number, have: number, limit: number): { want: number; least: number } {
    const want = Math.min(limit, Math.max(need, have + Math.max(this.growTokens, have >> 2)));
    const least = Math.min(want, Math.max(need, have + this.growTokens));
    return { want, least };
  }

  /** The most positions one cache now holding `held` bytes could have within the budget (kept prefixes count). */
  tokensFitting(held: number): number {
    const room = this.budgetBytes - this.reserved - (this.prefix?.bytes ?? 0) + held;
    return Math.floor(room / this.engine.kvBytesFor(1));
  }

  /** Evicts kept prefix caches (least recently used, `keep` last) until `bytes` more fit the budget. */
  makeRoom(bytes: number, keep?: PrefixEntry): void {
    const prefix = this.prefix;
    if (!prefix) return;
    const over = () => this.reserved + prefix.bytes + bytes > this.budgetBytes;
    while (over() && prefix.evict(keep) > 0);
    if (over() && keep) prefix.remove(keep);
  }
}
