// The coordinator's own cost per decode step, apart from the experts: the engine runs with an expert
// backend that costs nothing (ZeroExperts returns zeros at once), driven by the Scheduler as serve and
// bench/cluster drive it, at several row counts (concurrent sequences), contexts and layer counts.
// Each step's wall time minus what the cost model charges for the coordinator's weight reads (at the GB/s
// measured here) is the software cost the model must add; fitted as
//   per step: stepUs + rowUs x rows      per layer: layerUs + rowLayerUs x rows
// (least squares over every point; two layer counts separate per-step from per-layer terms).
// --out FILE writes those constants with the GB/s they go with: `plan --calibration FILE` and
// `bench/plan-vs-measured.ts --calibration FILE` use them, so users calibrate on their own coordinator.
//   node -r ./test/cluster/ts-register-cached.js bench/coordinator-cost.ts [--shape demo] [--layers 4,16]
//        [--concurrency 1,4,16] [--context 8,64] [--steps 12] [--rounds 2] [--expert-wait-us 0] [--out calibration.json] [--json]
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import type { ExpertBackend, ExpertBatch, ExpertOutput } from '../core/expert-backend';
import { UserError } from '../core/errors';
import { Registry } from '../core/metrics';
import { native } from '../core/native';
import { routeCount } from '../core/routed-batch';
import { TextTokenizer } from '../core/tokenizer';
import { loadEngine } from '../coordinator/load-engine';
import { GREEDY } from '../coordinator/sampler';
import { Scheduler } from '../coordinator/scheduler';
import { makePlan } from '../cli/plan';
import { type Calibration, CALIBRATION_KIND } from '../core/placement/cost-model';
import { benchModelDir, randomBf16 } from './bench-shapes';
import { arg } from './models';

const log = (line: string) => process.stderr.write(`${line}\n`);

/**
 * Experts that compute nothing: what is left of a step is the coordinator's own work. With `waitUs` > 0 each
 * layer's call waits that long first (a remote call's wait, during which the coordinator's kernel threads go
 * idle and other processes take the cores); the wait is timed and subtracted.
 */
class ZeroExperts implements ExpertBackend {
  readonly name = 'zero';
  /** Wall time spent inside runExperts, µs, since start. */
  spentUs = 0;
  constructor(private readonly waitUs: number) {}
  async runExperts(batch: ExpertBatch): Promise<ExpertOutput> {
    const t0 = performance.now();
    if (this.waitUs > 0) await new Promise((r) => setTimeout(r, this.waitUs / 1000));
    const out = { out: new Float32Array(batch.hidden.length), active: new Int32Array(routeCount(batch.groups)) };
    this.spentUs += (performance.now() - t0) * 1000;
    return out;
  }
  async close(): Promise<void> {}
}


/**
 * Dense weight bytes the coordinator's kernels read per second, one row, every core: [4H, H] bf16 matrices
 * (about one layer's attention) streamed through 320 MB (past the caches, as a model's weights are); the
 * fastest quartile of `reps` calls. bench/plan-vs-measured's coordinator figure too.
 */
export async function measureCoordinatorGbps(H: number, reps: number): Promise<number> {
  const cb = native().createBackend('cpu', 0);
  try {
    const count = Math.max(2, Math.ceil((320 << 20) / (4 * H * H * 2)));
    const ws = [];
    for (let i = 0; i < count; i++) ws.push(await cb.createWeight(randomBf16(4 * H, H, 100 + i), 'bf16'));
    const x = Float32Array.from({ length: H }, (_, i) => Math.cos(i));
    const y = new Float32Array(4 * H);
    const rates: number[] = [];
    for (let r = 0; r < reps + 3; r++) {
      const t0 = performance.now();
      await cb.matmul(ws[r % count], 1, x, y);
      if (r >= 3) rates.push((4 * H * H * 2) / ((performance.now() - t0) / 1000));
    }
    rates.sort((a, b) => b - a);
    return rates[Math.floor(rates.length / 4)] / 1e9;
  } finally {
    cb.close();
  }
}

