// One generation: its prompt, what it has produced, its KV cache and sampler state.
import type { NativeKvCache } from '../core/native';
import type { LogprobEntry } from './logprobs';
import { Rng, TokenHistory, type SamplingParams } from './sampler';
import type { StopCriteria } from './stop-criteria';

export type FinishReason = 'stop' | 'length' | 'cancelled' | 'error';

/**
 * How a sequence samples and when it ends. A GenerationRequest carries these as they are, from
 * the API (or a caller of the scheduler) to the engine's Sequence and the scheduler's OutputText.
 */
export interface SequenceOptions extends StopCriteria {
  sampling: SamplingParams;
  maxTokens: number;
  /** Keep the logits of every prompt position (for --dump-logits). */
  keepPromptLogits?: boolean;
  /** Record the log-probability of every prompt token after the first, with this many alternatives. */
  promptLogprobs?: number;
}

export class Sequence {
  readonly outputIds: number[] = [];
  /** Tokens whose K/V are in the cache. */
  computed = 0;
  finished: FinishReason | null = null;
  promptLogits: Float32Array[] = [];
  /** promptLogprobs[k]: prompt token k + 1 (the first token has none); kept through a preemption. */
  readonly promptLogprobs: LogprobEntry[] = [];
  readonly rng: Rng;
  /** For the penalties; grows with the output (pushOutput). */
  readonly history: TokenHistory;

  constructor(
    readonly id: number,
    readonly promptIds: number[],
    /** Null while the scheduler has preempted it (its K/V are recomputed when it comes back). */
    public cache: NativeKvCache | null,
    readonly opts: SequenceOptions,
  ) {
    this.rng = new Rng(opts.sampling.seed ?? Math.floor(Math.random() * 2 ** 52));
    this.history = new TokenHistory(promptIds);
  }

  /** Appends a generated token. */
  pushOutput(token: number): void {
    this.outputIds.push(token);
    this.history.add(token);
  }

  get length(): number {
    return this.promptIds.length + this.outputIds.length;
  }
  /** The first n tokens (default all): prompt, then output. */
  tokens(n = this.length): number[] {
    return [...this.promptIds, ...this.outputIds].slice(0, n);
  }
  tokenAt(i: number): number {
    return i < this.promptIds.length ? this.promptIds[i] : this.outputIds[i - this.promptIds.length];
  }
  /** The logits of position pos are wanted for a prompt token's log-probability not recorded yet. */
  needsPromptLogprob(pos: number): boolean {
    return this.opts.promptLogprobs !== undefined && pos + 1 < this.promptIds.length && pos >= this.promptLogprobs.length;
  }

  /**
   * Tokens to run through the model before it decodes again: the prompt at first, and
   * after a preemption (cache dropped, computed reset) the prompt plus the output so far.
   * 0 while decoding (only the newest token is not in the cache).
   */
  get pendingPrompt(): number {
    const pending = this.length - this.computed;
    return this.computed < this.promptIds.length || pending > 1 ? pending : 0;
  }
}
