// `--speculative draft:DIR[:K]`: a small model of the same tokenizer runs on the
// coordinator (its experts in process) and proposes its K greedy tokens. Per
// target sequence it keeps a draft sequence whose KV cache follows the target's
// tokens: each call drops the draft's own guesses past the tokens the target
// kept, feeds it the tokens it has not seen (one step), then decodes K tokens.
import { isDeepStrictEqual } from 'node:util';
import { UserError } from '../../core/errors';
import type { Engine } from '../engine';
import { GREEDY } from '../sampler';
import type { Sequence } from '../sequence';
import type { DraftProposer } from './proposer';

export class DraftModelProposer implements DraftProposer {
  readonly name: string;
  private readonly seqs = new Map<number, Sequence>();

  /**
   * `draft` proposes for `target`: both must share the tokenizer (the same tokenizer.json and
   * vocabulary size), or proposals would be other tokens' ids.
   */
  constructor(readonly draft: Engine, target: Engine, readonly k: number) {
    const d = draft.folder;
    const t = target.folder;
    if (d.config.vocabSize !== t.config.vocabSize || !isDeepStrictEqual(d.tokenizerJson, t.tokenizerJson)) {
      throw new UserError(`--speculative draft:${d.dir}: its tokenizer differs from the model's (${t.dir}); ` +
        'a draft model must use the same tokenizer.json and vocabulary');
    }
    this.name = `draft:${d.dir}:${k}`;
    draft.proposer = null; // the draft itself decodes plainly
  }

  async propose(seqId: number, tokens: readonly number[], k: number): Promise<number[]> {
    const seq = this.sync(seqId, tokens, k);
    await this.ensureRoom(seq, k);
    const proposals: number[] = [];
    while (proposals.length < k && !seq.finished) {
      const r = await this.draft.step([seq]);
      for (const s of r.sampled) if (!s.stop) proposals.push(s.token);
    }
    return proposals.slice(0, k);
  }

  finished(seqId: number): void {
    const seq = this.seqs.get(seqId);
    if (seq) this.draft.release(seq);
    this.seqs.delete(seqId);
  }

  /** Frees every draft sequence and the draft engine. */
  async close(): Promise<void> {
    for (const id of [...this.seqs.keys()]) this.finished(id);
    await this.draft.close();
  }

  /**
   * The draft sequence for `seqId`, holding exactly `tokens` (its guesses past them dropped,
   * tokens it has not seen appended) with room in its cache for `k` more.
   */
  private sync(seqId: number, tokens: readonly number[], k: number): Sequence {
    let seq = this.seqs.get(seqId);
    const context = this.draft.config.maxPositionEmbeddings;
    if (seq) {
      const have = seq.tokens();
      let common = 0;
      while (common < have.length && common < tokens.length && have[common] === tokens[common]) common++;
      if (common < seq.promptIds.length) {
        // The target rewrote the prompt's tokens (a new request under a reused id): start over.
        this.finished(seqId);
        seq = undefined;
      } else {
        seq.outputIds.splice(common - seq.promptIds.length);
        seq.computed = Math.min(seq.computed, common);
        seq.finished = null;
        for (const t of tokens.slice(common)) seq.pushOutput(t);
      }
    }
    if (!seq) {
      seq = this.draft.newSequence([...tokens], { sampling: GREEDY, maxTokens: context, stopIds: [] }, Math.min(context, tokens.length + k + 64));
      this.seqs.set(seqId, seq);
    }
    return seq;
  }

  /** Grows a draft cache that its tokens and `k` more would not fit. */
  private async ensureRoom(seq: Sequence, k: number): Promise<void> {
    if (!seq.cache) return;
    const need = Math.min(this.draft.config.maxPositionEmbeddings, seq.length + k + 1);
    if (need > seq.cache.maxTokens) await this.draft.grow(seq, Math.min(this.draft.config.maxPositionEmbeddings, Math.max(need, 2 * seq.cache.maxTokens)));
  }
}
