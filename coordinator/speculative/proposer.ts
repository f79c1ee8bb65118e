// Speculative decoding's proposers: cheap guesses of a sequence's next tokens,
// which the engine verifies in one forward pass (K proposed tokens + the last
// token as K+1 rows). A proposal is only a guess: the output is the model's
// either way (greedy: identical tokens; sampling: the same distribution).

export interface DraftProposer {
  /** For logs and stats: "ngram:4:3", "suffix:4". */
  readonly name: string;
  /** Most tokens proposed per step (K). */
  readonly k: number;
  /**
   * Up to `k` tokens likely to follow `tokens` (the sequence's prompt then its output so far),
   * most likely continuation first; [] when there is no guess. Called once per decode step.
   */
  propose(seqId: number, tokens: readonly number[], k: number): number[] | Promise<number[]>;
  /** A sequence ended: `tokens` is its prompt then output (a proposer may learn from it, e.g. suffix). */
  finished?(seqId: number, tokens: readonly number[], promptLength: number): void;
  /** Frees what the proposer holds (a draft model); the engine calls it when it closes. */
  close?(): Promise<void>;
}
