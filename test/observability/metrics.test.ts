// The metrics registry renders valid Prometheus text and consistent JSON.
import { Registry, bucketQuantile, exponentialBuckets } from '../../core/metrics';
import { histogramCounts, parsePrometheusText } from '../helpers/prometheus';
import { CallMetrics, coordinatorMetrics } from '../../coordinator/telemetry';
import { routeLabel } from '../../coordinator/telemetry/route-label';

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

describe('--metrics-detail: the expert-call histograms per node (default) or per (layer, expert, node)', () => {
  /** Every pair of a 32 x 8 model called once, on 8 nodes (a layer's experts spread over them). */
  function seriesAfterOneCallPerPair(detail?: 'node' | 'expert'): { reg: Registry; series: number } {
    const reg = new Registry();
    const calls = new CallMetrics(coordinatorMetrics(reg, detail), 64);
    for (let layer = 0; layer < 32; layer++) {
      for (let expert = 0; expert < 8; expert++) {
        calls.observe({ node: `n${expert}`, layer, experts: [expert], slots: [2], active: [10], tokens: 2, seconds: 0.001, computeUs: 500,
          bytesIn: 10, bytesOut: 10, wire: 'f32', retry: false });
      }
    }
    const fams = parsePrometheusText(reg.text());
    const series = [...fams.values()].filter((f) => f.name.startsWith('turbosparse_')).reduce((n, f) => n + f.samples.length, 0);
    return { reg, series };
  }

  test('node (the default): a few hundred series at 32 x 8; expert: tens of thousands, each pair its own', () => {
    const node = seriesAfterOneCallPerPair();
    const expert = seriesAfterOneCallPerPair('expert');
    expect(node.series).toBeLessThan(2000);
    expect(expert.series).toBeGreaterThan(20000);
    const call = (reg: Registry) => parsePrometheusText(reg.text()).get('turbosparse_expert_call_seconds')!;
    expect(histogramCounts(call(node.reg)).size).toBe(8); // one per node, 32 calls each
    for (const [key, n] of histogramCounts(call(node.reg))) expect([key, n]).toEqual([expect.stringMatching(/^node=n\d$/), 32]);
    expect(histogramCounts(call(expert.reg)).size).toBe(256);
    // The routed-token counter is per pair either way (one series each: hot experts stay visible).
    for (const { reg } of [node, expert]) {
      expect(parsePrometheusText(reg.text()).get('turbosparse_expert_tokens_total')!.samples).toHaveLength(256);
    }
  });

  test('names end in their unit', () => {
    const { reg } = seriesAfterOneCallPerPair();
    const names = [...parsePrometheusText(reg.text()).keys()];
    expect(names).toEqual(expect.arrayContaining(['turbosparse_expert_in_bytes_total', 'turbosparse_expert_out_bytes_total', 'turbosparse_expert_active_ratio']));
    expect(names.filter((n) => /_(bytes|seconds)_(in|out)|_fraction$/.test(n))).toEqual([]);
  });
});

describe('process and Node.js runtime metrics', () => {
  test('registered with the coordinator\'s metrics, read at scrape time, event-loop lag measured', async () => {
    const reg = new Registry();
    coordinatorMetrics(reg);
    coordinatorMetrics(reg); // twice on one registry: still one of each
    // Block the JS thread for ~60 ms: the next scrape's max lag shows it.
    await new Promise((r) => setTimeout(r, 30));
    const until = Date.now() + 60;
    while (Date.now() < until) { /* busy */ }
    await new Promise((r) => setTimeout(r, 30));
    const fams = parsePrometheusText(reg.text());
    const value = (name: string) => fams.get(name)!.samples[0].value;
    expect(fams.get('process_cpu_seconds_total')!.type).toBe('counter');
    expect(value('process_cpu_seconds_total')).toBeCloseTo(value('process_cpu_user_seconds_total') + value('process_cpu_system_seconds_total'), 5);
    expect(value('process_resident_memory_bytes')).toBeGreaterThan(10e6);
    expect(Math.abs(value('process_start_time_seconds') - (Date.now() / 1000 - process.uptime()))).toBeLessThan(2);
    expect(value('nodejs_heap_size_used_bytes')).toBeGreaterThan(0);
    expect(value('nodejs_heap_size_used_bytes')).toBeLessThanOrEqual(value('nodejs_heap_size_total_bytes'));
    if (process.platform === 'linux') expect(value('process_open_fds')).toBeGreaterThan(2);
    expect(value('nodejs_eventloop_lag_max_seconds')).toBeGreaterThanOrEqual(0.04);
    expect(value('nodejs_eventloop_lag_p99_seconds')).toBeLessThanOrEqual(value('nodejs_eventloop_lag_max_seconds'));
    expect(fams.get('nodejs_version_info')!.samples[0].labels.version).toBe(process.version);
    // The CPU counters only grow.
    const before = value('process_cpu_seconds_total');
    const spin = Date.now() + 20;
    while (Date.now() < spin) { /* busy */ }
    expect(parsePrometheusText(reg.text()).get('process_cpu_seconds_total')!.samples[0].value).toBeGreaterThan(before);
  });
});

test('HTTP request metrics are labelled by route template: the status page\'s paths by name, ids folded, the rest other', () => {
  const cases: [string, string][] = [
    ['/', '/'], ['/status.json', '/status.json'], ['/status.js', '/status.js'], ['/status.css', '/status.css'], ['/v1/status', '/v1/status'],
    ['/v1/completions?x=1', '/v1/completions'], ['/metrics', '/metrics'], ['/ready/', '/ready'],
    ['/v1/files/file-abc123', '/v1/files/{id}'], ['/v1/files/file-abc123/content', '/v1/files/{id}/content'],
    ['/v1/batches/batch_9', '/v1/batches/{id}'], ['/v1/batches/batch_9/cancel', '/v1/batches/{id}/cancel'],
    ['/v1/batches', '/v1/batches'], ['/wp-admin/x.php', 'other'], ['/v1/files/a/b/c', 'other'], ['//bad target', 'other'],
  ];
  for (const [url, label] of cases) expect([url, routeLabel(url)]).toEqual([url, label]);
});
