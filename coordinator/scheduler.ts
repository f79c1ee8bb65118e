// Continuous batching: one loop runs engine steps over every live sequence.
//
//   submit -> [waiting, bounded] --(KV budget allows)--> [running] --step--> tokens -> text -> caller
//                   \-- beyond the bound: QueueFullError (never dropped silently)
//              ^-- preempted (cache dropped) when an older sequence needs its KV budget --/
//
// Each step is ONE forward pass over every running sequence: decoding ones add
// their newest token, prefilling ones add a chunk of their prompt (a per-step
// prompt-token budget, so a long prompt does not stall everyone's decoding).
// New requests join and finished/cancelled ones leave only between steps, which
// is also the only time a KV cache is created, grown or freed (a step owns its caches).
//
// Prefix caching (coordinator/prefix-cache.ts): a finished sequence's cache is kept in the
// unused part of the budget; a request starting with the same tokens as a kept cache, or
// as a running sequence's computed ones, copies them instead of prefilling them. Kept
// caches are evicted (least recently used) before anything waits.
//
// KV budget, as vLLM does it: a sequence holds cache for what it has plus some room
// (kvGrowTokens), not for prompt + max_tokens, and grows by a quarter (at least
// kvGrowTokens) when a step would pass its end. When the budget cannot cover a growth,
// the newest running sequence is preempted: its cache is freed and it rejoins the queue in
// submission order (ahead of every newer request), keeping its output, to recompute prompt +
// output when it returns.
import { UserError } from '../core/errors';
import { metrics as globalMetrics, type Registry } from '../core/metrics';
import type { TextTokenizer } from '../core/tokenizer';
import type { Engine } from './engine';
import { logprobEntry, type LogprobEntry } from './logprobs';
import { OutputText } from './output-text';
import { PrefixCache } from './prefix-cache';
import { PrefixSharing } from './prefix-sharing';
import type { FinishReason, Sequence } from './sequence';
import { SequenceHandle, type Delta, type GenerationRequest, type GenerationResult } from './sequence-handle';

export { SequenceHandle, type Delta, type GenerationRequest, type GenerationResult };
import { KvBudget } from './kv-budget';
import { RequestLimits } from './request-limits';
import { schedulerMetrics, type SchedulerStats } from './scheduler-metrics';
import { insertBySubmission, pickBatch, preemptionVictim, queuedOf } from './scheduling-policy';

/** What the scheduler needs of the engine (the real Engine in production). */
export type SchedulerEngine = Pick<
  Engine,
  'config' | 'newSequence' | 'step' | 'release' | 'kvBytesFor' | 'kvTokensLimit' | 'allocate' | 'grow' | 'copyPrefix'
>;

export interface SchedulerOptions {
  /** Bytes of KV cache all running sequences may reserve together. Default: 1 GiB. */
  kvBudgetBytes?: number;
  /** Positions of room a sequence's cache gets past what it holds, and the least it grows by. Default 256. */
  kvGrowTokens?: number;
  /** Keep finished sequences' caches for requests that start with the same tokens. Default true. */
  prefixCache?: boolean;
  /** The shortest shared prefix worth copying (and cache worth keeping). Default 16. */
  prefixMinTokens?: number;
  /** Requests that may wait for KV budget; beyond it submit throws QueueFullError. Default 256. */
  maxQueue?: number;
  /** Sequences decoded together at most. Default 256. */
  maxRunning?: number;
  /** Prompt tokens prefilled per step, over all sequences. Default 256. */
  prefillBudget?: number;
  /** Where gauges and counters go; default the process-wide registry. */
  metrics?: Registry;
  /** Called with every submitAll's requests and their handles, before it returns (telemetry's submitTracing). */
  onSubmit?: (reqs: GenerationRequest[], handles: SequenceHandle[]) => void;
}

/** Every slot of the wait queue is taken: the caller should retry later (HTTP 429). */
export class QueueFullError extends Error {
  constructor(message: string) {
    super(message);
    this.name = 'QueueFullError';
  }
}

