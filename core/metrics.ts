// A small dependency-free metrics registry: counters, gauges and histograms with
// label sets, rendered as Prometheus text exposition format 0.0.4 (`text()`) and
// as a JSON snapshot (`json()`) for the status page and `turbosparse stats`.
//
// Why not prom-client or the OpenTelemetry metrics SDK: both services need the
// same few instruments on hot paths (one observation per expert call), the
// expert node must not pull in an HTTP framework, and tests need fresh
// registries. Children are cached per label set, so the hot path is one Map
// lookup (or none, when the caller keeps the child).
//
//   const reg = new Registry();
//   const lat = reg.histogram({ name: 'x_seconds', help: '...', labelNames: ['node'], buckets: [0.001, 0.01] });
//   lat.labels({ node: 'a' }).observe(0.004);
//   res.setHeader('content-type', PROMETHEUS_CONTENT_TYPE); res.end(reg.text());

import { logOnce } from './log-once';

export const PROMETHEUS_CONTENT_TYPE = 'text/plain; version=0.0.4; charset=utf-8';

export type LabelValues = Record<string, string | number>;
export type MetricType = 'counter' | 'gauge' | 'histogram';

export interface MetricOptions {
  name: string;
  help: string;
  labelNames?: readonly string[];
}

export interface HistogramOptions extends MetricOptions {
  /** Upper bounds, strictly increasing; +Inf is added. Defaults to DEFAULT_BUCKETS. */
  buckets?: readonly number[];
}

export interface GaugeOptions extends MetricOptions {
  /** Called before every `text()`/`json()` to refresh values read from elsewhere (queue depth, cache use). */
  collect?: (gauge: Gauge) => void;
}

/** Prometheus client defaults (seconds). */
export const DEFAULT_BUCKETS: readonly number[] = [0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10];

/** `count` bounds start, start*factor, start*factor^2, ... */
export function exponentialBuckets(start: number, factor: number, count: number): number[] {
  if (!(start > 0) || !(factor > 1) || !(count >= 1)) throw new Error('exponentialBuckets: need start > 0, factor > 1, count >= 1');
  const out: number[] = [];
  for (let i = 0, b = start; i < count; i++, b *= factor) out.push(Number(b.toPrecision(6)));
  return out;
}

/** `count` bounds start, start+width, ... */
export function linearBuckets(start: number, width: number, count: number): number[] {
  if (!(width > 0) || !(count >= 1)) throw new Error('linearBuckets: need width > 0, count >= 1');
  const out: number[] = [];
  for (let i = 0; i < count; i++) out.push(Number((start + i * width).toPrecision(6)));
  return out;
}

const NAME_RE = /^[a-zA-Z_:][a-zA-Z0-9_:]*$/;
const LABEL_RE = /^[a-zA-Z_][a-zA-Z0-9_]*$/;

/** Label values joined in declared order (\u0001 as separator); checks the names match the declared ones. */
function seriesKey(labelNames: readonly string[], values: LabelValues | undefined, metric: string): string {
  if (labelNames.length === 0) {
    if (values && Object.keys(values).length > 0) throw new Error(`metric ${metric} has no labels, got ${Object.keys(values).join(',')}`);
    return '';
  }
  if (!values) throw new Error(`metric ${metric} needs labels ${labelNames.join(',')}`);
  let key = '';
  let seen = 0;
  for (let i = 0; i < labelNames.length; i++) {
    const v = values[labelNames[i]];
    if (v === undefined) throw new Error(`metric ${metric}: label ${labelNames[i]} missing`);
    seen++;
    key += i === 0 ? String(v) : '\u0001' + String(v);
  }
  if (Object.keys(values).length !== seen) {
    throw new Error(`metric ${metric}: labels must be exactly ${labelNames.join(',')}, got ${Object.keys(values).join(',')}`);
  }
  return key;
}

