// The capacity planner (`turbosparse plan`, core/placement/cost-model.ts) against bench/cluster.ts on this
// machine: measures this machine's kernels (the nodes.yaml a user would write for it), runs bench/cluster
// over the emulated links, runs the planner for the same configurations, and prints predicted vs measured
// tokens/s and their ratio, as a table and one JSON line.
//
// This machine: the coordinator, the expert nodes and the link emulator share its cores, so the nodes'
// GB/s are measured the way they run (bench/cluster's LocalCluster gives each of N nodes cores/N threads),
// and the coordinator's GB/s with every core (its kernels run while the nodes wait). Other work on the
// machine slows both sides by 3-10x from minute to minute, so the bench runs --rounds times and each
// configuration keeps its best round, and the machine figures are their best measurement (before each
// round): both sides describe the machine with as little of the neighbours' load as the runs saw.
//
// The bench times whole requests: each sequence's 8-token prompt is one prefill step, then tokens-1 decode
// steps. The planner predicts decode steps; the "bench workload" prediction adds one step of c x 8 rows
// (the same cost model, more rows) so like is compared with like. Both are printed.
//   node -r ./test/cluster/ts-register-cached.js bench/plan-vs-measured.ts [--shape demo] [--layers 16]
//        [--tokens 32] [--link loopback,1gbe] [--concurrency 1,16] [--rounds 3] [--reps 40] [--calibration FILE] [--json]
// --calibration FILE (bench/coordinator-cost.ts --out): the planner uses that file's coordinator costs and
// coordinator GB/s (they were fitted together) instead of the built-in constants and the GB/s measured here.
import { execFile } from 'node:child_process';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { promisify } from 'node:util';
import { makePlan, type Plan } from '../cli/plan';
import { readModelConfig } from '../core/model-folder';
import { maskBytes, native } from '../core/native';
import { benchModelDir, randomBf16 } from './bench-shapes';
import { measureCoordinatorGbps } from './coordinator-cost';
import { arg } from './models';

const log = (line: string) => process.stderr.write(`${line}\n`);
const PROMPT_TOKENS = 8;
const NODES = 2;

/** The fastest quartile's boundary of rates: the kernel's speed with as little of the neighbours' load as the run saw. */
function fastQuartileRate(xs: number[]): number {
  const s = [...xs].sort((a, b) => b - a);
  return s[Math.floor(s.length / 4)];
}

interface Machine {
  /** Sparse-FFN weight bytes read per second by one node's kernels (threads = cores / nodes). */
  nodeGbps: number;
  /** Dense weight bytes read per second by the coordinator's kernels (every core), one row. */
  coordinatorGbps: number;
}

/** Weights the measurement streams through: well past the last-level cache, as a model's weights are. */
const STREAM_BYTES = 320 << 20;

/**
 * The node figure: experts of the model's shape, one row per call with a fresh mask of the model's active
 * fraction, each call on the next expert (the set is larger than the caches: a node reads its experts from
 * memory, and one expert's active neurons alone would fit in L3), the fastest quartile of `reps` calls;
 * bytes = active neurons x 3 rows of H (what the sparse kernel reads).
 * The coordinator figure: bench/coordinator-cost's measureCoordinatorGbps (one row through [4H, H] matrices).
 */