interface Point {
  layers: number;
  context: number;
  rows: number;
  /** Wall time between two decode steps (engine step + the scheduler's work around it), fast quartile, best round, µs. */
  stepUs: number;
  /** The engine's own step time as the scheduler reports it (fast quartile, the same round), µs. */
  engineUs: number;
  /** The cost model's weight reads for the same step (lm_head, attention, router, predictors, KV), µs. */
  weightsUs: number;
  /** Left for the software terms: stepUs - weightsUs. */
  residualUs: number;
  /** The fit's value at this point, µs. */
  fitUs?: number;
}

/** The q-quantile; the fast quartile is the step with as little of the neighbours' load as the run saw. */
const quantile = (xs: number[], q: number) => {
  const s = [...xs].sort((a, b) => a - b);
  return s.length ? s[Math.floor(s.length * q)] : NaN;
};

/** `rows` sequences with `context`-token prompts decoding `steps` steps together; per-step wall and engine times. */
async function measureSteps(sched: Scheduler, experts: ZeroExperts, vocab: number, rows: number, context: number, steps: number): Promise<{ wall: number; engine: number }> {
  const prompt = (i: number) => Array.from({ length: context }, (_, j) => (1 + ((i * 31 + j * 7) % (vocab - 2))));
  const walls: number[] = [];
  const engines: number[] = [];
  let last = -1;
  let lastSpent = 0;
  sched.onStep = (s) => {
    const now = performance.now();
    const spent = experts.spentUs - lastSpent;
    lastSpent = experts.spentUs;
    // Decode steps only (every row a running sequence's next token), timed from the previous decode step's end,
    // less the time inside the experts' calls.
    if (s.prefillRows === 0 && s.rows === rows) {
      if (last >= 0) walls.push((now - last) * 1000 - spent);
      engines.push(s.ms * 1000 - spent);
      last = now;
    } else {
      last = -1;
    }
  };
  const handles = sched.submitAll(Array.from({ length: rows }, (_, i) => ({ promptIds: prompt(i), sampling: GREEDY, maxTokens: steps + 2, stopIds: [] })));
  await Promise.all(handles.map((h) => h.result));
  sched.onStep = null;
  return { wall: quantile(walls, 0.25), engine: quantile(engines, 0.25) };
}

/** Least squares for a small system (normal equations, Gaussian elimination). */
function leastSquares(a: number[][], b: number[]): number[] {
  const n = a[0].length;
  const m = Array.from({ length: n }, (_, i) => [...Array.from({ length: n }, (_, j) => a.reduce((s, r) => s + r[i] * r[j], 0)), a.reduce((s, r, k) => s + r[i] * b[k], 0)]);
  for (let i = 0; i < n; i++) {
    let p = i;
    for (let r = i + 1; r < n; r++) if (Math.abs(m[r][i]) > Math.abs(m[p][i])) p = r;
    [m[i], m[p]] = [m[p], m[i]];
    for (let r = 0; r < n; r++) {
      if (r === i || m[i][i] === 0) continue;
      const f = m[r][i] / m[i][i];
      for (let c = i; c <= n; c++) m[r][c] -= f * m[i][c];
    }
  }
  return m.map((r, i) => r[n] / r[i]);
}

