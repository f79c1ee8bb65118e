// The router box: gate logits, softmax, top-k, weights renormalised to sum 1.
import type { NativeBackend, NativeWeight } from '../core/native';

export interface Routes {
  topK: number;
  /** [n, topK] expert ids, highest weight first. */
  experts: Int32Array;
  /** [n, topK] renormalised weights. */
  weights: Float32Array;
}

export async function route(
  backend: NativeBackend,
  gate: NativeWeight,
  n: number,
  hidden: Float32Array,
  numExperts: number,
  topK: number,
): Promise<Routes> {
  const logits = new Float32Array(n * numExperts);
  await backend.matmul(gate, n, hidden, logits);
  const experts = new Int32Array(n * topK);
  const weights = new Float32Array(n * topK);
  await backend.routerTopk(n, numExperts, logits, topK, experts, weights);
  return { topK, experts, weights };
}
