// W3C trace context carried by hand across the expert-node protocol.
//
// One gRPC stream carries every call of a coordinator connection, so stream
// metadata cannot hold a per-call context: it travels in each ExpertRequest's
// `trace_context` map (a plain string record). Unary calls may also use gRPC
// metadata. Done explicitly rather than through auto-instrumentation, which
// does not patch modules under jest and would only see the stream anyway.
//
// Uses its own W3C propagator (not the global one), so it works whether or not
// the process registered a global propagator; with tracing off the active
// span is invalid and nothing is written (no cost beyond one lookup).
import { context as apiContext, trace, type Context, type TextMapGetter, type TextMapSetter } from '@opentelemetry/api';
import { W3CTraceContextPropagator } from '@opentelemetry/core';

const w3c = new W3CTraceContextPropagator();

const recordSetter: TextMapSetter<Record<string, string>> = {
  set: (carrier, key, value) => {
    carrier[key] = value;
  },
};

const recordGetter: TextMapGetter<Record<string, string>> = {
  keys: (carrier) => Object.keys(carrier),
  get: (carrier, key) => carrier[key],
};

/** traceparent (+ tracestate) of `ctx` as a plain record; empty when `ctx` holds no valid span. */
export function injectTraceContext(ctx: Context = apiContext.active()): Record<string, string> {
  const carrier: Record<string, string> = {};
  if (!trace.getSpanContext(ctx)) return carrier;
  w3c.inject(ctx, carrier, recordSetter);
  return carrier;
}

/** The remote parent carried in `carrier`, on top of `base` (the active context by default). */
export function extractTraceContext(carrier: Record<string, string> | undefined | null, base: Context = apiContext.active()): Context {
  if (!carrier || carrier.traceparent === undefined) return base;
  return w3c.extract(base, carrier, recordGetter);
}

/** The parts of @grpc/grpc-js Metadata used here (core/ does not import gRPC). */
export interface MetadataLike {
  get(key: string): (string | Buffer)[];
  set(key: string, value: string): void;
  getMap?(): Record<string, string | Buffer>;
}

export function injectIntoMetadata(md: MetadataLike, ctx: Context = apiContext.active()): void {
  for (const [k, v] of Object.entries(injectTraceContext(ctx))) md.set(k, v);
}

export function extractFromMetadata(md: MetadataLike, base: Context = apiContext.active()): Context {
  const carrier: Record<string, string> = {};
  for (const key of ['traceparent', 'tracestate']) {
    const v = md.get(key)[0];
    if (v !== undefined) carrier[key] = v.toString();
  }
  return extractTraceContext(carrier, base);
}
