// One submitted sequence as its caller sees it: the request, its output as callbacks, an async
// iterator of deltas and a final result; and the per-sequence state the scheduler keeps on it.
import type { LogprobEntry } from './logprobs';
import type { OutputText } from './output-text';
import type { FinishReason, Sequence, SequenceOptions } from './sequence';

/**
 * A request to the scheduler: a prompt and its SequenceOptions (sampling, max tokens, stop
 * criteria, prompt logprobs), which become the Sequence's options as they are.
 */
export interface GenerationRequest extends SequenceOptions {
  promptIds: number[];
  /** Called for every new piece of output, in order. */
  onDelta?: (delta: Delta) => void;
  /** Report each generated token's log-probability with this many alternatives (undefined: none). */
  logprobs?: number;
}

/** New output since the last delta: ids sampled and the text they completed (stop-string candidates held back). */
export interface Delta {
  tokenIds: number[];
  text: string;
  /** One per token id, when the request asked for logprobs. */
  logprobs?: LogprobEntry[];
}

export interface GenerationResult {
  tokenIds: number[];
  text: string;
  finishReason: FinishReason;
  promptTokens: number;
  /** One per token id, when the request asked for logprobs. */
  logprobs?: LogprobEntry[];
  /** Prompt tokens 1.. (the first has none), when the request asked for promptLogprobs. */
  promptLogprobs?: LogprobEntry[];
}

type Item = { delta: Delta } | { end: GenerationResult } | { error: unknown };

/** One submitted sequence: its output as callbacks, an async iterator of deltas, and a final result. */
export class SequenceHandle implements AsyncIterable<Delta> {
  /** Resolves at the end (also when cancelled); rejects when the engine failed. */
  readonly result: Promise<GenerationResult>;
  readonly tokenIds: number[] = [];
  readonly logprobs: LogprobEntry[] = [];
  private resolve!: (r: GenerationResult) => void;
  private reject!: (e: unknown) => void;
  private readonly items: Item[] = [];
  private wake: (() => void) | null = null;
  private iterating = false;
  /** Set once; the scheduler acts on it between steps. */
  cancelRequested = false;
  done = false;
  seq: Sequence | null = null;
  /** KV-cache bytes it holds now (0 while waiting). */
  kvBytes = 0;
  /** Times it was preempted. */
  preemptions = 0;
  /** Prompt positions copied from the prefix cache when it (last) started. */
  cachedTokens = 0;
  /** A prefix copy into its new cache, awaited before its first step. */
  copying: Promise<void> | null = null;
  /** Parked (not stepped) until `src` has computed the `length` tokens they share, then copies them. */
  waitFor: { src: SequenceHandle; length: number; srcPreemptions: number } | null = null;
  readonly submittedAt = performance.now();
  firstTokenAt: number | null = null;
  /** What onDelta threw: the sequence fails with it. */
  callbackError: unknown = undefined;
  /** Its output text (stop strings applied); made when it first starts. */
  output: OutputText | null = null;

  constructor(
    readonly id: number,
    readonly req: GenerationRequest,
    private readonly onCancel: (h: SequenceHandle) => void,
  ) {
    this.result = new Promise<GenerationResult>((res, rej) => {
      this.resolve = res;
      this.reject = rej;
    });
    // A caller that only iterates must not see an unhandled rejection.
    this.result.catch(() => undefined);
  }

  /** Stops generation at the next step boundary and frees the KV cache; result resolves with 'cancelled'. */
  cancel(): void {
    if (this.done || this.cancelRequested) return;
    this.cancelRequested = true;
    this.onCancel(this);
  }

  emit(delta: Delta): void {
    if (delta.tokenIds.length === 0 && delta.text === '') return;
    try {
      this.req.onDelta?.(delta);
    } catch (e) {
      // A broken consumer ends its own sequence, never the loop.
      this.callbackError = e;
      this.cancel();
    }
    if (this.iterating) this.push({ delta });
  }

  finish(r: GenerationResult): void {
    if (this.done) return;
    this.done = true;
    this.push({ end: r });
    this.resolve(r);
  }

  fail(e: unknown): void {
    if (this.done) return;
    this.done = true;
    this.push({ error: e });
    this.reject(e);
  }

  private push(item: Item): void {
    this.items.push(item);
    this.wake?.();
    this.wake = null;
  }

  /** Deltas from the moment iteration starts; ends at finish, throws if the engine failed. */
  async *[Symbol.asyncIterator](): AsyncIterator<Delta> {
    this.iterating = true;
    for (;;) {
      const item = this.items.shift();
      if (!item) {
        if (this.done && this.items.length === 0) return;
        await new Promise<void>((r) => (this.wake = r));
        continue;
      }
      if ('delta' in item) yield item.delta;
      else if ('end' in item) return;
      else throw item.error;
    }
  }
}