/** The engine failed a step (e.g. an expert node went away); the sequences in it ended. */
export class StepError extends Error {
  constructor(override readonly cause: unknown) {
    super(`generation step failed: ${cause instanceof Error ? cause.message : String(cause)}`);
    this.name = 'StepError';
  }
}

/** submit after close(). */
export class SchedulerClosedError extends Error {
  constructor(message: string) {
    super(message);
    this.name = 'SchedulerClosedError';
  }
}

const DEFAULTS = {
  kvBudgetBytes: 1 << 30,
  kvGrowTokens: 256,
  prefixCache: true,
  prefixMinTokens: 16,
  maxQueue: 256,
  maxRunning: 256,
  prefillBudget: 256,
};

export class Scheduler {
  readonly opts: Required<Omit<SchedulerOptions, 'metrics' | 'onSubmit'>>;
  private readonly onSubmit: SchedulerOptions['onSubmit'];
  private readonly waiting: SequenceHandle[] = [];
  private readonly running: SequenceHandle[] = [];
  private readonly kv: KvBudget;
  /** What a request may ask for: its prompt, the context, the KV budget (the API checks with it too). */
  readonly limits: RequestLimits;
  private readonly sharing: PrefixSharing;
  private preemptions = 0;
  private readonly prefix: PrefixCache | null;
  private nextId = 1;
  private loop: Promise<void> | null = null;
  private closed = false;
  private readonly m: ReturnType<typeof schedulerMetrics>;
  /** Called after every step (its tokens delivered) with what it did: bench and tests. */
  onStep: ((s: { rows: number; prefillRows: number; running: number; ms: number }) => void) | null = null;

  constructor(
    readonly engine: SchedulerEngine,
    readonly tokenizer: TextTokenizer,
    opts: SchedulerOptions = {},
  ) {
    const o = { ...DEFAULTS, ...Object.fromEntries(Object.entries(opts).filter(([, v]) => v !== undefined)) };
    for (const k of ['maxQueue', 'maxRunning', 'prefillBudget', 'kvGrowTokens', 'prefixMinTokens'] as const) {
      const min = k === 'maxQueue' ? 0 : 1;
      if (!Number.isInteger(o[k]) || o[k] < min) throw new UserError(`scheduler ${k} must be an integer >= ${min}, got ${o[k]}`);
    }
    if (!(o.kvBudgetBytes > 0)) throw new UserError(`scheduler kvBudgetBytes must be positive, got ${o.kvBudgetBytes}`);
    this.opts = {
      kvBudgetBytes: o.kvBudgetBytes,
      kvGrowTokens: o.kvGrowTokens,
      prefixCache: o.prefixCache,
      prefixMinTokens: o.prefixMinTokens,
      maxQueue: o.maxQueue,
      maxRunning: o.maxRunning,
      prefillBudget: o.prefillBudget,
    };
    this.prefix = this.opts.prefixCache ? new PrefixCache(this.opts.prefixMinTokens) : null;
    this.kv = new KvBudget(engine, this.opts.kvBudgetBytes, this.opts.kvGrowTokens, this.prefix);
    this.limits = new RequestLimits(engine, this.opts.kvBudgetBytes);
    this.m = schedulerMetrics(opts.metrics ?? globalMetrics, () => this.stats);
    this.onSubmit = opts.onSubmit;
    this.sharing = new PrefixSharing(this.prefix, this.opts.prefixMinTokens, engine, (n) => this.m.prefixHit.inc(undefined, n));
  }

  /**
   * Sequences in the batch now / waiting; bytes of KV cache running sequences hold, and
   * finished ones kept for their prefixes; preemptions so far.
   */
  get stats(): SchedulerStats {
    return {
      running: this.running.length,
      waiting: this.waiting.length,
      kvBytes: this.kv.reserved,
      kvBudget: this.opts.kvBudgetBytes,
      prefixCacheBytes: this.prefix?.bytes ?? 0,
      preemptions: this.preemptions,
    };
  }

