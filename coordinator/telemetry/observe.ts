// Observability of one Engine: metrics and recent stats always, spans when
// tracing is on. `observeEngine(engine)` installs it through the engine's declared
// seam, Engine.instrument (the engine itself imports no telemetry; see DESIGN.md "Habits"):
//
//   EngineHooks.aroundStep -> a step span (attributes: rows, phase, sequences), layer spans
//                       through ForwardHooks, tokens/s and batch-size metrics
//   ObservedExperts  -> wraps the loaded backend: per (layer, expert, node) metrics for
//                       every call; a backend with addObserver (remote) gets a call
//                       observer: one CLIENT span per node call, its W3C context sent
//                       inside the request
//
//   request span (GenAI attributes)            startRequest() / submitTracing()
//     engine.step   (one per decode step / prefill chunk)
//       moe.layer   (one per layer)
//         moe.expert_call  CLIENT, one per expert-node message  ->  expert node: moe.expert_serve SERVER
//
// The step span's parent is the active context (e.g. `generate`'s request
// span); under the scheduler a step serves many requests, so its parent is the
// oldest sequence's request span and the others are links.
import {
  ROOT_CONTEXT,
  SpanKind,
  SpanStatusCode,
  context,
  createContextKey,
  trace,
  type Context,
  type Link,
  type Span,
  type Tracer,
} from '@opentelemetry/api';
import type {
  ExpertBackend,
  ExpertBatch,
  ExpertCallInfo,
  ExpertCallResult,
  ExpertNodeHealth,
  ExpertOutput,
  StepContext,
} from '../../core/expert-backend';
import type { FfnMode } from '../../core/native';
import { metrics as defaultRegistry, type CounterChild, type GaugeChild, type HistogramChild, type Registry } from '../../core/metrics';
import { currentTelemetry, injectTraceContext, type Telemetry } from '../../core/telemetry';
import type { Engine, EngineHooks, StepOptions, StepResult, StepRunner } from '../engine';
import type { ForwardHooks } from '../forward';
import type { Sequence } from '../sequence';
import { summariseBatch, type ExpertCallRecord } from './expert-calls';
import { ExpertStats } from './expert-stats';
import { RoutingCollector } from './routing-collector';
import { CallMetrics, coordinatorMetrics, type CoordinatorMetrics, type MetricsDetail } from './metrics';
import { logOnce } from '../../core/log-once';

/** How much of a request is traced: request spans only, + step spans, + layer and expert-call spans. */
export type TraceDetail = 'requests' | 'steps' | 'layers';

export interface ObserveOptions {
  registry?: Registry;
  /** Tracing setup; default the process's current one (setupTelemetry). Off: metrics only. */
  telemetry?: Telemetry;
  /** Default from TURBOSPARSE_TRACE_DETAIL, else 'layers'. */
  detail?: TraceDetail;
  /** --metrics-detail: expert-call histograms per node (default) or per (layer, expert, node). */
  metricsDetail?: MetricsDetail;
  /** Model name for GenAI attributes (default the model folder's name). */
  modelName?: string;
  /** Where a failing deferred record is reported. Default: a line on stderr. */
  log?: (line: string) => void;
}

/** What the status page shows per node (ExpertBackend.stats()). */
export type NodeHealthLike = ExpertNodeHealth;

/** Per-step tracing state, found by the expert wrapper through the active context. */
interface StepTrace {
  span: Span;
  ctx: Context;
  /** Open layer spans by layer (with overlapped micro-batches two layers can be open at once). */
  layers: Map<number, { span: Span; ctx: Context }>;
}
const STEP_TRACE = createContextKey('turbosparse.step-trace');

/** The node calls of one runExperts: a step's layer, per micro-batch when the step is overlapped. */
const pendingKey = (stepId: number | undefined, layer: number, microBatch: number | undefined): string =>
  `${stepId}|${layer}|${microBatch ?? ''}`;

interface PendingCall {
  info: ExpertCallInfo;
  result?: ExpertCallResult;
}

const GRPC_CODE_NAMES: Record<number, string> = {
  1: 'CANCELLED', 2: 'UNKNOWN', 3: 'INVALID_ARGUMENT', 4: 'DEADLINE_EXCEEDED', 5: 'NOT_FOUND', 8: 'RESOURCE_EXHAUSTED',
  9: 'FAILED_PRECONDITION', 13: 'INTERNAL', 14: 'UNAVAILABLE',
};

