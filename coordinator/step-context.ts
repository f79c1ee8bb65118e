// Per-step metadata shared by every box of the forward pass (nano-vllm style):
// which token rows run, at which positions, against which KV caches.
import type { ModelConfig } from '../core/config';
import type { NativeKvCache } from '../core/native';

export interface StepContext {
  cfg: ModelConfig;
  /** Token rows in this step (prefill chunks and decode tokens of all sequences). */
  n: number;
  tokens: Int32Array;
  positions: Int32Array;
  caches: NativeKvCache[];
  /** Row indices whose logits are wanted (e.g. each sequence's last row). */
  logitRows: Int32Array;
  /** Step number, for tracing and expert-node requests. */
  stepId: number;
}