  /** One sequence; see submitAll. */
  submit(req: GenerationRequest): SequenceHandle {
    return this.submitAll([req])[0];
  }

  /**
   * Queues the requests together (all or none): throws UserError for a request that can
   * never run, QueueFullError when the wait queue has no room for all of them.
   */
  submitAll(reqs: GenerationRequest[]): SequenceHandle[] {
    if (this.closed) throw new SchedulerClosedError('the server is shutting down: retry on another instance');
    const sizes = reqs.map((r) => {
      this.limits.check(r.promptIds, r.maxTokens);
      return this.kv.bytesFor(this.kv.firstTokens(r.promptIds.length, r.promptIds.length, r.maxTokens));
    });
    // Even on an idle server more would wait than the queue holds: it can never be taken (not a retry later).
    const idleQueued = queuedOf(sizes, this.opts.kvBudgetBytes, this.opts.maxRunning, true);
    if (idleQueued > this.opts.maxQueue) {
      throw new UserError(
        `n: the request has ${reqs.length} sequences (prompts x n) but even an idle server starts only ${reqs.length - idleQueued} ` +
          `of them at once (running limit and KV budget) and queues ${this.opts.maxQueue} more: send fewer prompts or a lower n`,
        'n',
      );
    }
    // Requests that would not start right away take queue slots.
    const queued = queuedOf(sizes, this.opts.kvBudgetBytes - this.kv.reserved, this.opts.maxRunning - this.running.length, this.waiting.length === 0);
    // Preempted sequences wait too, but they were admitted once: they take no new request's slot.
    const newWaiting = this.waiting.filter((h) => !h.seq).length;
    if (queued > 0 && newWaiting + queued > this.opts.maxQueue) {
      this.m.rejected.inc();
      throw new QueueFullError(
        `the server is at capacity (${this.running.length} sequences running, ${this.waiting.length} waiting, queue limit ${this.opts.maxQueue}): retry later`,
      );
    }
    const handles = reqs.map((r) => new SequenceHandle(this.nextId++, r, (h) => this.onCancel(h)));
    this.waiting.push(...handles);
    this.admit();
    this.kick();
    this.onSubmit?.(reqs, handles);
    return handles;
  }

  /** Cancels everything and waits for the loop to stop. */
  async close(): Promise<void> {
    this.closed = true;
    for (const h of [...this.waiting, ...this.running]) h.cancel();
    await this.loop;
    this.prefix?.clear();
  }

  private onCancel(h: SequenceHandle): void {
    const i = this.waiting.indexOf(h);
    if (i >= 0) {
      // Not running: it holds no cache (a preempted one freed its own).
      this.waiting.splice(i, 1);
      this.end(h, 'cancelled');
      this.admit();
    }
    // Running: removed at the next step boundary (its cache may be in use by a step now).
    this.kick();
  }

