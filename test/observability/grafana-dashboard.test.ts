// deploy/grafana/dashboard.json: valid, laid out without overlaps, and every metric
// its queries use is one the code registers (a renamed metric breaks this test,
// not a dashboard in production).
import fs from 'node:fs';
import path from 'node:path';
import { Registry } from '../../core/metrics';
import { coordinatorMetrics } from '../../coordinator/telemetry';
import { Scheduler, type SchedulerEngine } from '../../coordinator/scheduler';
import type { TextTokenizer } from '../../core/tokenizer';
import { nodeMetrics } from '../../expert-node/telemetry';

interface Panel {
  id: number;
  type: string;
  title: string;
  datasource?: { uid: string };
  gridPos: { x: number; y: number; w: number; h: number };
  targets?: { expr: string; datasource?: { uid: string } }[];
}

const dashboard = JSON.parse(fs.readFileSync(path.resolve(__dirname, '..', '..', 'deploy', 'grafana', 'dashboard.json'), 'utf8')) as {
  uid: string;
  panels: Panel[];
  templating: { list: { name: string; definition?: string }[] };
};

function registeredMetrics(): Set<string> {
  const reg = new Registry();
  coordinatorMetrics(reg);
  nodeMetrics(reg);
  new Scheduler({} as SchedulerEngine, {} as TextTokenizer, { metrics: reg }); // registers the scheduler's
  const names = new Set<string>();
  for (const m of reg.all()) {
    names.add(m.name);
    if (m.type === 'histogram') for (const s of ['_bucket', '_sum', '_count']) names.add(m.name + s);
  }
  return names;
}

test('every query uses metrics the code registers, through the datasource variable', () => {
  const known = registeredMetrics();
  const exprs = dashboard.panels.flatMap((p) => (p.targets ?? []).map((t) => ({ p, t })));
  expect(exprs.length).toBeGreaterThan(15);
  const used = new Set<string>();
  for (const { p, t } of exprs) {
    expect(p.datasource?.uid).toBe('${datasource}');
    expect(t.datasource?.uid).toBe('${datasource}');
    for (const m of t.expr.match(/turbosparse_[a-z_]+/g) ?? []) {
      used.add(m);
      if (!known.has(m)) throw new Error(`panel "${p.title}" queries ${m}, which nothing registers`);
    }
    // Balanced brackets: a typo here is a panel that never loads.
    for (const [o, c] of [['(', ')'], ['{', '}'], ['[', ']']]) expect(t.expr.split(o).length).toBe(t.expr.split(c).length);
  }
  for (const v of dashboard.templating.list) {
    for (const m of v.definition?.match(/turbosparse_[a-z_]+/g) ?? []) expect(known.has(m)).toBe(true);
  }
  // What the issue asks for: per-expert latency heatmaps, per-node load, active fraction per layer, tokens/s.
  const find = (type: string, metric: string) => dashboard.panels.some((p) => p.type === type && (p.targets ?? []).some((t) => t.expr.includes(metric)));
  expect(find('heatmap', 'turbosparse_expert_call_seconds_bucket')).toBe(true);
  expect(find('timeseries', 'turbosparse_node_call_seconds_count')).toBe(true);
  expect(dashboard.panels.some((p) => /active-neuron fraction per layer/i.test(p.title))).toBe(true);
  expect(find('stat', 'turbosparse_step_tokens_total')).toBe(true);
  expect(used.has('turbosparse_expert_node_compute_seconds_sum')).toBe(true);
});

test('panels have unique ids and do not overlap', () => {
  const ids = dashboard.panels.map((p) => p.id);
  expect(new Set(ids).size).toBe(ids.length);
  const boxes = dashboard.panels.map((p) => p.gridPos);
  for (let i = 0; i < boxes.length; i++) {
    const a = boxes[i];
    expect(a.x + a.w).toBeLessThanOrEqual(24);
    for (let j = i + 1; j < boxes.length; j++) {
      const b = boxes[j];
      const overlap = a.x < b.x + b.w && b.x < a.x + a.w && a.y < b.y + b.h && b.y < a.y + a.h;
      if (overlap) throw new Error(`panels "${dashboard.panels[i].title}" and "${dashboard.panels[j].title}" overlap`);
    }
  }
});