async function main(): Promise<void> {
  const shape = arg('shape', 'demo');
  const layerCounts = arg('layers', '4,16').split(',').map(Number);
  const levels = arg('concurrency', '1,4,16').split(',').map(Number);
  const contexts = arg('context', '8,64').split(',').map(Number);
  const steps = Number(arg('steps', '12'));
  const reps = Number(arg('reps', '40'));
  const nRounds = Number(arg('rounds', '2'));
  const waitUs = Number(arg('expert-wait-us', '0'));
  const out = arg('out', '');
  const json = process.argv.includes('--json');
  const started = new Date().toISOString();
  for (const [name, v] of [['steps', steps], ['rounds', nRounds], ['reps', reps], ...layerCounts.map((x) => ['layers', x] as const),
    ...levels.map((x) => ['concurrency', x] as const), ...contexts.map((x) => ['context', x] as const)] as const) {
    if (!Number.isInteger(v) || v < 1) throw new UserError(`--${name} must be positive integers, got ${v}`);
  }
  if (!Number.isFinite(waitUs) || waitUs < 0) throw new UserError(`--expert-wait-us must be a number >= 0, got ${waitUs}`);
  // The fit separates per-step from per-layer and fixed from per-row terms: it needs two of each.
  if (new Set(layerCounts).size < 2 || new Set(levels).size < 2) {
    throw new UserError(`--layers and --concurrency need at least two different values each for the fit (got ${layerCounts.join(',')} and ${levels.join(',')})`);
  }

  const tmp = fs.mkdtempSync(path.join(os.tmpdir(), 'coordinator-cost-'));
  const nodesFile = path.join(tmp, 'nodes.yaml');
  fs.writeFileSync(nodesFile, 'nodes:\n  - name: coordinator\n    address: local\n    memory_gib: 64\n    device: cpu\n    gbps: 1\n');
  const points: Point[] = [];
  let gbps = 0;
  try {
    // Rounds: each point keeps its fastest round (the machine is shared), the GB/s its best measurement.
    for (let round = 0; round < nRounds; round++) for (const layers of layerCounts) {
      const dir = await benchModelDir(shape, layers, log);
      const experts = new ZeroExperts(waitUs);
      const engine = await loadEngine({ modelDir: dir, device: 'cpu', log, experts: { kind: 'file', path: 'zero' }, remoteExperts: async () => experts });
      engine.overlap = 'off';
      const tok = TextTokenizer.fromModel(engine.folder);
      const sched = new Scheduler(engine, tok, { metrics: new Registry(), kvBudgetBytes: 2 ** 40, maxRunning: 1024 });
      try {
        // The GB/s right before this model's points: the weight reads subtracted below use it.
        const g = await measureCoordinatorGbps(engine.config.hiddenSize, reps);
        gbps = Math.max(gbps, g);
        log(`round ${round + 1}, ${layers} layers: coordinator dense ${g.toFixed(2)} GB/s`);
        await measureSteps(sched, experts, engine.config.vocabSize, 2, 8, 3); // warm-up
        for (const context of contexts) for (const rows of levels) {
          const t = await measureSteps(sched, experts, engine.config.vocabSize, rows, context, steps);
          const same = points.find((p) => p.layers === layers && p.context === context && p.rows === rows);
          if (!same) points.push({ layers, context, rows, stepUs: t.wall, engineUs: t.engine, weightsUs: 0, residualUs: 0 });
          else if (t.wall < same.stepUs) Object.assign(same, { stepUs: t.wall, engineUs: t.engine });
          log(`  context ${context} rows ${rows}: step ${(t.wall / 1000).toFixed(2)} ms (engine ${(t.engine / 1000).toFixed(2)} ms)`);
        }
      } finally {
        await sched.close();
        await engine.close();
      }
    }
    // The model's weight reads at the best GB/s seen, with every software term zeroed.
    for (const p of points) {
      const plan = await makePlan({
        model: await benchModelDir(shape, p.layers, log), nodesFile, link: 'loopback', weights: 'auto', concurrency: [p.rows], wire: 'f32',
        replicas: 1, coordinatorGbps: gbps, coordinatorDevice: 'cpu', context: p.context,
      }, { coordinatorStepUs: 0, coordinatorLayerUs: 0, coordinatorRowUs: 0, coordinatorRowLayerUs: 0 });
      p.weightsUs = plan.predictions[0].coordinatorMs * 1000;
      p.residualUs = p.stepUs - p.weightsUs;
    }
  } finally {
    fs.rmSync(tmp, { recursive: true, force: true });
  }
  let [stepUs, rowUs, layerUs, rowLayerUs] = leastSquares(points.map((p) => [1, p.rows, p.layers, p.layers * p.rows]), points.map((p) => p.residualUs));
  // A per-step cost per row below 0 is noise (neighbours' load) the two layer counts could not separate from the
  // per-layer row term: refit with the per-row cost all per layer (where attention, router and predictors are).
  if (rowUs < 0) {
    rowUs = 0;
    [stepUs, layerUs, rowLayerUs] = leastSquares(points.map((p) => [1, p.layers, p.layers * p.rows]), points.map((p) => p.residualUs));
  }
  for (const p of points) p.fitUs = stepUs + rowUs * p.rows + p.layers * (layerUs + rowLayerUs * p.rows);
  const calibration: Calibration = {
    kind: CALIBRATION_KIND,
    measured: started,
    machine: `${os.cpus().length} x ${os.cpus()[0]?.model ?? '?'}, load average ${os.loadavg()[0].toFixed(1)}`,
    model: `${shape} shape${waitUs > 0 ? `, experts waiting ${waitUs} µs` : ''}, layers ${layerCounts.join(',')}, rows ${levels.join(',')}, context ${contexts.join(',')}`,
    coordinatorGbps: Number(gbps.toFixed(3)),
    constants: {
      coordinatorStepUs: Math.round(stepUs), coordinatorRowUs: Math.round(rowUs),
      coordinatorLayerUs: Math.round(layerUs), coordinatorRowLayerUs: Math.round(rowLayerUs),
    },
  };
  if (out) fs.writeFileSync(out, `${JSON.stringify(calibration, null, 2)}\n`);
  if (rowUs + rowLayerUs < 0) log('warning: the fitted per-row cost is below 0 (noise from other work on the machine): `plan` refuses this file; rerun with more --steps and --rounds when the machine is quieter');
  if (!json) {
    console.log(`coordinator cost: ${shape} shape, zero-cost experts${waitUs > 0 ? ` waiting ${waitUs} µs per layer (subtracted)` : ''}, scheduler-driven decode steps (fast quartile of ${steps}, best of ${nRounds} rounds); ` +
      `${os.cpus().length} CPUs, load average ${os.loadavg().map((l) => l.toFixed(1)).join(' ')}; coordinator dense ${gbps.toFixed(2)} GB/s`);
    console.log('layers  context  rows   step ms  engine ms  weights ms  residual ms  fit ms  residual per row per layer µs');
    for (const p of points) {
      console.log(`${String(p.layers).padStart(6)}  ${String(p.context).padStart(7)}  ${String(p.rows).padStart(4)}  ${(p.stepUs / 1000).toFixed(2).padStart(8)}  ` +
        `${(p.engineUs / 1000).toFixed(2).padStart(9)}  ${(p.weightsUs / 1000).toFixed(2).padStart(10)}  ${(p.residualUs / 1000).toFixed(2).padStart(11)}  ` +
        `${(p.fitUs! / 1000).toFixed(2).padStart(6)}  ${(p.residualUs / (p.rows * p.layers)).toFixed(0).padStart(8)}`);
    }
    const c = calibration.constants;
    console.log(`fit: per step ${c.coordinatorStepUs} µs + ${c.coordinatorRowUs} µs per row; per layer ${c.coordinatorLayerUs} µs + ${c.coordinatorRowLayerUs} µs per row` +
      `${out ? `; written to ${out}` : ''}`);
  }
  console.log(JSON.stringify({ bench: 'coordinator-cost', started, shape, expert_wait_us: waitUs, loadavg: os.loadavg(), points, calibration }));
}

if (require.main === module) {
  main().catch((e) => {
    process.stderr.write(`${e instanceof UserError ? e.message : e instanceof Error ? e.stack : String(e)}\n`);
    process.exitCode = 1;
  });
}
