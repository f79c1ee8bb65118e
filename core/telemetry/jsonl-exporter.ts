// A span exporter that writes one JSON object per span and line, to a file
// (OTEL_TRACES_EXPORTER=jsonl with TURBOSPARSE_TRACES_FILE) or to stderr (the
// `console` exporter: stdout carries generated text, so spans go to stderr).
//
// Writes are synchronous appends: a process stopped with SIGTERM or killed
// right after a call still leaves its spans on disk, which is what tests and
// local debugging of a multi-process cluster need. Several processes may append
// to the same file; each line is written with one write() call.
import fs from 'node:fs';
import { hrTimeToMicroseconds } from '@opentelemetry/core';
import { ExportResultCode, type ExportResult } from '@opentelemetry/core';
import type { ReadableSpan, SpanExporter } from '@opentelemetry/sdk-trace-base';
import { SpanKind, SpanStatusCode, type AttributeValue } from '@opentelemetry/api';

/** The JSON form of one span (also what tests read back). */
export interface SpanRecord {
  traceId: string;
  spanId: string;
  parentSpanId?: string;
  name: string;
  kind: keyof typeof SpanKind;
  startUs: number;
  endUs: number;
  durationUs: number;
  attributes: Record<string, AttributeValue | undefined>;
  status: { code: keyof typeof SpanStatusCode; message?: string };
  events: { name: string; timeUs: number; attributes?: Record<string, AttributeValue | undefined> }[];
  links: { traceId: string; spanId: string; attributes?: Record<string, AttributeValue | undefined> }[];
  resource: Record<string, AttributeValue | undefined>;
  scope: string;
}

/** How every line this exporter writes starts (spanToRecord puts traceId first). */
export const SPAN_LINE_PREFIX = '{"traceId":"';

export function spanToRecord(span: ReadableSpan): SpanRecord {
  const ctx = span.spanContext();
  return {
    traceId: ctx.traceId,
    spanId: ctx.spanId,
    parentSpanId: span.parentSpanContext?.spanId,
    name: span.name,
    kind: SpanKind[span.kind] as keyof typeof SpanKind,
    startUs: hrTimeToMicroseconds(span.startTime),
    endUs: hrTimeToMicroseconds(span.endTime),
    durationUs: hrTimeToMicroseconds(span.duration),
    attributes: { ...span.attributes },
    status: { code: SpanStatusCode[span.status.code] as keyof typeof SpanStatusCode, message: span.status.message },
    events: span.events.map((e) => ({ name: e.name, timeUs: hrTimeToMicroseconds(e.time), attributes: e.attributes })),
    links: span.links.map((l) => ({ traceId: l.context.traceId, spanId: l.context.spanId, attributes: l.attributes })),
    resource: { ...span.resource.attributes },
    scope: span.instrumentationScope.name,
  };
}

export class JsonLinesSpanExporter implements SpanExporter {
  private fd: number | undefined;
  private readonly ownsFd: boolean;

  /** `target`: a file path (appended to, created if missing) or 'stderr'. */
  constructor(target: string) {
    if (target === 'stderr') {
      this.fd = 2;
      this.ownsFd = false;
    } else {
      this.fd = fs.openSync(target, 'a');
      this.ownsFd = true;
    }
  }

  export(spans: ReadableSpan[], done: (result: ExportResult) => void): void {
    if (this.fd === undefined) return done({ code: ExportResultCode.FAILED, error: new Error('exporter is shut down') });
    try {
      let out = '';
      for (const s of spans) out += JSON.stringify(spanToRecord(s)) + '\n';
      fs.writeSync(this.fd, out);
      done({ code: ExportResultCode.SUCCESS });
    } catch (e) {
      done({ code: ExportResultCode.FAILED, error: e as Error });
    }
  }

  async forceFlush(): Promise<void> {}

  async shutdown(): Promise<void> {
    if (this.fd !== undefined && this.ownsFd) fs.closeSync(this.fd);
    this.fd = undefined;
  }
}

/** Reads a JSONL span file back (tests, `turbosparse` debugging); skips a torn last line. */
export function readSpanFile(file: string): SpanRecord[] {
  if (!fs.existsSync(file)) return [];
  const out: SpanRecord[] = [];
  for (const line of fs.readFileSync(file, 'utf8').split('\n')) {
    if (!line.trim()) continue;
    try {
      out.push(JSON.parse(line) as SpanRecord);
    } catch {
      /* a line still being written */
    }
  }
  return out;
}
