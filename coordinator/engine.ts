// The engine: a loaded model plus `step()` = schedule rows -> forward -> sample.
// It knows nothing of HTTP, gRPC, queues or telemetry; they observe it through
// declared seams: the ExpertBackend it is given (telemetry's ObservedExperts
// wraps it), EngineHooks around every step, and ForwardHooks per layer.
import type { ExpertBackend } from '../core/expert-backend';
import type { ModelConfig } from '../core/config';
import type { ModelFolder } from '../core/model-folder';
import { KV_DTYPE_BYTES, type KvDType, type NativeBackend, type NativeKvCache } from '../core/native';
import { forward, type ForwardHooks, type LayerRecord } from './forward';
import type { CoordinatorWeights } from './model-weights';
import { logprobEntry } from './logprobs';
import { applyPenalties, sample, sampleVerifying } from './sampler';
import type { DraftProposer } from './speculative/proposer';
import { checkPrompt } from './request-limits';
import { OverlapTuner } from './overlap-tuner';
import { Sequence, type SequenceOptions } from './sequence';
import type { StepContext } from './step-context';

export interface StepResult {
  /** Per sequence that sampled a token this step. */
  /** Per sequence that sampled a token this step; `stop` marks an EOS/stop id (not part of the output). */
  sampled: { seq: Sequence; token: number; stop: boolean; logits: Float32Array }[];
  rows: number;
  prefillRows: number;
  activeNeurons: number;
  expertSlots: number;
  layers?: LayerRecord[];
  /** Speculative decoding: tokens proposed (verified as extra rows) and how many of them the model kept. */
  draftTokens?: number;
  acceptedTokens?: number;
}

export interface StepOptions {
  prefillChunk?: number;
  record?: boolean;
  hooks?: ForwardHooks;
  /** Overrides the engine's overlap for this step (1: one batch, 2: two pipelined micro-batches). */
  microBatches?: number;
}

/**
 * Two pipelined micro-batches per step (forward.ts). `auto`: never for in-process
 * experts; with remote experts (a backend with per-node stats) the engine times
 * steps both ways per batch size and keeps the faster (overlap-tuner.ts).
 */
export const OVERLAP_MODES = ['auto', 'on', 'off'] as const;

/** `--speculative-max-batch` default: above this many decoding sequences a step proposes nothing (measured: bench/RESULTS.md). */
export const DEFAULT_SPECULATIVE_MAX_BATCH = 4;
export type OverlapMode = (typeof OVERLAP_MODES)[number];

export type StepRunner = (seqs: Sequence[], opts: StepOptions) => Promise<StepResult>;

/** Instrumentation the engine runs (telemetry gives these; the engine imports none). */
export interface EngineHooks {
  /**
   * Runs around every step: at step start it may add ForwardHooks (per layer) to the
   * options and run `step` once (e.g. inside a tracing context); at step end it sees the result.
   */
  aroundStep?(seqs: Sequence[], opts: StepOptions, step: StepRunner): Promise<StepResult>;
}

/** What `Engine.instrument` installs: step hooks, and the expert backend to use instead of the loaded one. */
export interface EngineInstrumentation {
  hooks?: EngineHooks;
  /** Builds the backend the forward pass calls from the loaded one (e.g. an ObservedExperts around it). */
  experts?: (inner: ExpertBackend) => ExpertBackend;
}

/** `outer` around `inner` around the step. */
function chainHooks(outer: EngineHooks, inner: EngineHooks): EngineHooks {
  return {
    aroundStep(seqs, opts, step) {
      const innerStep: StepRunner = (s, o) => (inner.aroundStep ? inner.aroundStep(s, o, step) : step(s, o));
      return outer.aroundStep ? outer.aroundStep(seqs, opts, innerStep) : innerStep(seqs, opts);
    },
  };
}

