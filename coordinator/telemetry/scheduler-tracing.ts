// Request spans for the serving paths, added from outside (the scheduler, the
// OpenAI API and the batch worker import no OpenTelemetry):
//
//   requestTracing(obs)         the API's onRequest hook: one GenAI request span per API
//                               request / job (operation chat or text_completion, usage
//                               tokens, finish reasons)
//   submitTracing(obs)          the scheduler's onSubmit hook: sequences submitted while a
//                               request span is active run their steps under it (direct
//                               submits get their own span)
//   traceJob(job, fn)           a CONSUMER span per BullMQ job: attributes carry the job
//                               id, a producer's trace context in the job data becomes a link
import { SpanKind, SpanStatusCode, context, createContextKey, trace, type Context, type Link } from '@opentelemetry/api';
import { currentTelemetry, extractTraceContext } from '../../core/telemetry';
import type { Prepared } from '../api/openai-api';
import type { GenerationRequest, SequenceHandle } from '../scheduler';
import type { EngineObservability } from './observe';

/** Set while a request span from requestTracing is active: the scheduler binds to it instead of opening one. */
const REQUEST_SPAN = createContextKey('turbosparse.request-span');
/** Attributes a batch job adds to the request spans it causes. */
const JOB_ATTRIBUTES = createContextKey('turbosparse.job-attributes');

type Attrs = Record<string, string | number | boolean>;

/** What a scheduler's `onSubmit` option is given: the requests submitted together and their handles. */
export type SubmitHook = (reqs: GenerationRequest[], handles: SequenceHandle[]) => void;
/** What an API's `onRequest` option is: runs around every OpenAIApi.run (`run` is the request itself). */
export type RequestHook = <T>(p: Prepared, run: () => Promise<T>) => Promise<T>;

/**
 * The scheduler's submit hook: binds sequences to the request context they were
 * submitted under (their steps' parent); direct submits get a request span of their own.
 * Call once per scheduler (it registers the binding of sequences admitted later).
 */
export function submitTracing(obs: EngineObservability): SubmitHook {
  const waiting = new Set<{ h: SequenceHandle; ctx: Context }>();
  obs.beforeStep.push(() => {
    // A handle gets its Sequence when it is admitted (maybe steps after submit).
    for (const w of waiting) {
      if (w.h.seq) {
        obs.bindSequence(w.h.seq, w.ctx);
        waiting.delete(w);
      } else if (w.h.done) waiting.delete(w);
    }
  });
  return (reqs, handles) => {
    if (!obs.tracer) return;
    const active = context.active();
    handles.forEach((h, i) => {
      let ctx = active;
      if (!active.getValue(REQUEST_SPAN)) {
        // Submitted outside an API request: a request span per sequence.
        const r = reqs[i];
        const scope = obs.startRequest({
          operation: 'text_completion',
          inputTokens: r.promptIds.length,
          maxTokens: r.maxTokens,
          temperature: r.sampling.temperature,
          topP: r.sampling.topP,
          topK: r.sampling.topK,
          seed: r.sampling.seed,
          attributes: (active.getValue(JOB_ATTRIBUTES) as Attrs | undefined) ?? {},
        });
        ctx = scope.span ? trace.setSpan(active, scope.span) : active;
        h.result.then(
          (res) => scope.end({ outputTokens: res.tokenIds.length, finishReason: res.finishReason }),
          (e) => scope.fail(e),
        );
      }
      if (h.seq) obs.bindSequence(h.seq, ctx);
      else waiting.add({ h, ctx });
    });
  };
}

/** The API's request hook: one GenAI request span around every OpenAIApi.run (HTTP requests and batch jobs alike). */
export function requestTracing(obs: EngineObservability): RequestHook {
  return async <T>(p: Prepared, run: () => Promise<T>): Promise<T> => {
    if (!obs.tracer) return run();
    const active = context.active();
    const scope = obs.startRequest({
      operation: p.endpoint === 'chat.completions' ? 'chat' : 'text_completion',
      inputTokens: p.prompts.reduce((s, ids) => s + ids.length, 0),
      maxTokens: p.maxTokens,
      temperature: p.sampling.temperature,
      topP: p.sampling.topP,
      topK: p.sampling.topK,
      seed: p.sampling.seed,
      attributes: {
        'gen_ai.request.choice.count': p.n * p.prompts.length,
        'turbosparse.stream': p.stream,
        ...((active.getValue(JOB_ATTRIBUTES) as Attrs | undefined) ?? {}),
      },
    });
    try {
      const out = await scope.run(() => context.with(context.active().setValue(REQUEST_SPAN, true), run));
      const o = out as { usage?: { completion_tokens?: number }; choices?: { finish_reason?: string | null }[] };
      const reasons = [...new Set((o.choices ?? []).map((c) => c.finish_reason ?? 'stop'))];
      scope.end({ outputTokens: o.usage?.completion_tokens ?? 0, finishReason: reasons.join(',') || 'stop' });
      return out;
    } catch (e) {
      scope.fail(e);
      throw e;
    }
  };
}

/** The parts of a BullMQ job used here. */
export interface JobLike {
  id?: string;
  name?: string;
  queueName?: string;
  attemptsMade?: number;
  data?: unknown;
}

/**
 * Runs a job's processing under a CONSUMER span carrying the job id; the request
 * spans it causes are its children and carry `turbosparse.job.id` too. A W3C
 * context in `data.trace_context` (set by a producer) becomes a link (the
 * producer's trace may have ended long ago). No tracing: just runs `fn`.
 */
export async function traceJob<T>(job: JobLike, fn: () => Promise<T>): Promise<T> {
  const tel = currentTelemetry();
  if (!tel?.enabled) return fn();
  const data = (job.data ?? {}) as { trace_context?: unknown };
  const links: Link[] = [];
  if (data.trace_context && typeof data.trace_context === 'object') {
    const sc = trace.getSpanContext(extractTraceContext(data.trace_context as Record<string, string>));
    if (sc) links.push({ context: sc, attributes: { 'turbosparse.link': 'producer' } });
  }
  const jobAttrs: Attrs = { 'turbosparse.job.id': job.id ?? '' };
  const span = tel.tracer.startSpan(
    `process ${job.queueName ?? 'generation'}`,
    {
      kind: SpanKind.CONSUMER,
      links,
      attributes: {
        'messaging.system': 'bullmq',
        'messaging.operation.type': 'process',
        'messaging.destination.name': job.queueName ?? 'generation',
        'messaging.message.id': job.id ?? '',
        'turbosparse.job.id': job.id ?? '',
        'turbosparse.job.attempt': (job.attemptsMade ?? 0) + 1,
      },
    },
    context.active(),
  );
  const ctx = trace.setSpan(context.active(), span).setValue(JOB_ATTRIBUTES, jobAttrs);
  try {
    const out = await context.with(ctx, fn);
    span.end();
    return out;
  } catch (e) {
    span.recordException(e instanceof Error ? e : String(e));
    span.setStatus({ code: SpanStatusCode.ERROR, message: e instanceof Error ? e.message : String(e) });
    span.end();
    throw e;
  }
}
