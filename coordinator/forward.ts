// THE per-token path. One step runs every layer over a batch of token rows
// (prefill chunks and decode tokens of many sequences at once):
//
//   ids -> embed -> for each layer:
//            attention (KV cache)             [native, local]   attention.ts
//            router -> top-k experts          [native, local]   router.ts
//            predictor -> active-neuron mask  [native, local]   predictor.ts
//            experts (local or across the network)              ExpertBackend
//          -> final norm -> lm_head -> logits
//
// Overlap (`microBatches: 2`): the rows split in two micro-batches that run the
// layers as two pipelined lanes, so while one lane's expert calls are on the
// wire the other's attention, router and predictors run. Lane 1's attention of
// a layer waits for lane 0's (a sequence split across the lanes reads lane 0's
// K/V); every row meets the same kernels with the same inputs, so the result is
// bit-identical to one batch.
import type { ExpertBackend } from '../core/expert-backend';
import type { NativeBackend } from '../core/native';
import { scatterToSlots, type ExpertGroup } from '../core/routed-batch';
import { attentionBlock } from './attention';
import { embedTokens } from './embedding';
import { assertFinite } from './finite';
import type { CoordinatorWeights } from './model-weights';
import { predictGroups } from './predictor';
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
  /** Before a layer's first attention starts (tracing opens the layer's span here). */
  onLayerStart?: (layer: number) => void;
  /** After the layer's last expert output (with overlap, layers of the two lanes overlap in time). */
  onLayer?: (layer: number, startNs: bigint, endNs: bigint) => void;
  /** After a lane's experts of a layer answered: its routed groups and neurons computed per route (routing statistics). */
  onExperts?: (layer: number, nRows: number, groups: readonly ExpertGroup[], active: Int32Array) => void;
}

export interface ForwardOptions {
  record?: boolean;
  hooks?: ForwardHooks;
  /** 2: two pipelined micro-batches (when the step has at least 2 rows); 1 (default): one batch. */
  microBatches?: number;
}

/** One micro-batch: rows [first, first + ctx.n) of the step. */
interface Lane {
  ctx: StepContext;
  first: number;
  microBatch?: number;
}

interface LaneResult {
  x: Float32Array;
  activeNeurons: number;
  records: LayerRecord[];
}

export async function forward(
  backend: NativeBackend,
  weights: CoordinatorWeights,
  experts: ExpertBackend,
  ctx: StepContext,
  opts: ForwardOptions = {},
): Promise<ForwardResult> {
  const { cfg, n } = ctx;
  const H = cfg.hiddenSize;
  const split = (opts.microBatches ?? 1) > 1 && n >= 2 ? Math.ceil(n / 2) : n;
  const lanes: Lane[] = split < n
    ? [{ ctx: rowsOf(ctx, 0, split), first: 0, microBatch: 0 }, { ctx: rowsOf(ctx, split, n), first: split, microBatch: 1 }]
    : [{ ctx, first: 0 }];
  const run = new LaneSync(cfg.numLayers, lanes.length, opts.hooks);
  const settled = await Promise.allSettled(lanes.map((lane, i) => runLane(backend, weights, experts, lane, i, run, !!opts.record)));
  // Both lanes have stopped before the step returns (a caller may free the caches on failure).
  const failed = settled.find((s): s is PromiseRejectedResult => s.status === 'rejected');
  if (failed) throw failed.reason;
  const parts = settled.map((s) => (s as PromiseFulfilledResult<LaneResult>).value);

  const x = parts.length === 1 ? parts[0].x : concat(parts.map((p) => p.x), (k) => new Float32Array(k));
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
    activeNeurons: parts.reduce((a, p) => a + p.activeNeurons, 0),
    expertSlots: cfg.numLayers * n * cfg.topK,
    layers: opts.record ? mergeRecords(parts.map((p) => p.records)) : undefined,
  };
}