function errorCode(e: Error | undefined): string {
  const code = (e as { code?: unknown } | undefined)?.code;
  if (typeof code === 'number') return GRPC_CODE_NAMES[code] ?? `CODE_${code}`;
  if (typeof code === 'string' && /^[A-Z_]+$/.test(code)) return code;
  return e?.name && e.name !== 'Error' ? e.name : 'ERROR';
}

function detailFromEnv(env: NodeJS.ProcessEnv = process.env): TraceDetail {
  const v = env.TURBOSPARSE_TRACE_DETAIL?.trim().toLowerCase();
  return v === 'requests' || v === 'steps' || v === 'layers' ? v : 'layers';
}

/** GenAI request attributes (OpenTelemetry semantic conventions for generative AI). */
export interface GenAiRequest {
  operation: 'text_completion' | 'chat';
  inputTokens: number;
  maxTokens?: number;
  temperature?: number;
  topP?: number;
  topK?: number;
  seed?: number;
  /** Links the span to e.g. a batch job (`turbosparse.job.id`). */
  attributes?: Record<string, string | number | boolean>;
  /** Parent context; default the active one. */
  parent?: Context;
}

export interface GenAiResult {
  outputTokens: number;
  finishReason: string;
}

export interface RequestScope {
  readonly span: Span | undefined;
  /** Runs `fn` with the request span active (steps it causes become its children). */
  run<T>(fn: () => T): T;
  end(result: GenAiResult): void;
  fail(error: unknown): void;
}

const NOOP_SCOPE: RequestScope = { span: undefined, run: (fn) => fn(), end: () => {}, fail: () => {} };

export class EngineObservability {
  readonly metrics: CoordinatorMetrics;
  readonly calls: CallMetrics;
  readonly stats: ExpertStats;
  /** Routes and active neurons per (layer, expert) since start (GET /v1/stats/routing). */
  readonly routing: RoutingCollector;
  readonly tracer: Tracer | undefined;
  readonly detail: TraceDetail;
  readonly modelName: string;
  readonly startedAt = Date.now();
  /** A bookkeeping bug must not break the token path or a scrape: one line per distinct message. */
  private readonly report: (msg: string) => void;
  /** Run before every step (submitTracing binds newly admitted sequences here). */
  readonly beforeStep: (() => void)[] = [];
  private readonly pending = new Map<string, PendingCall[]>();
  private readonly seqContexts = new WeakMap<Sequence, Context>();
  private backend: ExpertBackend | undefined;
  private syntheticStep = -1;
  // Metric children kept at hand: the per-step path makes no label keys.
  private readonly layerChildren: HistogramChild[] = [];
  private readonly stepChildren: { decode: CounterChild; prefill: CounterChild; rows: GaugeChild; sequences: GaugeChild };
  /** Layer-time metrics only (no span, no caller hooks). */
  private readonly metricsHooks: ForwardHooks = {
    onLayer: (layer, t0, t1) => {
      (this.layerChildren[layer] ??= this.metrics.layerSeconds.labels({ layer })).observe(Number(t1 - t0) / 1e9);
    },
    onExperts: (layer, n, groups, active) => this.routing.record(layer, n, groups, active),
  };

  constructor(
    readonly engine: Engine,
    opts: ObserveOptions = {},
  ) {
    const tel = opts.telemetry ?? currentTelemetry();
    this.tracer = tel?.enabled ? tel.tracer : undefined;
    this.detail = opts.detail ?? detailFromEnv();
    this.report = logOnce(opts.log ?? ((line) => process.stderr.write(line + '\n')));
    this.metrics = coordinatorMetrics(opts.registry ?? defaultRegistry, opts.metricsDetail);
    this.calls = new CallMetrics(this.metrics, engine.config.intermediateSize);
    this.stats = new ExpertStats(engine.config.intermediateSize);
    this.routing = new RoutingCollector(engine.config);
    this.registry.onCollect(() => this.flush());
    this.stepChildren = {
      decode: this.metrics.stepTokens.labels({ phase: 'decode' }),
      prefill: this.metrics.stepTokens.labels({ phase: 'prefill' }),
      rows: this.metrics.batchRows.labels(),
      sequences: this.metrics.batchSequences.labels(),
    };
    this.modelName = opts.modelName ?? engine.folder.dir.split(/[\\/]/).filter(Boolean).pop() ?? 'turbosparse';
  }

