// A strict parser of Prometheus text exposition format 0.0.4, for tests: every
// line must be a comment, HELP/TYPE, or a well-formed sample; histogram series
// must be cumulative, end in +Inf and agree with _count.

export interface PromSample {
  name: string;
  labels: Record<string, string>;
  value: number;
}

export interface PromFamily {
  name: string;
  type: string;
  help: string;
  samples: PromSample[];
}

const SAMPLE_RE = /^([a-zA-Z_:][a-zA-Z0-9_:]*)(\{(.*)\})?\s+(\S+)(\s+-?\d+)?$/;
const LABEL_RE = /\s*([a-zA-Z_][a-zA-Z0-9_]*)="((?:[^"\\]|\\.)*)"\s*(,|$)/y;

function parseValue(s: string, line: number): number {
  if (s === '+Inf') return Infinity;
  if (s === '-Inf') return -Infinity;
  if (s === 'NaN') return NaN;
  const v = Number(s);
  if (!Number.isFinite(v) && !/^[+-]?\d/.test(s)) throw new Error(`line ${line}: bad value ${s}`);
  if (Number.isNaN(v)) throw new Error(`line ${line}: bad value ${s}`);
  return v;
}

function parseLabels(s: string, line: number): Record<string, string> {
  const out: Record<string, string> = {};
  LABEL_RE.lastIndex = 0;
  while (LABEL_RE.lastIndex < s.length) {
    const m = LABEL_RE.exec(s);
    if (!m) throw new Error(`line ${line}: bad labels {${s}}`);
    if (m[1] in out) throw new Error(`line ${line}: duplicate label ${m[1]}`);
    out[m[1]] = m[2].replace(/\\(.)/g, (_, c) => (c === 'n' ? '\n' : c));
    if (m[3] === '') break;
  }
  return out;
}

function familyOf(sample: string, families: Map<string, PromFamily>): PromFamily | undefined {
  if (families.has(sample)) return families.get(sample);
  for (const suffix of ['_bucket', '_sum', '_count']) {
    if (sample.endsWith(suffix)) {
      const f = families.get(sample.slice(0, -suffix.length));
      if (f && (f.type === 'histogram' || f.type === 'summary')) return f;
    }
  }
  return undefined;
}

export function parsePrometheusText(text: string): Map<string, PromFamily> {
  const families = new Map<string, PromFamily>();
  const lines = text.split('\n');
  if (lines[lines.length - 1] !== '') throw new Error('exposition must end with a newline');
  lines.forEach((raw, idx) => {
    const n = idx + 1;
    if (raw === '') return;
    if (raw.startsWith('#')) {
      const m = /^# (HELP|TYPE) ([a-zA-Z_:][a-zA-Z0-9_:]*) ?(.*)$/.exec(raw);
      if (!m) return; // plain comment
      const f = families.get(m[2]) ?? { name: m[2], type: 'untyped', help: '', samples: [] };
      if (m[1] === 'TYPE') {
        if (!['counter', 'gauge', 'histogram', 'summary', 'untyped'].includes(m[3])) throw new Error(`line ${n}: bad type ${m[3]}`);
        if (f.samples.length > 0) throw new Error(`line ${n}: TYPE after samples of ${m[2]}`);
        f.type = m[3];
      } else f.help = m[3];
      families.set(m[2], f);
      return;
    }
    const m = SAMPLE_RE.exec(raw);
    if (!m) throw new Error(`line ${n}: not a sample: ${raw}`);
    const labels = m[3] !== undefined ? parseLabels(m[3], n) : {};
    const value = parseValue(m[4], n);
    let f = familyOf(m[1], families);
    if (!f) {
      f = { name: m[1], type: 'untyped', help: '', samples: [] };
      families.set(m[1], f);
    }
    f.samples.push({ name: m[1], labels, value });
  });
  for (const f of families.values()) if (f.type === 'histogram') checkHistogram(f);
  return families;
}

function seriesKey(labels: Record<string, string>): string {
  return JSON.stringify(Object.entries(labels).filter(([k]) => k !== 'le').sort());
}

function checkHistogram(f: PromFamily): void {
  const bySeries = new Map<string, { buckets: [number, number][]; count?: number; sum?: number }>();
  for (const s of f.samples) {
    const key = seriesKey(s.labels);
    const e = bySeries.get(key) ?? { buckets: [] };
    bySeries.set(key, e);
    if (s.name === `${f.name}_bucket`) {
      if (s.labels.le === undefined) throw new Error(`${f.name}: bucket without le`);
      e.buckets.push([parseValue(s.labels.le, 0), s.value]);
    } else if (s.name === `${f.name}_count`) e.count = s.value;
    else if (s.name === `${f.name}_sum`) e.sum = s.value;
    else throw new Error(`${f.name}: unexpected sample ${s.name}`);
  }
  for (const [key, e] of bySeries) {
    if (e.count === undefined || e.sum === undefined) throw new Error(`${f.name}${key}: missing _count or _sum`);
    const last = e.buckets[e.buckets.length - 1];
    if (!last || last[0] !== Infinity) throw new Error(`${f.name}${key}: last bucket is not +Inf`);
    if (last[1] !== e.count) throw new Error(`${f.name}${key}: +Inf bucket ${last[1]} != count ${e.count}`);
    for (let i = 1; i < e.buckets.length; i++) {
      if (!(e.buckets[i][0] > e.buckets[i - 1][0])) throw new Error(`${f.name}${key}: le not increasing`);
      if (e.buckets[i][1] < e.buckets[i - 1][1]) throw new Error(`${f.name}${key}: buckets not cumulative`);
    }
  }
}

/** The `_count` of each histogram series of a family, keyed by its labels (without le) as `a=1,b=2`. */
export function histogramCounts(f: PromFamily): Map<string, number> {
  const out = new Map<string, number>();
  for (const s of f.samples) {
    if (s.name !== `${f.name}_count`) continue;
    out.set(
      Object.entries(s.labels)
        .sort()
        .map(([k, v]) => `${k}=${v}`)
        .join(','),
      s.value,
    );
  }
  return out;
}