  /**
   * Moves waiting requests into the batch, in order, while budget and slots allow. A
   * preempted sequence comes back with a fresh cache and recomputes what it had.
   */
  private admit(): void {
    if (this.closed) return; // close() is cancelling everything: allocate nothing for them
    while (this.waiting.length > 0 && this.running.length < this.opts.maxRunning) {
      const h = this.waiting[0];
      const r = h.req;
      const tokens = this.kv.firstTokens(h.seq?.length ?? r.promptIds.length, r.promptIds.length, r.maxTokens);
      const bytes = this.kv.bytesFor(tokens);
      if (!this.kv.admits(bytes)) break;
      this.waiting.shift();
      // Prompt logprobs need every prompt position computed: no copies for them.
      const known = h.seq ? h.seq.tokens() : r.promptIds;
      let hit = this.prefix && r.promptLogprobs === undefined ? this.sharing.find(this.running, known, known.length - 1) : null;
      this.kv.makeRoom(bytes, hit && 'entry' in hit ? hit.entry : undefined);
      if (hit && 'entry' in hit && hit.entry && !this.prefix!.has(hit.entry)) hit = null;
      const allocate = () => {
        if (h.seq) this.engine.allocate(h.seq, tokens);
        else {
          // The request's options are the sequence's, as they are; its stop strings go to its text.
          h.seq = this.engine.newSequence(r.promptIds, r, tokens);
          h.output = new OutputText(this.tokenizer, r.promptIds, r);
        }
      };
      try {
        this.withNativeMemory(allocate, () => {
          if (hit && 'entry' in hit && hit.entry) hit = null; // kept prefixes are freed; a running sequence's cache stays
        });
      } catch (e) {
        if (e instanceof UserError) {
          h.fail(e);
          continue;
        }
        // Out of native memory (the budget counts what caches hold, not the allocator's
        // fragmentation or a grow's old + new copy): wait for the running ones to give some back.
        if (this.running.length > 0) {
          this.waiting.unshift(h);
          break;
        }
        h.fail(new StepError(e));
        continue;
      }
      if (this.prefix) this.m.prefixQueried.inc(undefined, known.length - 1); // the last token is always computed
      h.kvBytes = bytes;
      this.kv.reserved += bytes;
      h.cachedTokens = 0;
      this.sharing.use(h, hit);
      // In submission order (a requeued older one goes back before newer ones): the last is the newest.
      insertBySubmission(this.running, h);
    }
  }

  /**
   * Runs a native allocation; when it fails and kept prefix caches hold native memory, frees
   * them (`onCleared` first: a hit into them is gone) and tries once more.
   */
  private withNativeMemory<T>(run: () => T, onCleared: () => void = () => undefined): T {
    try {
      return run();
    } catch (e) {
      if (e instanceof UserError || !this.prefix || this.prefix.size === 0) throw e;
      onCleared();
      this.prefix.clear();
      return run();
    }
  }

  /**
   * Makes room in each cache of the batch for the rows this step writes, oldest sequence
   * first; where the budget is short, preempts the newest running ones. Returns the batch
   * left to step.
   */
  private async reserveKv(batch: SequenceHandle[]): Promise<SequenceHandle[]> {
    const left = new Set(batch);
    for (const h of batch) {
      if (!left.has(h)) continue; // preempted for an older one
      if (h.cancelRequested) {
        // Cancelled during an await of this pass: no room is made for it.
        left.delete(h);
        this.endCancelled(h, false);
        continue;
      }
      if (h.copying) {
        // Still set while awaited: no request copies from this cache before its copy is in.
        try {
          await h.copying;
          h.copying = null;
        } catch (e) {
          h.copying = null;
          left.delete(h);
          this.leave(h, () => h.fail(new StepError(e)));
          continue;
        }
      }
      const seq = h.seq!;
      const pending = seq.pendingPrompt;
      const need = seq.computed + (pending > 0 ? Math.min(pending, this.opts.prefillBudget) : 1);
      const have = seq.cache!.maxTokens;
      if (need <= have) continue;
      // Grow by a quarter (at least kvGrowTokens), or as far as the budget allows but never less
      // than a kvGrowTokens step: only when not even that fits is the policy's victim preempted.
      const limit = this.engine.kvTokensLimit(seq.promptIds.length, seq.opts.maxTokens);
      const { want, least } = this.kv.growth(need, have, limit);
      this.kv.makeRoom(this.kv.bytesFor(want) - h.kvBytes);
      const fitting = () => this.kv.tokensFitting(h.kvBytes);
      while (fitting() < least) {
        const victim = preemptionVictim(this.running)!;
        this.preempt(victim);
        left.delete(victim);
        if (victim === h) break;
        this.kv.makeRoom(this.kv.bytesFor(least) - h.kvBytes);
      }
      if (!left.has(h)) continue;
      const tokens = Math.min(want, fitting());
      const extra = this.kv.bytesFor(tokens) - h.kvBytes;
      // Held before the await: a submit meanwhile must not admit into these bytes.
      this.kv.reserved += extra;
      h.kvBytes += extra;
      let error = await this.tryGrow(seq, tokens);
      // Likely out of native memory. Kept prefixes hold some: free them. Then, as for the budget,
      // the newest running sequence gives its cache back (requeued); last, this one is requeued.
      if (error && this.prefix && this.prefix.size > 0) {
        this.prefix.clear();
        error = await this.tryGrow(seq, tokens);
      }
      const newest = preemptionVictim(this.running);
      if (error && newest && newest !== h && !h.cancelRequested) {
        this.preempt(newest);
        left.delete(newest);
        error = await this.tryGrow(seq, tokens);
      }
      if (!error) continue;
      this.kv.reserved -= extra;
      h.kvBytes -= extra;
      left.delete(h);
      if (h.cancelRequested) this.endCancelled(h, false);
      else if (this.running.length > 1) this.preempt(h);
      else this.leave(h, () => h.fail(new StepError(error)));
    }
    // Cancelled during a later member's await: not stepped (no delta after cancel()).
    for (const h of batch) {
      if (left.has(h) && h.cancelRequested) {
        left.delete(h);
        this.endCancelled(h);
      }
    }
    return batch.filter((h) => left.has(h));
  }