  get registry(): Registry {
    return this.metrics.registry;
  }

  /** Expert nodes and their health, when the backend knows them (remote); [] for local experts. */
  nodes(): NodeHealthLike[] {
    return this.backend?.stats?.() ?? [];
  }

  private record(c: ExpertCallRecord): void {
    this.calls.observe(c);
    this.stats.recordCall(c);
  }

  /**
   * Bookkeeping of finished expert calls waits here until the next call has started
   * its kernels or its network round trip (the thread would only wait then), or until
   * someone reads the metrics or the status: it stays off the token path.
   */
  private readonly deferred: (() => void)[] = [];

  /**
   * Brings the metrics and stats up to date with every finished call. Each record runs
   * exactly once: one that throws is reported and dropped, and the others still run.
   */
  flush(): void {
    const d = this.deferred;
    for (let i = 0; i < d.length; i++) {
      try {
        d[i]();
      } catch (e) {
        this.reportRecordError(e);
      }
    }
    d.length = 0;
  }

  private reportRecordError(e: unknown): void {
    this.report(`observability: an expert call record failed (${e instanceof Error ? e.message : String(e)}); it is dropped`);
  }

  // ---- instrumentation of the engine instance ----

  /** The engine hooks: every step runs through `aroundStep` (spans, step metrics). */
  readonly hooks: EngineHooks = {
    aroundStep: (seqs, opts, step) => this.step(step, seqs, opts),
  };

  /**
   * The `runExperts` of an ObservedExperts around `inner` (the backend the engine
   * loaded): remote backends (with addObserver) get a node-call observer too.
   * @internal used by ObservedExperts
   */
  expertRunner(inner: ExpertBackend): ExpertBackend['runExperts'] {
    this.backend = inner;
    return inner.addObserver ? this.wrapRemote(inner, inner.addObserver.bind(inner)) : this.wrapLocal(inner);
  }

  private async step(inner: StepRunner, seqs: Sequence[], opts: StepOptions): Promise<StepResult> {
    for (const f of this.beforeStep) f();
    const layerSeconds = this.layerChildren;
    const traced = this.tracer !== undefined && this.detail !== 'requests';
    const st = traced ? this.startStep(seqs) : undefined;
    const callerHooks = opts.hooks;
    // Untraced and no caller hooks (the usual case): one hooks object made once, no closures per step.
    const hooks: ForwardHooks = !st && !callerHooks ? this.metricsHooks : {
      onLayerStart: (layer) => {
        callerHooks?.onLayerStart?.(layer);
        if (st && this.detail === 'layers') {
          const span = this.tracer!.startSpan('moe.layer', { attributes: { 'moe.layer': layer } }, st.ctx);
          st.layers.set(layer, { span, ctx: trace.setSpan(st.ctx, span) });
        }
      },
      onLayer: (layer, t0, t1) => {
        callerHooks?.onLayer?.(layer, t0, t1);
        (layerSeconds[layer] ??= this.metrics.layerSeconds.labels({ layer })).observe(Number(t1 - t0) / 1e9);
        const open = st?.layers.get(layer);
        if (open) {
          open.span.end();
          st!.layers.delete(layer);
        }
      },
      onExperts: (layer, n, groups, active) => {
        callerHooks?.onExperts?.(layer, n, groups, active);
        this.routing.record(layer, n, groups, active);
      },
    };
    const run = () => inner(seqs, { ...opts, hooks });
    let result: StepResult;
    try {
      result = st ? await context.with(st.ctx, run) : await run();
    } catch (e) {
      if (st) {
        for (const open of st.layers.values()) open.span.end();
        st.span.recordException(e as Error);
        st.span.setStatus({ code: SpanStatusCode.ERROR, message: (e as Error).message });
        st.span.end();
      }
      throw e;
    }
    let generated = 0;
    for (const s of result.sampled) if (!s.stop) generated++;
    const decodeRows = result.rows - result.prefillRows;
    const m = this.stepChildren;
    m.decode.inc(decodeRows);
    m.prefill.inc(result.prefillRows);
    m.rows.set(result.rows);
    m.sequences.set(seqs.length);
    this.stats.recordStep(generated, result.prefillRows, seqs.length);
    if (st) {
      st.span.setAttributes({
        'turbosparse.step.rows': result.rows,
        'turbosparse.step.prefill_rows': result.prefillRows,
        'turbosparse.step.sampled': generated,
        'turbosparse.step.active_fraction':
          result.expertSlots > 0 ? result.activeNeurons / (result.expertSlots * this.engine.config.intermediateSize) : 0,
      });
      st.span.end();
    }
    return result;
  }

