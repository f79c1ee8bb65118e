// The batch queue's depth as a polled gauge; the status JSON reads its waiting count.
import { Registry } from '../../core/metrics';
import { watchQueueDepth } from '../../coordinator/telemetry';
import { parsePrometheusText } from '../helpers/prometheus';

test('job counts by state become turbosparse_queue_jobs{state}; a failed poll keeps the last values', async () => {
  const reg = new Registry();
  let counts: Record<string, number> | Error = { waiting: 7, active: 2, delayed: 1, prioritized: 0, failed: 3 };
  const asked: string[][] = [];
  const w = watchQueueDepth(async (...states) => {
    asked.push(states);
    if (counts instanceof Error) throw counts;
    return counts;
  }, reg, 60_000);
  try {
    await w.poll();
    const read = () => Object.fromEntries(parsePrometheusText(reg.text()).get('turbosparse_queue_jobs')!.samples.map((s) => [s.labels.state, s.value]));
    expect(read()).toEqual({ waiting: 7, active: 2, delayed: 1, prioritized: 0, failed: 3 });
    expect(asked[0]).toEqual(['waiting', 'active', 'delayed', 'prioritized', 'failed']);
    counts = new Error('redis down');
    await w.poll();
    expect(read().waiting).toBe(7);
    counts = { waiting: 1 };
    await w.poll();
    expect(read()).toMatchObject({ waiting: 1, active: 0 });
  } finally {
    w.stop();
  }
});
