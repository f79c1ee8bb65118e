// THE per-token path. One step runs every layer over a batch of token rows
// (prefill chunks and decode tokens of many sequences at once):
//
//   ids -> embed -> for each layer:
//            attention (KV cache)             [native, local]   attention.ts
//            router -> top-k experts          [native, local]   router.ts
//            predictor -> active-neuron mask  [native, local]   predictor.ts
//            experts (local or across the network)              ExpertBackend
//          -> final norm -> lm_head -> logits
import type { ExpertBackend } from '../core/expert-backend';
import type { NativeBackend } from '../core/native';
import { attentionBlock } from './attention';
import { embedTokens } from './embedding';
import { assertFinite } from './finite';
import type { CoordinatorWeights } from './model-weights';
import { predictGroups } from './predictor';
import { scatterToSlots } from '../core/routed-batch';
import { route } from './router';
import type { StepContext } from './step-context';

/** What one layer decided, kept when a caller asks for it (tests, --json stats). */
export interface LayerRecord {
  experts: Int32Array; // [n, topK]
  weights: Float32Array; // [n, topK]
  active: Int32Array; // [n, topK] neurons computed
}

export interface ForwardResult {
  /** [logitRows.length, vocab] */
  logits: Float32Array;
  /** Sum over layers and routed (row, expert) slots of neurons computed. */
  activeNeurons: number;
  /** Number of (layer, row, expert) slots, times intermediate size = neurons a dense FFN computes. */
  expertSlots: number;
  layers?: LayerRecord[];
}

export interface ForwardHooks {
  /** Before a layer's attention starts (tracing opens the layer's span here). */
  onLayerStart?: (layer: number) => void;
  onLayer?: (layer: number, startNs: bigint, endNs: bigint) => void;
}

export async function forward(
  backend: NativeBackend,
  weights: CoordinatorWeights,
  experts: ExpertBackend,
  ctx: StepContext,
  opts: { record?: boolean; hooks?: ForwardHooks } = {},
): Promise<ForwardResult> {
  const { cfg, n } = ctx;
  const H = cfg.hiddenSize;
  let x: Float32Array = new Float32Array(n * H);
  embedTokens(weights.embed, ctx.tokens, x);

  let activeNeurons = 0;
  const records: LayerRecord[] = [];
  for (let L = 0; L < cfg.numLayers; L++) {
    opts.hooks?.onLayerStart?.(L);
    const t0 = process.hrtime.bigint();
    const w = weights.layers[L];
    const h = await attentionBlock(backend, ctx, L, w, x);

    const normed = new Float32Array(n * H);
    await backend.rmsnorm(w.postNorm, n, H, h, cfg.rmsNormEps, normed);
    const routes = await route(backend, w.gate, n, normed, cfg.numExperts, cfg.topK);
    const routed = await predictGroups(backend, w.predictors, n, H, cfg.intermediateSize, normed, routes);
    // Checked here, not after the experts: no node is sent (nor asked to reject) a broken row.
    assertFinite(normed, H, `layer ${L}: hidden state before the experts`);

    const { out, active } = await experts.runExperts(
      { layer: L, nRows: n, hidden: normed, maskRowBytes: routed.rowBytes, groups: routed.groups },
      { stepId: ctx.stepId },
    );
    assertFinite(out, H, `layer ${L}: expert output`);
    for (let i = 0; i < out.length; i++) out[i] += h[i];
    x = out;

    for (const a of active) activeNeurons += a;
    if (opts.record) {
      records.push({ experts: routes.experts, weights: routes.weights, active: scatterToSlots(active, routed.slots, n * routes.topK) });
    }
    opts.hooks?.onLayer?.(L, t0, process.hrtime.bigint());
  }

  // Only the rows whose logits are wanted go through the final norm and lm_head.
  const m = ctx.logitRows.length;
  const last = new Float32Array(m * H);
  for (let j = 0; j < m; j++) last.set(x.subarray(ctx.logitRows[j] * H, (ctx.logitRows[j] + 1) * H), j * H);
  await backend.rmsnorm(weights.finalNorm, m, H, last, cfg.rmsNormEps, last);
  const logits = new Float32Array(m * cfg.vocabSize);
  await backend.matmul(weights.lmHead, m, last, logits);
  assertFinite(logits, cfg.vocabSize, 'logits');
  return {
    logits,
    activeNeurons,
    expertSlots: cfg.numLayers * n * cfg.topK,
    layers: opts.record ? records : undefined,
  };
}