  private startStep(seqs: Sequence[]): StepTrace {
    // Parent: the sequences' request spans (scheduler: the oldest is the parent, the
    // others links; the loop's own context is whichever request started it), else the
    // active context (generate runs its steps inside its request span).
    let parent = context.active();
    const links: Link[] = [];
    const ctxs = seqs.map((s) => this.seqContexts.get(s)).filter((c): c is Context => c !== undefined);
    if (ctxs.length > 0) {
      parent = ctxs[0];
      const seen = new Set([trace.getSpanContext(parent)?.spanId]);
      for (const c of ctxs.slice(1)) {
        const sc = trace.getSpanContext(c);
        if (sc && !seen.has(sc.spanId)) {
          seen.add(sc.spanId);
          links.push({ context: sc });
        }
      }
    }
    const prefill = seqs.some((s) => s.pendingPrompt > 0);
    const decode = seqs.some((s) => s.pendingPrompt === 0);
    const span = this.tracer!.startSpan(
      'engine.step',
      {
        links,
        attributes: {
          'turbosparse.step.sequences': seqs.length,
          'turbosparse.step.phase': prefill && decode ? 'mixed' : prefill ? 'prefill' : 'decode',
        },
      },
      parent,
    );
    const st: StepTrace = { span, ctx: ROOT_CONTEXT, layers: new Map() };
    st.ctx = trace.setSpan(parent, span).setValue(STEP_TRACE, st);
    return st;
  }

  /** The context an expert call's span hangs from: the current layer span, else the step span. */
  private callParent(layer?: number): Context | undefined {
    const active = context.active();
    const st = active.getValue(STEP_TRACE) as StepTrace | undefined;
    if (st) return (layer === undefined ? undefined : st.layers.get(layer)?.ctx) ?? st.ctx;
    return trace.getSpan(active) ? active : undefined;
  }

  // ---- in-process experts: the whole runExperts is one call on node "local" ----

  private wrapLocal(inner: ExpertBackend): ExpertBackend['runExperts'] {
    type Summary = ReturnType<typeof summariseBatch>;
    const defer = (batch: ExpertBatch, out: ExpertOutput | undefined, seconds: number, stepId: number | undefined, known?: Summary): void => {
      this.deferred.push(() => {
        const sum = known ?? summariseBatch(batch, out);
        this.record({ layer: batch.layer, node: 'local', ...sum, seconds, bytesIn: 0, bytesOut: 0, wire: 'none', stepId, error: out ? undefined : 'ERROR' });
      });
    };
    return (batch: ExpertBatch, ctx?: StepContext): Promise<ExpertOutput> => {
      const parent = this.tracer && this.detail === 'layers' ? this.callParent(batch.layer) : undefined;
      const span = parent
        ? this.tracer!.startSpan(
            'moe.expert_call',
            { kind: SpanKind.INTERNAL, attributes: { 'moe.layer': batch.layer, 'moe.node': 'local', 'moe.wire': 'none' } },
            parent,
          )
        : undefined;
      const t0 = performance.now();
      const running = inner.runExperts(batch, ctx);
      this.flush(); // earlier calls' bookkeeping, while these kernels run
      // No async wrapper: the caller awaits the backend's own promise plus one `then`.
      return running.then(
        (out) => {
          const seconds = (performance.now() - t0) / 1000;
          if (!span) {
            defer(batch, out, seconds, ctx?.stepId);
          } else {
            const sum = summariseBatch(batch, out); // the span needs it now; the bookkeeping reuses it
            defer(batch, out, seconds, ctx?.stepId, sum);
            span.setAttributes({
              'moe.experts': sum.experts,
              'moe.tokens': sum.tokens,
              'moe.active_neurons': sum.active.reduce((a, b) => a + b, 0),
              'moe.compute_us': Math.round(seconds * 1e6),
              'moe.queue_us': 0,
              'moe.bytes_in': 0,
              'moe.bytes_out': 0,
            });
            span.end();
          }
          return out;
        },
        (e: unknown) => {
          defer(batch, undefined, (performance.now() - t0) / 1000, ctx?.stepId);
          if (span) {
            span.recordException(e instanceof Error ? e : String(e));
            span.setStatus({ code: SpanStatusCode.ERROR });
            span.end();
          }
          throw e;
        },
      );
    };
  }

