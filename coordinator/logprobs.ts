// Log-probabilities of tokens under the model's own distribution: log-softmax of
// the raw logits (before temperature, top-k/p and penalties, as vLLM reports them
// by default), with the most likely alternatives.
import { topKIds } from './sampler';

export interface TopLogprob {
  id: number;
  logprob: number;
}

/** One token's log-probability and the `top` most likely tokens at its position (best first). */
export interface LogprobEntry extends TopLogprob {
  top: TopLogprob[];
}

/** Most alternatives a request may ask for per token (vLLM's default max_logprobs). */
export const MAX_TOP_LOGPROBS = 20;

export function logprobEntry(logits: Float32Array, id: number, top: number): LogprobEntry {
  let max = -Infinity;
  for (let i = 0; i < logits.length; i++) if (logits[i] > max) max = logits[i];
  let sum = 0;
  for (let i = 0; i < logits.length; i++) sum += Math.exp(logits[i] - max);
  const logZ = max + Math.log(sum);
  const ids = top > 0 ? topKIds(logits, top, -Infinity) : [];
  return { id, logprob: logits[id] - logZ, top: ids.map((t) => ({ id: t, logprob: logits[t] - logZ })) };
}
