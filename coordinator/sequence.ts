// One generation: its prompt, what it has produced, its KV cache and sampler state.
import type { NativeKvCache } from '../core/native';
import { Rng, type SamplingParams } from './sampler';

export type FinishReason = 'stop' | 'length' | 'cancelled' | 'error';

export interface SequenceOptions {
  sampling: SamplingParams;
  maxTokens: number;
  /** Token ids that end the sequence (EOS); not included in the output. */
  stopIds: number[];
  /** Keep the logits of every prompt position (for --dump-logits). */
  keepPromptLogits?: boolean;
}

export class Sequence {
  readonly outputIds: number[] = [];
  /** Tokens whose K/V are in the cache. */
  computed = 0;
  finished: FinishReason | null = null;
  promptLogits: Float32Array[] = [];
  readonly rng: Rng;

  constructor(
    readonly id: number,
    readonly promptIds: number[],
    /** Null while the scheduler has preempted it (its K/V are recomputed when it comes back). */
    public cache: NativeKvCache | null,
    readonly opts: SequenceOptions,
  ) {
    this.rng = new Rng(opts.sampling.seed ?? Math.floor(Math.random() * 2 ** 52));
  }

  get length(): number {
    return this.promptIds.length + this.outputIds.length;
  }
  tokenAt(i: number): number {
    return i < this.promptIds.length ? this.promptIds[i] : this.outputIds[i - this.promptIds.length];
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