  // ---- remote experts: one record and one CLIENT span per node message ----

  private wrapRemote(inner: ExpertBackend, addObserver: NonNullable<ExpertBackend['addObserver']>): ExpertBackend['runExperts'] {
    addObserver({
      onCallStart: (info) => this.onCallStart(info),
      onNodeHealth: (node, healthy, reason) => {
        const parent = this.callParent();
        if (parent) trace.getSpan(parent)?.addEvent(healthy ? 'moe.node_up' : 'moe.node_down', { 'moe.node': node, reason });
      },
    });
    return async (batch: ExpertBatch, ctx?: StepContext): Promise<ExpertOutput> => {
      const stepId = ctx?.stepId ?? this.syntheticStep--;
      const key = pendingKey(stepId, batch.layer, ctx?.microBatch);
      const calls: PendingCall[] = [];
      this.pending.set(key, calls);
      let out: ExpertOutput | undefined;
      try {
        const running = inner.runExperts(batch, { ...ctx, stepId });
        this.flush(); // earlier calls' bookkeeping, while these requests are on the wire
        out = await running;
        return out;
      } finally {
        this.pending.delete(key);
        const result = out;
        this.deferred.push(() => this.recordRemote(batch, result, calls, stepId));
      }
    };
  }

  private onCallStart(info: ExpertCallInfo): { traceContext?: Record<string, string>; end(r: ExpertCallResult): void } {
    const entry: PendingCall = { info };
    this.pending.get(pendingKey(info.stepId, info.layer, info.microBatch))?.push(entry);
    const parent = this.tracer && this.detail === 'layers' ? this.callParent(info.layer) : undefined;
    if (!parent) {
      return { end: (r) => void (entry.result = r) };
    }
    const span = this.tracer!.startSpan(
      'moe.expert_call',
      {
        kind: SpanKind.CLIENT,
        attributes: {
          'moe.layer': info.layer,
          'moe.experts': info.experts,
          'moe.node': info.nodeName ?? info.node,
          'moe.tokens': info.tokens,
          'moe.routes': info.routes,
          'moe.wire': info.wire,
          'moe.attempt': info.attempt,
          'rpc.system': 'grpc',
          'rpc.service': 'turbosparse.expert.v1.ExpertNode',
          'rpc.method': 'Run',
          'server.address': info.node,
        },
      },
      parent,
    );
    return {
      traceContext: injectTraceContext(trace.setSpan(parent, span)),
      end: (r) => {
        entry.result = r;
        span.setAttributes({
          'moe.active_neurons': r.activeNeurons,
          'moe.queue_us': r.queueUs,
          'moe.compute_us': r.computeUs,
          'moe.latency_us': r.latencyUs,
          'moe.bytes_out': info.bytesOut,
          'moe.bytes_in': r.bytesIn,
        });
        if (!r.ok) {
          if (r.error) span.recordException(r.error);
          span.setStatus({ code: SpanStatusCode.ERROR, message: r.error?.message });
          span.setAttribute('error.type', errorCode(r.error));
        }
        span.end();
      },
    };
  }

  private recordRemote(batch: ExpertBatch, out: ExpertOutput | undefined, calls: PendingCall[], stepId: number): void {
    for (const { info, result } of calls) {
      if (!result) continue;
      const sum = summariseBatch(batch, result.ok ? out : undefined, info.experts);
      this.record({
        layer: info.layer,
        node: info.nodeName ?? info.node,
        experts: sum.experts,
        slots: sum.slots,
        active: result.ok && out ? sum.active : [],
        tokens: info.tokens,
        seconds: result.latencyUs / 1e6,
        queueUs: result.queueUs,
        computeUs: result.computeUs,
        bytesOut: info.bytesOut,
        bytesIn: result.bytesIn,
        wire: info.wire,
        stepId,
        retry: info.attempt > 0 && !info.hedge,
        ...(info.hedge ? { hedge: true } : {}),
        error: result.ok && out ? undefined : errorCode(result.error),
        errorMessage: result.error?.message,
      });
    }
  }