async function measureMachine(H: number, I: number, activeFraction: number, reps: number): Promise<Machine> {
  const nodeThreads = Math.max(1, Math.floor(os.availableParallelism() / NODES));
  const nb = native().createBackend('cpu', nodeThreads);
  let nodeGbps: number;
  try {
    const count = Math.max(2, Math.ceil(STREAM_BYTES / (3 * H * I * 2)));
    const experts = [];
    for (let e = 0; e < count; e++) experts.push(await nb.createExpert(randomBf16(I, H, 3 * e + 1), randomBf16(I, H, 3 * e + 2), randomBf16(H, I, 3 * e + 3), 'bf16'));
    const rb = maskBytes(I);
    let seed = 12345;
    const masks = Array.from({ length: 16 }, () => {
      const m = new Uint8Array(rb);
      let active = 0;
      for (let j = 0; j < I; j++) {
        seed = (Math.imul(seed, 1103515245) + 12345) >>> 0;
        if ((seed >>> 8) / 2 ** 24 < activeFraction) {
          m[j >> 3] |= 1 << (j & 7);
          active++;
        }
      }
      return { m, active };
    });
    const x = Float32Array.from({ length: H }, (_, i) => Math.sin(i));
    const y = new Float32Array(H);
    const perSecond: number[] = [];
    for (let r = 0; r < reps + 3; r++) {
      const mask = masks[r % masks.length];
      const call = [{ expert: experts[r % count], rows: Int32Array.of(0), weight: Float32Array.of(1), masks: mask.m }];
      const t0 = performance.now();
      await nb.moe('sparse', 1, H, x, call, y, null);
      if (r >= 3) perSecond.push((mask.active * 3 * H * 2) / ((performance.now() - t0) / 1000));
    }
    nodeGbps = fastQuartileRate(perSecond) / 1e9;
  } finally {
    nb.close();
  }
  return { nodeGbps, coordinatorGbps: await measureCoordinatorGbps(H, reps) };
}

interface BenchResult {
  mode: string;
  link: string;
  concurrency: number;
  tokens_per_s: number;
  step_ms: number;
  layer_us_mean: number;
  overhead_us_mean?: number;
}

async function runBench(args: string[]): Promise<{ results: BenchResult[] }> {
  const fromSources = __filename.endsWith('.ts');
  const cmd = fromSources
    ? [process.execPath, '-r', path.resolve(__dirname, '..', 'test', 'cluster', 'ts-register-cached.js'), path.resolve(__dirname, 'cluster.ts')]
    : [process.execPath, path.resolve(__dirname, 'cluster.js')];
  log(`running ${['bench/cluster', ...args].join(' ')}`);
  const { stdout } = await promisify(execFile)(cmd[0], [...cmd.slice(1), ...args], { maxBuffer: 64 << 20, timeout: 15 * 60_000 });
  const line = stdout.trim().split('\n').filter((l) => l.startsWith('{')).pop();
  if (!line) throw new Error('bench/cluster printed no JSON line');
  return JSON.parse(line) as { results: BenchResult[] };
}

interface Row {
  link: string;
  concurrency: number;
  measured_tokens_per_s: number;
  measured_step_ms: number;
  /** tokens/s of every round (the best is measured_tokens_per_s). */
  measured_rounds: number[];
  /** The best round's step split as bench/cluster sees it (per step, prefill step included in the mean): the
   * coordinator = step - layers x expert call; overhead = a layer's call minus the slowest node's queue + compute. */
  measured_coordinator_ms: number;
  measured_overhead_ms: number;
  measured_expert_ms: number;
  /** The bench's workload: one prefill step of c x 8 rows, then tokens-1 decode steps. */
  predicted_tokens_per_s: number;
  /** What `turbosparse plan` prints: decode steps only. */
  predicted_decode_tokens_per_s: number;
  predicted_step_ms: number;
  coordinator_ms: number;
  link_ms: number;
  call_overhead_ms: number;
  expert_ms: number;
  ratio: number;
  /** The same prediction with the built-in constants and this machine's GB/s (= ratio without --calibration). */
  ratio_builtin: number;
}