export class Engine {
  private nextSeqId = 1;
  private stepId = 0;
  /** How KV caches store K/V. */
  readonly kvDtype: KvDType;
  /** Whether steps run as two pipelined micro-batches (see OverlapMode); may be changed between steps. */
  overlap: OverlapMode;
  /** What `auto` has measured (both ways per batch size). */
  readonly overlapTuner = new OverlapTuner();
  /** Speculative decoding (`--speculative`): proposes tokens a decode step verifies as extra rows; null: off. */
  proposer: DraftProposer | null;
  /**
   * Steps with more decoding sequences than this propose nothing (`--speculative-max-batch`): extra
   * rows cost compute that a large batch no longer has to spare (bench/RESULTS.md).
   */
  speculativeMaxBatch: number;
  /** Per sequence: proposals lately verified and kept; a sequence whose guesses keep failing rests. */
  private readonly speculationBySeq = new WeakMap<Sequence, { drafted: number; kept: number; restUntil: number; steps: number }>();
  /** Since the engine started: forward passes, proposed tokens verified, proposed tokens kept. */
  readonly speculation = { forwardPasses: 0, draftTokens: 0, acceptedTokens: 0 };
  private expertBackend: ExpertBackend;
  private hooks: EngineHooks | undefined;
  private instrumented = false;
  private readonly runStep: StepRunner = (seqs, opts) => this.stepNow(seqs, opts);
  constructor(
    readonly folder: ModelFolder,
    readonly backend: NativeBackend,
    readonly weights: CoordinatorWeights,
    experts: ExpertBackend,
    opts: { kvDtype?: KvDType; hooks?: EngineHooks; overlap?: OverlapMode; proposer?: DraftProposer; speculativeMaxBatch?: number } = {},
  ) {
    this.kvDtype = opts.kvDtype ?? 'f32';
    this.proposer = opts.proposer ?? null;
    this.speculativeMaxBatch = opts.speculativeMaxBatch ?? DEFAULT_SPECULATIVE_MAX_BATCH;
    this.overlap = opts.overlap ?? 'auto';
    this.expertBackend = experts;
    this.hooks = opts.hooks;
  }

  /** The expert backend the forward pass calls (the instrumented one once `instrument` ran). */
  get experts(): ExpertBackend {
    return this.expertBackend;
  }

  /**
   * Installs instrumentation once, before the engine steps (telemetry's observeEngine):
   * step hooks and a wrapper of the expert backend.
   */
  instrument(i: EngineInstrumentation): void {
    if (this.instrumented) throw new Error('engine is already instrumented');
    this.instrumented = true;
    if (i.hooks) this.hooks = this.hooks ? chainHooks(this.hooks, i.hooks) : i.hooks;
    if (i.experts) this.expertBackend = i.experts(this.expertBackend);
  }

  get config(): ModelConfig {
    return this.folder.config;
  }

  /**
   * Starts a sequence. Its KV cache holds `kvTokens` positions, by default all it can ever
   * need (prompt + maxTokens, capped at the context); a smaller one grows with `grow`.
   */
  newSequence(promptIds: number[], opts: SequenceOptions, kvTokens?: number): Sequence {
    this.checkPrompt(promptIds);
    const seq = new Sequence(this.nextSeqId++, promptIds, null, opts);
    this.allocate(seq, kvTokens ?? this.kvTokensLimit(promptIds.length, opts.maxTokens));
    return seq;
  }

  /** Positions a sequence's cache can ever need: prompt + maxTokens, capped at the context. */
  kvTokensLimit(promptTokens: number, maxTokens: number): number {
    return Math.min(this.config.maxPositionEmbeddings, promptTokens + Math.max(0, maxTokens));
  }

  /** Gives a sequence without a cache (new, or preempted and released) an empty one of `tokens` positions. */
  allocate(seq: Sequence, tokens: number): void {
    if (seq.cache) throw new Error(`sequence ${seq.id} already has a KV cache`);
    const c = this.config;
    seq.cache = this.backend.createKvCache(c.numLayers, tokens, c.numKvHeads, c.headDim, this.kvDtype);
    seq.computed = 0;
  }

  /** Fills the first `tokens` positions of a sequence's new cache from `src` (the same prefix, computed before). */
  async copyPrefix(seq: Sequence, src: NativeKvCache, tokens: number): Promise<void> {
    if (!seq.cache) throw new Error(`sequence ${seq.id} has no KV cache to copy into`);
    seq.computed = tokens;
    await this.backend.copyKvCache(seq.cache, src, tokens);
  }

  /** Grows a sequence's cache to `tokens` positions, keeping the K/V it holds. */
  async grow(seq: Sequence, tokens: number): Promise<void> {
    if (!seq.cache) throw new Error(`sequence ${seq.id} has no KV cache to grow`);
    await this.backend.growKvCache(seq.cache, tokens);
  }

  /** Throws UserError for a prompt newSequence would refuse (the checks live in request-limits.ts). */
  checkPrompt(promptIds: number[]): void {
    checkPrompt(this.config, promptIds);
  }

  /** Bytes of KV cache one sequence of `tokens` tokens needs. */
  kvBytesFor(tokens: number): number {
    const c = this.config;
    return 2 * KV_DTYPE_BYTES[this.kvDtype] * c.numLayers * tokens * c.numKvHeads * c.headDim;
  }

  /**
   * One forward pass over every given sequence: each contributes up to `prefillChunk`
   * pending prompt tokens, or its newest token when decoding. Sequences whose prompt is
   * now fully in the cache sample their next token.
   */
  step(seqs: Sequence[], opts: StepOptions = {}): Promise<StepResult> {
    const around = this.hooks?.aroundStep;
    return around ? around.call(this.hooks, seqs, opts, this.runStep) : this.stepNow(seqs, opts);
  }