  // ---- requests ----

  /** A GenAI request span (when tracing); run the generation inside `scope.run`. */
  startRequest(req: GenAiRequest): RequestScope {
    if (!this.tracer) return NOOP_SCOPE;
    const parent = req.parent ?? context.active();
    const span = this.tracer.startSpan(
      `${req.operation} ${this.modelName}`,
      {
        kind: SpanKind.INTERNAL,
        attributes: {
          'gen_ai.operation.name': req.operation,
          'gen_ai.provider.name': 'turbosparse',
          'gen_ai.system': 'turbosparse',
          'gen_ai.request.model': this.modelName,
          'gen_ai.usage.input_tokens': req.inputTokens,
          ...(req.maxTokens !== undefined ? { 'gen_ai.request.max_tokens': req.maxTokens } : {}),
          ...(req.temperature !== undefined ? { 'gen_ai.request.temperature': req.temperature } : {}),
          ...(req.topP !== undefined ? { 'gen_ai.request.top_p': req.topP } : {}),
          ...(req.topK !== undefined ? { 'gen_ai.request.top_k': req.topK } : {}),
          ...(req.seed !== undefined ? { 'gen_ai.request.seed': req.seed } : {}),
          ...(req.attributes ?? {}),
        },
      },
      parent,
    );
    const ctx = trace.setSpan(parent, span);
    let ended = false;
    return {
      span,
      run: (fn) => context.with(ctx, fn),
      end: (r) => {
        if (ended) return;
        ended = true;
        span.setAttributes({
          'gen_ai.usage.output_tokens': r.outputTokens,
          'gen_ai.response.finish_reasons': [r.finishReason],
          'gen_ai.response.model': this.modelName,
        });
        span.end();
      },
      fail: (e) => {
        if (ended) return;
        ended = true;
        span.recordException(e instanceof Error ? e : String(e));
        span.setStatus({ code: SpanStatusCode.ERROR, message: e instanceof Error ? e.message : String(e) });
        span.setAttribute('error.type', e instanceof Error ? e.name : 'error');
        span.end();
      },
    };
  }

  /** Makes `ctx` (a request span's context) the parent of the steps this sequence runs in. */
  bindSequence(seq: Sequence, ctx: Context): void {
    this.seqContexts.set(seq, ctx);
  }
}

/**
 * An expert backend observed: `runExperts` records metrics and spans around the
 * loaded backend's own; the name, close and every optional capability (ready,
 * stats, addObserver, setMode) are the loaded backend's, present only when it has them.
 */
export class ObservedExperts implements ExpertBackend {
  readonly name: string;
  readonly runExperts: ExpertBackend['runExperts'];
  readonly ready?: () => boolean;
  readonly stats?: () => ExpertNodeHealth[];
  readonly addObserver?: NonNullable<ExpertBackend['addObserver']>;
  readonly setMode?: (mode: FfnMode) => void;

  constructor(
    readonly inner: ExpertBackend,
    obs: EngineObservability,
  ) {
    this.name = inner.name;
    if (inner.ready) this.ready = inner.ready.bind(inner);
    if (inner.stats) this.stats = inner.stats.bind(inner);
    if (inner.addObserver) this.addObserver = inner.addObserver.bind(inner);
    if (inner.setMode) this.setMode = inner.setMode.bind(inner);
    this.runExperts = obs.expertRunner(inner);
  }

  close(): Promise<void> {
    return this.inner.close();
  }
}

const observed = new WeakMap<Engine, EngineObservability>();

/** Instruments `engine` once (idempotent) and returns its observability. */
export function observeEngine(engine: Engine, opts: ObserveOptions = {}): EngineObservability {
  let o = observed.get(engine);
  if (!o) {
    const obs = new EngineObservability(engine, opts);
    engine.instrument({ hooks: obs.hooks, experts: (inner) => new ObservedExperts(inner, obs) });
    observed.set(engine, (o = obs));
  }
  return o;
}

/** The observability of an engine observeEngine instrumented, if any. */
export function engineObservability(engine: Engine): EngineObservability | undefined {
  return observed.get(engine);
}
