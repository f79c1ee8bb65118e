// What ends a sequence besides max_tokens and the context: stop token ids, stop strings, and
// min_tokens, before which neither ends it. One type for the three: SequenceOptions (and so a
// GenerationRequest) carries it; the engine bans and matches the stop ids, OutputText matches
// the stop strings, both after min_tokens.

export interface StopCriteria {
  /** Token ids that end the sequence (EOS); not part of the output. */
  stopIds: number[];
  /** Strings that end it; the text is cut before the first match. */
  stopStrings?: readonly string[];
  /** Neither a stop id nor a stop string ends it before this many tokens are out (vLLM's min_tokens). */
  minTokens?: number;
}

/** Whether the `tokensOut`-th output token (counting from 1) may end the sequence: not before min_tokens are out. */
export function mayStop(stop: Pick<StopCriteria, 'minTokens'>, tokensOut: number): boolean {
  return tokensOut > (stop.minTokens ?? 0);
}

/** The options themselves when they name stop ids, else a copy with `eosIds` (generate()'s default: EOS ends it). */
export function withDefaultStopIds<T extends Partial<StopCriteria>>(opts: T, eosIds: number[]): T & StopCriteria {
  return opts.stopIds ? (opts as T & StopCriteria) : { ...opts, stopIds: eosIds };
}