  private async stepNow(seqs: Sequence[], opts: StepOptions): Promise<StepResult> {
    const chunk = opts.prefillChunk ?? 512;
    const tokens: number[] = [];
    const positions: number[] = [];
    const caches = [];
    const logitRows: number[] = [];
    // Per sequence: its rows, and the positions of its rows that need logits (in order); a decode
    // sequence with proposed tokens runs them as extra rows (`draft`), every row with logits.
    const plan: { seq: Sequence; rows: number; samples: boolean; firstLogit: number; logitPositions: number[]; draft: number[] }[] = [];
    let prefillRows = 0;
    const decoding = seqs.reduce((n, s) => n + (!s.finished && s.pendingPrompt === 0 ? 1 : 0), 0);
    const speculate = this.proposer !== null && decoding <= this.speculativeMaxBatch;
    for (const seq of seqs) {
      if (seq.finished) continue;
      if (!seq.cache) throw new Error(`sequence ${seq.id} has no KV cache (released or preempted)`);
      const start = seq.computed;
      const pending = seq.pendingPrompt;
      const draft = pending > 0 || !speculate ? [] : await this.propose(seq);
      const count = pending > 0 ? Math.min(chunk, pending) : 1 + draft.length;
      if (pending > 0) prefillRows += count;
      const samples = start + count >= seq.length; // all known tokens now in the cache
      const firstRow = tokens.length;
      for (let i = 0; i < count; i++) {
        tokens.push(i > 0 && draft.length > 0 ? draft[i - 1] : seq.tokenAt(start + i));
        positions.push(start + i);
        caches.push(seq.cache!);
      }
      const firstLogit = logitRows.length;
      const logitPositions: number[] = [];
      for (let i = 0; i < count; i++) {
        const pos = start + i;
        const keep = (seq.opts.keepPromptLogits && pending > 0) || seq.needsPromptLogprob(pos);
        if (keep || (samples && i === count - 1) || draft.length > 0) {
          logitRows.push(firstRow + i);
          logitPositions.push(pos);
        }
      }
      plan.push({ seq, rows: count, samples, firstLogit, logitPositions, draft });
    }
    if (tokens.length === 0) return { sampled: [], rows: 0, prefillRows: 0, activeNeurons: 0, expertSlots: 0 };
    this.speculation.forwardPasses++;

    const ctx: StepContext = {
      cfg: this.config,
      n: tokens.length,
      tokens: Int32Array.from(tokens),
      positions: Int32Array.from(positions),
      caches,
      logitRows: Int32Array.from(logitRows),
      stepId: this.stepId++,
    };
    const tuned = opts.microBatches === undefined && this.overlap === 'auto' && this.remoteExperts();
    const microBatches = opts.microBatches ?? (tuned ? this.overlapTuner.choose(ctx.n) : this.overlap === 'on' ? 2 : 1);
    const t0 = performance.now();
    const result = await forward(this.backend, this.weights, this.experts, ctx, { ...opts, microBatches });
    if (tuned) this.overlapTuner.record(ctx.n, microBatches, performance.now() - t0);

    const V = this.config.vocabSize;
    const sampled: StepResult['sampled'] = [];
    let draftTokens = 0;
    let acceptedTokens = 0;
    for (const p of plan) {
      const { seq } = p;
      const logitRow = (j: number) => result.logits.subarray((p.firstLogit + j) * V, (p.firstLogit + j + 1) * V);
      if (p.draft.length > 0) {
        const kept = this.verify(seq, p.draft, logitRow, sampled);
        draftTokens += p.draft.length;
        acceptedTokens += kept;
        const st = this.speculationBySeq.get(seq);
        if (st) {
          st.drafted += p.draft.length;
          st.kept += kept;
        }
        continue;
      }
      const wasPrefill = seq.pendingPrompt > 0;
      seq.computed += p.rows;
      p.logitPositions.forEach((pos, j) => {
        if (seq.opts.keepPromptLogits && wasPrefill) seq.promptLogits.push(logitRow(j).slice());
        // Position pos predicts prompt token pos + 1.
        if (seq.needsPromptLogprob(pos)) seq.promptLogprobs.push(logprobEntry(logitRow(j), seq.promptIds[pos + 1], seq.opts.promptLogprobs!));
      });
      if (!p.samples) continue;
      if (seq.opts.maxTokens <= 0) {
        seq.finished = 'length';
        continue;
      }
      const row = logitRow(p.logitPositions.length - 1);
      this.emit(seq, sample(this.penalised(seq, row), seq.opts.sampling, seq.rng), row, sampled);
    }
    this.speculation.draftTokens += draftTokens;
    this.speculation.acceptedTokens += acceptedTokens;
    return {
      sampled,
      rows: tokens.length,
      prefillRows,
      activeNeurons: result.activeNeurons,
      expertSlots: result.expertSlots,
      layers: result.layers,
      ...(draftTokens > 0 ? { draftTokens, acceptedTokens } : {}),
    };
  }

