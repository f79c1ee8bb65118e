// The metrics registry renders valid Prometheus text and consistent JSON.
import { Registry, bucketQuantile, exponentialBuckets } from '../../core/metrics';
import { histogramCounts, parsePrometheusText } from '../helpers/prometheus';
import { CallMetrics, coordinatorMetrics } from '../../coordinator/telemetry';

describe('core/metrics Registry', () => {
  test('counters, gauges and histograms render as Prometheus text 0.0.4', () => {
    const reg = new Registry();
    const calls = reg.counter({ name: 'ts_calls_total', help: 'calls\nwith a newline', labelNames: ['node', 'layer'] });
    const depth = reg.gauge({ name: 'ts_queue_depth', help: 'queue', collect: (g) => g.set(undefined, 7) });
    const lat = reg.histogram({ name: 'ts_latency_seconds', help: 'latency', labelNames: ['node'], buckets: [0.001, 0.01, 0.1] });
    calls.inc({ node: '127.0.0.1:5000', layer: 0 });
    calls.labels({ node: 'a"b\\c', layer: 1 }).inc(2);
    for (const v of [0.0005, 0.005, 0.005, 0.05, 5]) lat.observe({ node: 'n1' }, v);

    const text = reg.text();
    const fams = parsePrometheusText(text);
    expect(fams.get('ts_calls_total')!.type).toBe('counter');
    expect(fams.get('ts_calls_total')!.help).toBe('calls\\nwith a newline');
    const weird = fams.get('ts_calls_total')!.samples.find((s) => s.labels.layer === '1')!;
    expect(weird.labels.node).toBe('a"b\\c');
    expect(weird.value).toBe(2);
    expect(fams.get('ts_queue_depth')!.samples[0].value).toBe(7);
    const h = fams.get('ts_latency_seconds')!;
    expect(h.type).toBe('histogram');
    const buckets = h.samples.filter((s) => s.name.endsWith('_bucket')).map((s) => [s.labels.le, s.value]);
    expect(buckets).toEqual([
      ['0.001', 1],
      ['0.01', 3],
      ['0.1', 4],
      ['+Inf', 5],
    ]);
    expect(histogramCounts(h).get('node=n1')).toBe(5);
    expect(text).toContain('ts_latency_seconds_sum{node="n1"} 5.0605');
  });

  test('JSON snapshot and quantiles agree with the observations', () => {
    const reg = new Registry();
    const lat = reg.histogram({ name: 'x_seconds', help: 'x', buckets: exponentialBuckets(0.001, 2, 10) });
    for (let i = 1; i <= 100; i++) lat.observe(undefined, i / 1000);
    const snap = reg.json().metrics[0];
    expect(snap.type).toBe('histogram');
    expect(snap.series[0].count).toBe(100);
    expect(snap.series[0].cumulative!.length).toBe(snap.buckets!.length + 1);
    const p50 = lat.labels().quantile(0.5);
    expect(p50).toBeGreaterThan(0.032);
    expect(p50).toBeLessThanOrEqual(0.064);
    expect(bucketQuantile(0.5, [1, 2], [0, 0, 0])).toBeNaN();
  });

  test('misuse is a loud error', () => {
    const reg = new Registry();
    const c = reg.counter({ name: 'c_total', help: 'c', labelNames: ['a'] });
    expect(() => c.inc({ b: 1 })).toThrow(/label a missing/);
    expect(() => c.inc({ a: 1, b: 2 })).toThrow(/exactly a/);
    expect(() => c.inc({ a: 1 }, -1)).toThrow(/>= 0/);
    expect(reg.counter({ name: 'c_total', help: 'c', labelNames: ['a'] })).toBe(c);
    expect(() => reg.gauge({ name: 'c_total', help: 'c' })).toThrow(/already registered/);
    expect(() => reg.counter({ name: 'bad-name', help: '' })).toThrow(/valid Prometheus name/);
    expect(() => reg.histogram({ name: 'h', help: '', buckets: [2, 1] })).toThrow(/increase/);
  });
});

test('a hedged call counts as a hedge, not a retry (failover); both by the node that got the call', () => {
  const reg = new Registry();
  const calls = new CallMetrics(coordinatorMetrics(reg), 64);
  const base = { layer: 0, experts: [1], slots: [2], active: [10], tokens: 2, seconds: 0.001, bytesIn: 10, bytesOut: 10, wire: 'f32' as const };
  calls.observe({ ...base, node: 'n2', retry: false, hedge: true });
  calls.observe({ ...base, node: 'n2', retry: true });
  calls.observe({ ...base, node: 'n3', retry: false, hedge: true });
  const text = reg.text();
  expect(text).toMatch(/turbosparse_expert_hedges_total\{node="n2"\} 1\b/);
  expect(text).toMatch(/turbosparse_expert_hedges_total\{node="n3"\} 1\b/);
  expect(text).toMatch(/turbosparse_expert_retries_total\{node="n2"\} 1\b/);
  expect(text).not.toMatch(/turbosparse_expert_retries_total\{node="n3"\}/);
});
