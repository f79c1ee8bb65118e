// A batch job's processing is one CONSUMER span carrying the job id, linked to the
// submitter's trace context found in the job data; request spans are its children.
import { SpanKind, trace } from '@opentelemetry/api';
import { InMemorySpanExporter, SimpleSpanProcessor } from '@opentelemetry/sdk-trace-base';
import { setupTelemetry, shutdownTelemetry } from '../../core/telemetry';
import { traceJob } from '../../coordinator/telemetry';

const mem = new InMemorySpanExporter();
afterAll(() => shutdownTelemetry());

test('traceJob: CONSUMER span with the job id, a link to the producer, children under it, errors recorded', async () => {
  setupTelemetry({ serviceName: 'turbosparse-worker', env: {}, spanProcessors: [new SimpleSpanProcessor(mem)], flushOnExit: false, log: () => {} });
  const producer = '00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01';
  const out = await traceJob({ id: 'job-1', queueName: 'generation', attemptsMade: 1, data: { trace_context: { traceparent: producer } } }, async () => {
    trace.getTracer('t').startSpan('text_completion demo').end();
    return 42;
  });
  expect(out).toBe(42);
  await expect(traceJob({ id: 'job-2', data: {} }, async () => { throw new Error('expert node down'); })).rejects.toThrow('expert node down');

  const spans = mem.getFinishedSpans();
  const job1 = spans.find((s) => s.attributes['messaging.message.id'] === 'job-1')!;
  expect(job1.kind).toBe(SpanKind.CONSUMER);
  expect(job1.name).toBe('process generation');
  expect(job1.attributes).toMatchObject({ 'turbosparse.job.id': 'job-1', 'messaging.system': 'bullmq', 'turbosparse.job.attempt': 2 });
  expect(job1.links.map((l) => l.context.traceId)).toEqual(['0af7651916cd43dd8448eb211c80319c']);
  const child = spans.find((s) => s.name === 'text_completion demo')!;
  expect(child.parentSpanContext?.spanId).toBe(job1.spanContext().spanId);
  const job2 = spans.find((s) => s.attributes['messaging.message.id'] === 'job-2')!;
  expect(job2.status.code).toBe(2); // ERROR
  expect(job2.links).toEqual([]);
});