function escapeLabelValue(v: string): string {
  return v.replace(/\\/g, '\\\\').replace(/\n/g, '\\n').replace(/"/g, '\\"');
}

function escapeHelp(v: string): string {
  return v.replace(/\\/g, '\\\\').replace(/\n/g, '\\n');
}

export function formatValue(v: number): string {
  if (v === Infinity) return '+Inf';
  if (v === -Infinity) return '-Inf';
  if (Number.isNaN(v)) return 'NaN';
  return String(v);
}

function renderLabels(names: readonly string[], values: readonly string[], extra?: [string, string]): string {
  if (names.length === 0 && !extra) return '';
  const parts: string[] = [];
  for (let i = 0; i < names.length; i++) parts.push(`${names[i]}="${escapeLabelValue(values[i])}"`);
  if (extra) parts.push(`${extra[0]}="${escapeLabelValue(extra[1])}"`);
  return `{${parts.join(',')}}`;
}

abstract class Metric<Child> {
  readonly name: string;
  readonly help: string;
  readonly labelNames: readonly string[];
  abstract readonly type: MetricType;
  protected readonly children = new Map<string, { values: string[]; child: Child }>();

  constructor(opts: MetricOptions) {
    if (!NAME_RE.test(opts.name)) throw new Error(`metric name ${JSON.stringify(opts.name)} is not a valid Prometheus name`);
    for (const l of opts.labelNames ?? []) {
      if (!LABEL_RE.test(l) || l.startsWith('__')) throw new Error(`metric ${opts.name}: label name ${JSON.stringify(l)} is invalid`);
    }
    this.name = opts.name;
    this.help = opts.help;
    this.labelNames = [...(opts.labelNames ?? [])];
  }

  protected abstract makeChild(): Child;

  /** The series for these label values (created at zero on first use). Keep it on hot paths. */
  labels(values?: LabelValues): Child {
    const key = seriesKey(this.labelNames, values, this.name);
    let entry = this.children.get(key);
    if (!entry) {
      entry = { values: this.labelNames.map((l) => String(values![l])), child: this.makeChild() };
      this.children.set(key, entry);
    }
    return entry.child;
  }

  /** Drops one series (e.g. a node that left the cluster). */
  remove(values?: LabelValues): void {
    this.children.delete(seriesKey(this.labelNames, values, this.name));
  }

  reset(): void {
    this.children.clear();
  }

  /** Every series with its label values, in creation order. */
  series(): { labels: Record<string, string>; child: Child }[] {
    return [...this.children.values()].map(({ values, child }) => ({
      labels: Object.fromEntries(this.labelNames.map((l, i) => [l, values[i]])),
      child,
    }));
  }

  protected header(): string {
    return `# HELP ${this.name} ${escapeHelp(this.help)}\n# TYPE ${this.name} ${this.type}\n`;
  }

  abstract text(): string;
  abstract json(): MetricSnapshot;
}

/** A counter or gauge: one number per series. */
abstract class ValueMetric<Child extends { value: number }> extends Metric<Child> {
  get(values?: LabelValues): number {
    return this.children.get(seriesKey(this.labelNames, values, this.name))?.child.value ?? 0;
  }
  text(): string {
    let s = this.header();
    for (const { values, child } of this.children.values()) {
      s += `${this.name}${renderLabels(this.labelNames, values)} ${formatValue(child.value)}\n`;
    }
    return s;
  }
  json(): MetricSnapshot {
    return {
      name: this.name,
      help: this.help,
      type: this.type,
      series: this.series().map(({ labels, child }) => ({ labels, value: child.value })),
    };
  }
}

export class CounterChild {
  value = 0;
  inc(v = 1): void {
    if (!(v >= 0)) throw new Error(`counter increment must be >= 0, got ${v}`);
    this.value += v;
  }
}

export class Counter extends ValueMetric<CounterChild> {
  readonly type = 'counter' as const;
  protected makeChild(): CounterChild {
    return new CounterChild();
  }
  inc(values?: LabelValues, v = 1): void {
    this.labels(values).inc(v);
  }
}

export class GaugeChild {
  value = 0;
  set(v: number): void {
    this.value = v;
  }
  inc(v = 1): void {
    this.value += v;
  }
  dec(v = 1): void {
    this.value -= v;
  }
}

export class Gauge extends ValueMetric<GaugeChild> {
  readonly type = 'gauge' as const;
  private readonly collectFn?: (g: Gauge) => void;
  constructor(opts: GaugeOptions) {
    super(opts);
    this.collectFn = opts.collect;
  }
  protected makeChild(): GaugeChild {
    return new GaugeChild();
  }
  set(values: LabelValues | undefined, v: number): void {
    this.labels(values).set(v);
  }
  /** Runs the collect callback; a failing callback must not break a scrape. */
  collect(): void {
    if (!this.collectFn) return;
    try {
      this.collectFn(this);
    } catch {
      /* a broken source leaves the last value */
    }
  }
}

export class HistogramChild {
  /** Non-cumulative counts per bucket; the last one is +Inf. */
  readonly counts: Float64Array;
  sum = 0;
  count = 0;
  constructor(readonly bounds: readonly number[]) {
    this.counts = new Float64Array(bounds.length + 1);
  }
  observe(v: number): void {
    // First bound >= v (le semantics), by binary search: 30-odd latency buckets are common.
    const b = this.bounds;
    let lo = 0;
    let hi = b.length;
    while (lo < hi) {
      const mid = (lo + hi) >>> 1;
      if (v > b[mid]) lo = mid + 1;
      else hi = mid;
    }
    this.counts[lo]++;
    this.sum += v;
    this.count++;
  }
  /** Cumulative counts aligned with bounds, then +Inf. */
  cumulative(): number[] {
    const out: number[] = [];
    let acc = 0;
    for (const c of this.counts) out.push((acc += c));
    return out;
  }
  /** Prometheus histogram_quantile: linear interpolation inside the bucket holding rank q*count. */
  quantile(q: number): number {
    return bucketQuantile(q, this.bounds, this.cumulative());
  }
}

/** histogram_quantile over cumulative bucket counts (bounds without +Inf; cumulative has one more entry). */
export function bucketQuantile(q: number, bounds: readonly number[], cumulative: readonly number[]): number {
  const total = cumulative[cumulative.length - 1] ?? 0;
  if (total === 0) return NaN;
  const rank = q * total;
  let i = 0;
  while (i < cumulative.length - 1 && cumulative[i] < rank) i++;
  if (i >= bounds.length) return bounds[bounds.length - 1] ?? NaN; // in +Inf: the highest finite bound
  const lo = i === 0 ? Math.min(0, bounds[0]) : bounds[i - 1];
  const below = i === 0 ? 0 : cumulative[i - 1];
  const inBucket = cumulative[i] - below;
  if (inBucket === 0) return bounds[i];
  return lo + ((bounds[i] - lo) * (rank - below)) / inBucket;
}

export class Histogram extends Metric<HistogramChild> {
  readonly type = 'histogram' as const;
  readonly buckets: readonly number[];
  constructor(opts: HistogramOptions) {
    super(opts);
    if (this.labelNames.includes('le')) throw new Error(`histogram ${opts.name}: "le" is reserved`);
    const b = [...(opts.buckets ?? DEFAULT_BUCKETS)].filter((x) => x !== Infinity);
    if (b.length === 0) throw new Error(`histogram ${opts.name}: needs at least one finite bucket`);
    for (let i = 1; i < b.length; i++) {
      if (!(b[i] > b[i - 1])) throw new Error(`histogram ${opts.name}: buckets must increase strictly`);
    }
    this.buckets = b;
  }
  protected makeChild(): HistogramChild {
    return new HistogramChild(this.buckets);
  }
  observe(values: LabelValues | undefined, v: number): void {
    this.labels(values).observe(v);
  }
  text(): string {
    let s = this.header();
    for (const { values, child } of this.children.values()) {
      const cum = child.cumulative();
      for (let i = 0; i < this.buckets.length; i++) {
        s += `${this.name}_bucket${renderLabels(this.labelNames, values, ['le', formatValue(this.buckets[i])])} ${cum[i]}\n`;
      }
      s += `${this.name}_bucket${renderLabels(this.labelNames, values, ['le', '+Inf'])} ${child.count}\n`;
      s += `${this.name}_sum${renderLabels(this.labelNames, values)} ${formatValue(child.sum)}\n`;
      s += `${this.name}_count${renderLabels(this.labelNames, values)} ${child.count}\n`;
    }
    return s;
  }
  json(): MetricSnapshot {
    return {
      name: this.name,
      help: this.help,
      type: this.type,
      buckets: [...this.buckets],
      series: this.series().map(({ labels, child }) => ({
        labels,
        count: child.count,
        sum: child.sum,
        cumulative: child.cumulative(),
      })),
    };
  }
}

/** JSON form of one metric; histograms carry cumulative counts aligned with `buckets` plus +Inf. */
export interface MetricSnapshot {
  name: string;
  help: string;
  type: MetricType;
  buckets?: number[];
  series: { labels: Record<string, string>; value?: number; count?: number; sum?: number; cumulative?: number[] }[];
}

export interface RegistryOptions {
  /** Where a failing onCollect callback is reported (once per distinct message). Default: a line on stderr. */
  log?: (line: string) => void;
}

export class Registry {
  private readonly metrics = new Map<string, Metric<unknown>>();
  private readonly report: (msg: string) => void;

  constructor(opts: RegistryOptions = {}) {
    this.report = logOnce(opts.log ?? ((line) => process.stderr.write(line + '\n')));
  }

  private register<M extends Metric<unknown>>(m: M): M {
    const old = this.metrics.get(m.name);
    if (old) {
      // Registering the same shape twice returns the first: modules may declare what they use.
      const same =
        old.type === m.type &&
        old.labelNames.join(',') === m.labelNames.join(',') &&
        (!(old instanceof Histogram) || old.buckets.join(',') === (m as unknown as Histogram).buckets.join(','));
      if (!same) throw new Error(`metric ${m.name} is already registered with a different type, labels or buckets`);
      return old as M;
    }
    this.metrics.set(m.name, m);
    return m;
  }

  counter(opts: MetricOptions): Counter {
    return this.register(new Counter(opts));
  }
  gauge(opts: GaugeOptions): Gauge {
    return this.register(new Gauge(opts));
  }
  histogram(opts: HistogramOptions): Histogram {
    return this.register(new Histogram(opts));
  }

  get(name: string): Counter | Gauge | Histogram | undefined {
    return this.metrics.get(name) as Counter | Gauge | Histogram | undefined;
  }

  all(): (Counter | Gauge | Histogram)[] {
    return [...this.metrics.values()] as (Counter | Gauge | Histogram)[];
  }

  private readonly collectors: (() => void)[] = [];

  /** Runs `fn` before every text()/json() (e.g. to record work deferred off a hot path). */
  onCollect(fn: () => void): void {
    this.collectors.push(fn);
  }

  /** Runs every onCollect callback once; a failing one is reported and skipped, so a scrape still answers. */
  private collect(): void {
    for (const f of this.collectors) {
      try {
        f();
      } catch (e) {
        this.report(`metrics: an onCollect callback failed (${e instanceof Error ? e.message : String(e)}); the others still ran`);
      }
    }
    for (const m of this.metrics.values()) if (m instanceof Gauge) m.collect();
  }

  /** Prometheus text exposition format 0.0.4. */
  text(): string {
    this.collect();
    let s = '';
    for (const m of this.metrics.values()) s += m.text();
    return s;
  }

  /** JSON snapshot of every metric. */
  json(): { metrics: MetricSnapshot[] } {
    this.collect();
    return { metrics: [...this.metrics.values()].map((m) => m.json()) };
  }

  /** Zeroes every series (tests). */
  reset(): void {
    for (const m of this.metrics.values()) m.reset();
  }
}

/** The process-wide registry both services expose at /metrics. */
export const metrics = new Registry();