/** Every layer over one lane's rows. */
async function runLane(backend: NativeBackend, weights: CoordinatorWeights, experts: ExpertBackend, lane: Lane, index: number,
  sync: LaneSync, record: boolean): Promise<LaneResult> {
  const { ctx, first } = lane;
  const { cfg, n } = ctx;
  const H = cfg.hiddenSize;
  let x: Float32Array = new Float32Array(n * H);
  embedTokens(weights.embed, ctx.tokens, x);
  let activeNeurons = 0;
  const records: LayerRecord[] = [];
  try {
    for (let L = 0; L < cfg.numLayers; L++) {
      await sync.beforeAttention(index, L);
      const w = weights.layers[L];
      const h = await attentionBlock(backend, ctx, L, w, x);
      sync.attentionDone(index, L);

      const normed = new Float32Array(n * H);
      await backend.rmsnorm(w.postNorm, n, H, h, cfg.rmsNormEps, normed);
      const routes = await route(backend, w.gate, n, normed, cfg.numExperts, cfg.topK);
      const routed = await predictGroups(backend, w.predictors, n, H, cfg.intermediateSize, normed, routes);
      // Checked here, not after the experts: no node is sent (nor asked to reject) a broken row.
      assertFinite(normed, H, `layer ${L}: hidden state before the experts`, first);

      const { out, active } = await experts.runExperts(
        { layer: L, nRows: n, hidden: normed, maskRowBytes: routed.rowBytes, groups: routed.groups },
        { stepId: ctx.stepId, ...(lane.microBatch === undefined ? {} : { microBatch: lane.microBatch }) },
      );
      assertFinite(out, H, `layer ${L}: expert output`, first);
      sync.expertsDone(L, n, routed.groups, active);
      for (let i = 0; i < out.length; i++) out[i] += h[i];
      x = out;

      for (const a of active) activeNeurons += a;
      if (record) {
        records.push({ experts: routes.experts, weights: routes.weights, active: scatterToSlots(active, routed.slots, n * routes.topK) });
      }
      sync.layerDone(L);
    }
  } catch (e) {
    sync.fail(e);
    throw e;
  }
  return { x, activeNeurons, records };
}

/**
 * The two lanes' ordering and the per-layer hooks: lane 1 starts a layer's
 * attention after lane 0's; onLayerStart fires at a layer's first start and
 * onLayer after its last lane finished it. A failing lane stops the other.
 */
class LaneSync {
  private readonly started: bigint[] = [];
  private readonly done: number[];
  private readonly attention: { promise: Promise<void>; resolve(): void; reject(e: unknown): void }[] = [];
  private failure: { error: unknown } | undefined;

  constructor(layers: number, private readonly lanes: number, private readonly hooks?: ForwardHooks) {
    this.done = new Array<number>(layers).fill(0);
    if (lanes > 1) {
      for (let L = 0; L < layers; L++) {
        let resolve!: () => void;
        let reject!: (e: unknown) => void;
        const promise = new Promise<void>((res, rej) => ((resolve = res), (reject = rej)));
        promise.catch(() => undefined); // rejected only to stop lane 1; lane 0 reports the error
        this.attention.push({ promise, resolve, reject });
      }
    }
  }

  async beforeAttention(lane: number, layer: number): Promise<void> {
    if (this.failure) throw this.failure.error;
    if (lane > 0) await this.attention[layer].promise;
    if (this.started[layer] === undefined) {
      this.started[layer] = process.hrtime.bigint();
      this.hooks?.onLayerStart?.(layer);
    }
  }

  attentionDone(lane: number, layer: number): void {
    if (lane === 0 && this.lanes > 1) this.attention[layer].resolve();
  }

  expertsDone(layer: number, n: number, groups: readonly ExpertGroup[], active: Int32Array): void {
    this.hooks?.onExperts?.(layer, n, groups, active);
  }

  layerDone(layer: number): void {
    if (++this.done[layer] === this.lanes) this.hooks?.onLayer?.(layer, this.started[layer], process.hrtime.bigint());
  }

  fail(error: unknown): void {
    if (this.failure) return;
    this.failure = { error };
    for (const a of this.attention) a.reject(error);
  }
}

/** The step context of rows [from, to). */
function rowsOf(ctx: StepContext, from: number, to: number): StepContext {
  return {
    cfg: ctx.cfg,
    n: to - from,
    tokens: ctx.tokens.subarray(from, to),
    positions: ctx.positions.subarray(from, to),
    caches: ctx.caches.slice(from, to),
    logitRows: new Int32Array(0),
    stepId: ctx.stepId,
  };
}

/** The parts one after another (lanes' rows in step order). */
function concat<T extends Float32Array | Int32Array>(parts: T[], make: (n: number) => T): T {
  const out = make(parts.reduce((a, p) => a + p.length, 0));
  let at = 0;
  for (const p of parts) {
    out.set(p, at);
    at += p.length;
  }
  return out;
}

/** Per layer, the lanes' records joined in row order. */
function mergeRecords(lanes: LayerRecord[][]): LayerRecord[] {
  if (lanes.length === 1) return lanes[0];
  return lanes[0].map((_, L) => ({
    experts: concat(lanes.map((l) => l[L].experts), (k) => new Int32Array(k)),
    weights: concat(lanes.map((l) => l[L].weights), (k) => new Float32Array(k)),
    active: concat(lanes.map((l) => l[L].active), (k) => new Int32Array(k)),
  }));
}