  /** engine.grow; its error, or undefined when it grew. */
  private async tryGrow(seq: Sequence, tokens: number): Promise<unknown> {
    try {
      await this.engine.grow(seq, tokens);
      return undefined;
    } catch (e) {
      return e ?? new Error('growing a KV cache failed');
    }
  }

  /**
   * Frees a running sequence's cache and puts it first in the queue; it keeps its output.
   * One cancelled since the last reap ends now instead of waiting to be readmitted.
   */
  private preempt(h: SequenceHandle): void {
    if (h.cancelRequested) {
      this.endCancelled(h, false);
      return;
    }
    this.running.splice(this.running.indexOf(h), 1);
    this.engine.release(h.seq!);
    h.copying = null;
    h.waitFor = null;
    this.kv.reserved -= h.kvBytes;
    h.kvBytes = 0;
    h.preemptions++;
    this.preemptions++;
    this.m.preemptions.inc();
    // Back in submission order: before every waiting request submitted after it.
    insertBySubmission(this.waiting, h);
  }

  private kick(): void {
    if (this.loop || (this.running.length === 0 && this.waiting.length === 0)) return;
    this.loop = this.run()
      .catch((e) => this.failAll(e))
      .finally(() => {
        this.loop = null;
        this.kick();
      });
  }

  /** A bug in the loop: every sequence fails with it (and frees its cache) instead of the process crashing. */
  private failAll(e: unknown): void {
    for (const h of this.waiting.splice(0)) h.fail(e);
    for (const h of [...this.running]) {
      try {
        this.leave(h, () => h.fail(e));
      } catch {
        this.running.splice(this.running.indexOf(h), 1);
        h.fail(e);
      }
    }
  }

  private async run(): Promise<void> {
    while (this.running.length > 0 || this.waiting.length > 0) {
      this.reap();
      this.admit();
      if (this.running.length === 0) break; // only possible when nothing is waiting either
      this.sharing.resolveWaits(this.running);
      const batch = await this.reserveKv(pickBatch(this.running, this.opts.prefillBudget));
      if (batch.length === 0) continue;
      const t0 = performance.now();
      let result;
      try {
        result = await this.engine.step(batch.map((h) => h.seq!), { prefillChunk: this.opts.prefillBudget });
      } catch (e) {
        const err = new StepError(e);
        for (const h of batch) this.leave(h, () => h.fail(err));
        this.m.stepErrors.inc();
        continue;
      }
      const ms = performance.now() - t0;
      this.m.stepSeconds.observe(undefined, ms / 1000);
      this.m.stepRows.observe(undefined, result.rows);
      if (result.draftTokens) {
        this.m.specDraft.inc(undefined, result.draftTokens);
        this.m.specAccepted.inc(undefined, result.acceptedTokens ?? 0);
      }
      const byId = new Map(batch.map((h) => [h.seq!.id, h]));
      for (const s of result.sampled) {
        const h = byId.get(s.seq.id)!;
        // A speculative step emits several tokens per sequence: none after a stop string matched.
        if (s.stop || h.output!.stopMatched) continue;
        this.onToken(h, s.token, s.logits);
      }
      const running = this.running.length;
      for (const h of batch) if (h.seq!.finished && !h.cancelRequested) this.complete(h);
      this.onStep?.({ rows: result.rows, prefillRows: result.prefillRows, running, ms });
      // Let HTTP callbacks (new requests, disconnects) run between steps.
      await new Promise<void>((r) => setImmediate(r));
    }
  }