async function main(): Promise<void> {
  const shape = arg('shape', 'demo');
  const layers = Number(arg('layers', '16'));
  const tokens = Number(arg('tokens', '32'));
  const links = arg('link', 'loopback,1gbe');
  const levels = arg('concurrency', '1,16').split(',').map(Number);
  const reps = Number(arg('reps', '40'));
  const nRounds = Number(arg('rounds', '3'));
  const json = process.argv.includes('--json');
  const calibration = arg('calibration', '') || undefined;
  const dir = await benchModelDir(shape, layers, log);
  const config = await readModelConfig(dir);
  const rawConfig = JSON.parse(fs.readFileSync(path.join(dir, 'config.json'), 'utf8')) as { demo?: { active_fraction?: number } };
  const activeFraction = rawConfig.demo?.active_fraction ?? 0.15;

  // Rounds: the machine is shared, so each configuration keeps its best round (the run least slowed by
  // other work) and the machine figures their best measurement; every round's figures are printed.
  const measurements: Machine[] = [];
  const rounds: BenchResult[][] = [];
  const started = new Date().toISOString();
  for (let round = 0; round < nRounds; round++) {
    log(`round ${round + 1} of ${nRounds}: measuring this machine`);
    const m = await measureMachine(config.hiddenSize, config.intermediateSize, activeFraction, reps);
    log(`  node sparse FFN ${m.nodeGbps.toFixed(2)} GB/s, coordinator dense ${m.coordinatorGbps.toFixed(2)} GB/s`);
    measurements.push(m);
    const bench = await runBench(['--shape', shape, '--layers', String(layers), '--tokens', String(tokens), '--nodes', String(NODES),
      '--link', links, '--concurrency', levels.join(','), '--wire', 'f32', '--overlap', 'off', '--echo-rounds', '20', '--json']);
    rounds.push(bench.results.filter((x) => x.mode === `cluster:${NODES}`));
  }
  const machine: Machine = {
    nodeGbps: Math.max(...measurements.map((m) => m.nodeGbps)),
    coordinatorGbps: Math.max(...measurements.map((m) => m.coordinatorGbps)),
  };

  // The nodes.yaml of this machine's nodes (addresses are the shard map's keys; the bench's ports are random).
  const tmp = fs.mkdtempSync(path.join(os.tmpdir(), 'plan-vs-measured-'));
  const nodesFile = path.join(tmp, 'nodes.yaml');
  const memGib = Math.floor(os.totalmem() / NODES / 2 ** 30);
  fs.writeFileSync(nodesFile, `nodes:\n${Array.from({ length: NODES }, (_, i) =>
    `  - name: node${i}\n    address: 127.0.0.1:${50051 + i}\n    memory_gib: ${memGib}\n    device: cpu\n    gbps: ${machine.nodeGbps.toFixed(3)}\n`).join('')}`);

  const rows: Row[] = [];
  try {
    for (const r0 of rounds[0]) {
      const same = rounds.map((rs) => rs.find((x) => x.link === r0.link && x.concurrency === r0.concurrency)!);
      const r = same.reduce((a, b) => (b.tokens_per_s > a.tokens_per_s ? b : a));
      const c = r.concurrency;
      // The bench's workload as the planner sees it, with the calibration file or the built-in constants.
      const predict = async (cal: string | undefined) => {
        const plan: Plan = await makePlan({
          model: dir, nodesFile, link: r.link, weights: 'auto', concurrency: [c, c * PROMPT_TOKENS], wire: 'f32', replicas: 1,
          coordinatorGbps: cal ? undefined : machine.coordinatorGbps, coordinatorDevice: 'cpu', calibration: cal, context: PROMPT_TOKENS + Math.round(tokens / 2),
        });
        const [decode, prefill] = plan.predictions;
        const benchMs = prefill.stepMs + (tokens - 1) * decode.stepMs;
        return { decode, benchMs, predicted: (c * tokens) / (benchMs / 1000) };
      };
      const { decode, benchMs, predicted } = await predict(calibration);
      const builtin = calibration ? (await predict(undefined)).predicted : predicted;
      rows.push({
        link: r.link, concurrency: c, measured_tokens_per_s: r.tokens_per_s, measured_step_ms: r.step_ms,
        predicted_tokens_per_s: predicted, predicted_decode_tokens_per_s: decode.tokensPerS, predicted_step_ms: benchMs / tokens,
        measured_rounds: same.map((x) => x.tokens_per_s),
        measured_coordinator_ms: r.step_ms - (layers * r.layer_us_mean) / 1000,
        measured_overhead_ms: (layers * (r.overhead_us_mean ?? 0)) / 1000,
        measured_expert_ms: (layers * (r.layer_us_mean - (r.overhead_us_mean ?? 0))) / 1000,
        coordinator_ms: decode.coordinatorMs, link_ms: decode.linkMs, call_overhead_ms: decode.callOverheadMs, expert_ms: decode.expertMs,
        ratio: predicted / r.tokens_per_s,
        ratio_builtin: builtin / r.tokens_per_s,
      });
    }
  } finally {
    fs.rmSync(tmp, { recursive: true, force: true });
  }

  if (!json) {
    console.log(`plan vs measured: ${shape} shape, ${layers} layers, cluster:${NODES}, wire f32, overlap off, ${tokens} tokens per request; ` +
      `${os.cpus().length} CPUs (${os.cpus()[0]?.model ?? '?'}), load average ${os.loadavg().map((l) => l.toFixed(1)).join(' ')}`);
    console.log(`machine per round: node sparse FFN ${measurements.map((m) => m.nodeGbps.toFixed(2)).join(', ')} GB/s (used ${machine.nodeGbps.toFixed(2)}), ` +
      `coordinator dense ${measurements.map((m) => m.coordinatorGbps.toFixed(2)).join(', ')} GB/s (used ${calibration ? `the calibration's, from ${calibration}` : machine.coordinatorGbps.toFixed(2)})`);
    console.log('link      conc  measured tok/s (rounds)     best  predicted tok/s  ratio  | plan (decode only): tok/s  coordinator ms  link ms  overhead ms  experts ms' +
      '  | measured per step: coordinator ms  link + overhead ms  experts ms');
    for (const r of rows) {
      console.log(`${r.link.padEnd(8)}  ${String(r.concurrency).padStart(4)}  ${r.measured_rounds.map((x) => x.toFixed(1)).join(' / ').padEnd(24)} ${r.measured_tokens_per_s.toFixed(2).padStart(6)}  ` +
        `${r.predicted_tokens_per_s.toFixed(2).padStart(15)}  ${r.ratio.toFixed(2).padStart(5)}  | ${r.predicted_decode_tokens_per_s.toFixed(2).padStart(24)}  ` +
        `${r.coordinator_ms.toFixed(1).padStart(14)}  ${r.link_ms.toFixed(1).padStart(7)}  ${r.call_overhead_ms.toFixed(1).padStart(11)}  ${r.expert_ms.toFixed(1).padStart(10)}` +
        `  | ${r.measured_coordinator_ms.toFixed(1).padStart(32)}  ${r.measured_overhead_ms.toFixed(1).padStart(17)}  ${r.measured_expert_ms.toFixed(1).padStart(10)}`);
    }
    const within = rows.filter((r) => Math.abs(r.ratio - 1) <= 0.25).length;
    console.log(`${within} of ${rows.length} configurations within 25%` + (calibration
      ? `; with the built-in constants instead: ratios ${rows.map((r) => r.ratio_builtin.toFixed(2)).join(', ')}, ` +
        `${rows.filter((r) => Math.abs(r.ratio_builtin - 1) <= 0.25).length} within 25%`
      : ''));
  }
  console.log(JSON.stringify({ bench: 'plan-vs-measured', started, shape, layers, tokens, nodes: NODES, cpus: os.cpus().length,
    loadavg: os.loadavg(), rounds: nRounds, calibration: calibration ? JSON.parse(fs.readFileSync(calibration, 'utf8')) as unknown : null, machine_rounds: measurements, machine, rows }));
}

main().catch((e) => {
  process.stderr.write(`${e instanceof Error ? e.stack : String(e)}\n`);
  process.exitCode = 1;
});