  /** The logits a token is sampled from: penalties, and stop ids banned before min_tokens. */
  private penalised(seq: Sequence, row: Float32Array): Float32Array {
    const banned = seq.outputIds.length < (seq.opts.minTokens ?? 0) ? seq.opts.stopIds : [];
    return applyPenalties(row, seq.opts.sampling, seq.history, banned);
  }

  /** Adds a sampled token to the step's result and the sequence; false when the sequence ended. */
  private emit(seq: Sequence, token: number, row: Float32Array, sampled: StepResult['sampled']): boolean {
    const stop = seq.opts.stopIds.includes(token);
    sampled.push({ seq, token, stop, logits: row });
    if (stop) {
      seq.finished = 'stop';
      return false;
    }
    seq.pushOutput(token);
    if (seq.outputIds.length >= seq.opts.maxTokens || seq.length >= this.config.maxPositionEmbeddings) {
      seq.finished = 'length';
      return false;
    }
    return true;
  }

  /**
   * Proposed tokens for a decode step of `seq`, capped so that the extra rows fit its KV cache and
   * the context and the tokens it could emit (proposals kept + 1) never pass max_tokens.
   */
  private async propose(seq: Sequence): Promise<number[]> {
    if (!this.proposer || !seq.cache) return [];
    // A sequence whose last 16+ proposals were mostly wrong (under 20% kept) rests 32 steps:
    // its rows cost compute and its text is not what the proposer predicts.
    const st = this.speculationBySeq.get(seq) ?? { drafted: 0, kept: 0, restUntil: 0, steps: 0 };
    this.speculationBySeq.set(seq, st);
    st.steps++;
    if (st.steps < st.restUntil) return [];
    if (st.drafted >= 16) {
      if (st.kept < 0.2 * st.drafted) st.restUntil = st.steps + 32;
      st.drafted = st.kept = 0;
      if (st.steps < st.restUntil) return [];
    }
    const start = seq.computed;
    const room = Math.min(
      this.proposer.k,
      seq.opts.maxTokens - seq.outputIds.length - 1,
      seq.cache.maxTokens - 1 - start,
      this.config.maxPositionEmbeddings - 1 - start,
    );
    if (room < 1) return [];
    const V = this.config.vocabSize;
    const draft = (await this.proposer.propose(seq.id, seq.tokens(), room)).slice(0, room);
    // A proposal is a guess, but it becomes model input: ids outside the vocabulary end the guess.
    const bad = draft.findIndex((t) => !Number.isInteger(t) || t < 0 || t >= V);
    return bad < 0 ? draft : draft.slice(0, bad);
  }

  /**
   * One decode step's rows were the newest token then `draft`: row i's logits decide output token
   * i. A proposal the model keeps (greedy: its argmax; sampling: the acceptance rule) is emitted
   * and the next row is valid; the first one it does not keep is replaced by the model's own token
   * and ends the step; if all are kept the last row gives one more. The K/V of rows after the first
   * replaced one hold the rejected guesses: `computed` excludes them, so the next step overwrites them.
   */
  private verify(seq: Sequence, draft: number[], logitRow: (j: number) => Float32Array, sampled: StepResult['sampled']): number {
    seq.computed += 1; // the newest token's row
    let kept = 0;
    for (let i = 0; i <= draft.length; i++) {
      const row = logitRow(i);
      const logits = this.penalised(seq, row);
      if (i === draft.length) {
        this.emit(seq, sample(logits, seq.opts.sampling, seq.rng), row, sampled);
        break;
      }
      const { token, accepted } = sampleVerifying(logits, seq.opts.sampling, seq.rng, draft[i]);
      if (!this.emit(seq, token, row, sampled) || !accepted) break;
      kept++;
      seq.computed += 1; // the kept proposal's row holds its K/V
    }
    return kept;
  }

  /** Experts behind a network (a backend with per-node stats): what `--overlap auto` may hide. */
  private remoteExperts(): boolean {
    return typeof this.experts.stats === 'function';
  }

  /** Frees a sequence's KV cache; what it held must be computed again before it can step. */
  release(seq: Sequence): void {
    if (seq.finished && seq.cache) this.proposer?.finished?.(seq.id, seq.tokens(), seq.promptIds.length);
    seq.cache?.free();
    seq.cache = null;
    seq.computed = 0;
  }

  async close(): Promise<void> {
    await this.proposer?.close?.();
    await this.experts.close();
    this.backend.close();
    await this.folder.close();
  }
}