  private onToken(h: SequenceHandle, token: number, logits: Float32Array): void {
    h.firstTokenAt ??= performance.now();
    if (h.tokenIds.length === 0) this.m.ttft.observe(undefined, (h.firstTokenAt - h.submittedAt) / 1000);
    h.tokenIds.push(token);
    this.m.tokens.inc();
    let logprobs: LogprobEntry[] | undefined;
    if (h.req.logprobs !== undefined) {
      logprobs = [logprobEntry(logits, token, h.req.logprobs)];
      h.logprobs.push(logprobs[0]);
    }
    if (h.output!.push(token, h.tokenIds.length)) h.seq!.finished = 'stop';
    this.flushText(h, [token], h.output!.stopMatched, logprobs);
  }

  /** Sends text not yet sent, holding back a tail that could still become a stop string. */
  private flushText(h: SequenceHandle, tokenIds: number[], final: boolean, logprobs?: LogprobEntry[]): void {
    const text = h.output!.take(final);
    h.emit(logprobs ? { tokenIds, text, logprobs } : { tokenIds, text });
  }

  private complete(h: SequenceHandle): void {
    const seq = h.seq!;
    if (h.output!.flush(h.tokenIds.length)) seq.finished = 'stop';
    this.flushText(h, [], true);
    this.leave(h, () => this.end(h, seq.finished ?? 'stop'), true);
  }

  private end(h: SequenceHandle, reason: FinishReason): void {
    this.m.finished.inc({ reason });
    const r: GenerationResult = { tokenIds: h.tokenIds, text: h.output?.text ?? '', finishReason: reason, promptTokens: h.req.promptIds.length };
    if (h.req.logprobs !== undefined) r.logprobs = h.logprobs;
    if (h.req.promptLogprobs !== undefined) r.promptLogprobs = h.seq?.promptLogprobs ?? [];
    h.finish(r);
  }

  /** Drops cancelled sequences from the batch (between steps only). */
  private reap(): void {
    for (const h of [...this.running]) if (h.cancelRequested && !h.done) this.endCancelled(h);
  }

  /**
   * Ends a running sequence whose cancel was requested (it failed if its consumer threw).
   * keepCache: its cache may go to the prefix cache (not when it is freed to make room).
   */
  private endCancelled(h: SequenceHandle, keepCache = true): void {
    h.seq!.finished = 'cancelled';
    this.leave(h, () => (h.callbackError !== undefined ? h.fail(h.callbackError) : this.end(h, 'cancelled')), keepCache);
  }

  /**
   * Removes a running sequence, frees its cache and budget, then settles it. `keep`: its
   * cache holds good K/V (it finished or was cancelled between steps), so the prefix cache
   * may keep it for later requests.
   */
  private leave(h: SequenceHandle, settle: () => void, keep = false): void {
    const i = this.running.indexOf(h);
    if (i >= 0) this.running.splice(i, 1);
    const seq = h.seq;
    if (seq) {
      const cache = seq.cache;
      if (keep && this.prefix && cache && !h.copying) {
        const tokens = seq.tokens(seq.computed);
        if (this.prefix.insert(tokens, cache, h.kvBytes)) seq.cache = null; // the prefix cache owns it now
      }
      this.engine.release(seq);
      this.kv.reserved -= h.kvBytes;
      h.kvBytes = 0;
    }
    h.copying = null;
    settle();
  }
}
