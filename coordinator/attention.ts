// The attention box of one layer: input norm, fused q/k/v projection, RoPE,
// causal GQA attention over each row's KV cache, output projection.
// Returns h = x + o_proj(attn(...)), the residual stream after attention.
import type { NativeBackend } from '../core/native';
import type { LayerWeights } from './model-weights';
import type { StepContext } from './step-context';

export async function attentionBlock(
  backend: NativeBackend,
  ctx: StepContext,
  layer: number,
  w: LayerWeights,
  x: Float32Array,
): Promise<Float32Array> {
  const { n, cfg } = ctx;
  const H = cfg.hiddenSize;
  const qDim = cfg.numHeads * cfg.headDim;
  const kvDim = cfg.numKvHeads * cfg.headDim;
  const normed = new Float32Array(n * H);
  await backend.rmsnorm(w.inputNorm, n, H, x, cfg.rmsNormEps, normed);

  const qkv = new Float32Array(n * (qDim + 2 * kvDim));
  await backend.matmul(w.qkv, n, normed, qkv);
  const q = new Float32Array(n * qDim);
  const k = new Float32Array(n * kvDim);
  const v = new Float32Array(n * kvDim);
  const stride = qDim + 2 * kvDim;
  for (let i = 0; i < n; i++) {
    const row = qkv.subarray(i * stride, (i + 1) * stride);
    q.set(row.subarray(0, qDim), i * qDim);
    k.set(row.subarray(qDim, qDim + kvDim), i * kvDim);
    v.set(row.subarray(qDim + kvDim), i * kvDim);
  }
  await backend.rope(n, cfg.numHeads, cfg.headDim, ctx.positions, cfg.ropeTheta, q);
  await backend.rope(n, cfg.numKvHeads, cfg.headDim, ctx.positions, cfg.ropeTheta, k);

  const attn = new Float32Array(n * qDim);
  await backend.attention(layer, n, ctx.caches, ctx.positions, cfg.numHeads, cfg.numKvHeads, cfg.headDim, q, k, v, attn);
  const o = new Float32Array(n * H);
  await backend.matmul(w.o, n, attn, o);
  for (let i = 0; i < o.length; i++) o[i] += x[i];
  return o;
}
