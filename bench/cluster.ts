// Decode speed with experts in process vs on expert-node processes, over loopback gRPC or through an
// emulated link (bench/link-emulator.ts: a TCP proxy per node that delays and paces every chunk), at
// 1 or more concurrent requests through the continuous-batching scheduler. Reports tokens/s of local
// and of cluster:N, the per-layer round-trip overhead of the cluster (a layer's expert time minus the
// slowest node's compute), bytes per token per layer for each wire, the same bytes through a bare
// grpc-js bidirectional-stream echo and a raw TCP echo over the same link in the same window (our
// overhead as a ratio to each: bench/echo-baselines.ts), and the network floor of a step (layers x RTT
// + bytes / bandwidth) next to the measured step time.
// Models (random weights, written once under the temp dir):
//   --shape mixtral  hidden 4096, intermediate 14336, 8 experts top-2, predictor rank 1024 (default 2 layers)
//   --shape demo     hidden 1024, intermediate 3584, 8 experts top-2, predictor rank 256 (default 16 layers)
//   node dist/bench/cluster.js [--shape mixtral|demo] [--layers N] [--model DIR] [--tokens 16] [--nodes 2,4]
//        [--link loopback|10gbe|1gbe|wifi|DELAY_US:MBIT[,...]] [--concurrency 1,8,16] [--wire f32,bf16,...]
//        [--echo-rounds 200] [--device cpu] [--replicas 1] [--hedge on|off] [--overlap off,on]
//        [--transport socket,grpc] [--rounds 1] [--node-threads 0] [--machine-cpus 0] [--json]
// --node-threads: CPU threads per expert node (0: the cores shared evenly between the nodes, as LocalCluster does;
// with --machine-cpus N, N).
// --machine-cpus N: each process on its own N CPUs, as if on its own machine (bench/machines.ts); needs
// N x (1 + nodes) CPUs, plus one for the link emulator. Without it every process shares every core.
// --transport: how node calls travel (coordinator/expert-client.ts RunTransport: the run socket or grpc-js's Run
// stream), each listed one in turn on the same nodes; --rounds repeats the wire x transport runs, alternating, so
// a before/after of the two transports is measured in one window.
// --overlap: the cluster runs with each listed mode (engine overlap: two pipelined micro-batches per
// step; `auto` measures both ways per batch size and keeps the faster), in the same window; local runs without.
// --wire defaults to every encoding for the first node count and f32 for the others. Requests of
// `--tokens` tokens each (8-token prompts), submitted at once; timed until the last one finishes.
import os from 'node:os';
import path from 'node:path';
import type { ExpertBackend, ExpertBatch, ExpertNodeHealth, ExpertOutput, StepContext } from '../core/expert-backend';
import { Registry } from '../core/metrics';
import type { Device } from '../core/native';
import type { ShardMap } from '../core/shard-map';
import { TextTokenizer } from '../core/tokenizer';
import { UserError } from '../core/errors';
import { WIRE_ENCODINGS, type WireEncoding } from '../core/wire/rows';
import type { Engine, OverlapMode } from '../coordinator/engine';
import { loadEngine } from '../coordinator/load-engine';
import { LocalCluster } from '../coordinator/local-cluster';
import { LocalExperts } from '../coordinator/local-experts';
import { RUN_TRANSPORTS, type RunTransport } from '../coordinator/expert-client';
import { RemoteExperts } from '../coordinator/remote-experts';
import { GREEDY } from '../coordinator/sampler';
import { Scheduler } from '../coordinator/scheduler';
import { EchoServer, grpcEcho, tcpEcho, type EchoResult, type EchoSize } from './echo-baselines';
import { benchModelDir } from './bench-shapes';
import { arg } from './models';
import { LinkProcess, describeLink, parseLink, type LatenessStats } from './link-emulator';
import { Machines } from './machines';

const log = (line: string) => process.stderr.write(`${line}\n`);

/** Layers when --layers is not given, per --shape. */
const DEFAULT_LAYERS: Record<string, number> = { mixtral: 2, demo: 16 };

/** "step:layer", plus ":micro-batch" when the engine overlaps two micro-batches per step (each is its own call). */
function callKey(stepId: number | undefined, layer: number, from: object | undefined): string {
  const mb = (from as { microBatch?: number } | undefined)?.microBatch;
  return mb === undefined ? `${stepId}:${layer}` : `${stepId}:${layer}:${mb}`;
}

/** The engine's expert backend, swapped between runs so the coordinator's weights load once; times every layer. */
class TimedExperts implements ExpertBackend {
  readonly name = 'bench';
  current: ExpertBackend | null = null;
  /** Wall time of each runExperts call (one per layer per step or micro-batch), microseconds, keyed by callKey. */
  layerUs = new Map<string, number>();
  /** Remote experts' per-node stats (so the engine's `--overlap auto` sees a remote backend). */
  stats(): ExpertNodeHealth[] {
    return this.current?.stats?.() ?? [];
  }
  async runExperts(batch: ExpertBatch, ctx?: StepContext): Promise<ExpertOutput> {
    const t0 = process.hrtime.bigint();
    const out = await this.current!.runExperts(batch, ctx);
    this.layerUs.set(callKey(ctx?.stepId, batch.layer, ctx), Number(process.hrtime.bigint() - t0) / 1000);
    return out;
  }
  async close(): Promise<void> {
    await this.current?.close();
  }
}

interface Run {
  tokensPerS: number;
  steps: number;
  seconds: number;
}

/**
 * `c` requests of `tokens` tokens each, distinct prompts, submitted at once through the scheduler
 * (as bench/serving.ts); a warm-up round of 2 tokens each first, then `onTimed`, then the timed round.
 */
async function measure(engine: Engine, tok: TextTokenizer, c: number, tokens: number, onTimed: () => void = () => undefined): Promise<Run> {
  const scheduler = new Scheduler(engine, tok, { metrics: new Registry(), kvBudgetBytes: 2 ** 40, maxRunning: 1024 });
  const v = engine.config.vocabSize;
  const prompt = (i: number) => [1, 10 + (i % 200), 20 + ((i * 7) % 200), 30, 40, 50, 60, 70].map((id) => id % v);
  const req = (i: number, n: number) => ({ promptIds: prompt(i), sampling: GREEDY, maxTokens: n, stopIds: [] });
  try {
    await Promise.all(scheduler.submitAll(Array.from({ length: c }, (_, i) => req(i, 2))).map((h) => h.result));
    let steps = 0;
    scheduler.onStep = () => void steps++;
    onTimed();
    const t0 = performance.now();
    const results = await Promise.all(scheduler.submitAll(Array.from({ length: c }, (_, i) => req(i + 1000, tokens))).map((h) => h.result));
    const seconds = (performance.now() - t0) / 1000;
    const total = results.reduce((s, r) => s + r.tokenIds.length, 0);
    return { tokensPerS: total / seconds, steps, seconds };
  } finally {
    await scheduler.close();
  }
}

/** The transport the first remote node's calls took (every node of one run takes the same here). */
function via0(remote: RemoteExperts): 'socket' | 'grpc' {
  const t = remote.nodeList().find((x) => x.transport !== 'local')?.transport;
  return t === 'socket' ? 'socket' : 'grpc';
}

function pct(sorted: number[], q: number): number {
  return sorted.length ? sorted[Math.min(sorted.length - 1, Math.ceil(q * sorted.length) - 1)] : 0;
}

interface ModeResult {
  mode: string;
  link: string;
  wire?: WireEncoding;
  /** cluster only: the engine's overlap mode (two pipelined micro-batches per step). */
  overlap?: OverlapMode;
  /** cluster only: how node calls travelled (the run socket or gRPC). */
  transport?: 'socket' | 'grpc';
  /** cluster only: which of --rounds. */
  round?: number;
  concurrency: number;
  tokens_per_s: number;
  /** cluster only: tokens/s over local's at the same concurrency. */
  vs_local?: number;
  /** Mean wall time of a scheduler step (every running sequence's next token), ms. */
  step_ms: number;
  layer_us_mean: number;
  /** cluster only: a layer's wall time minus its slowest node call's compute time. */
  overhead_us_mean?: number;
  overhead_us_p50?: number;
  overhead_us_p99?: number;
  bytes_sent_per_token_layer?: number;
  bytes_received_per_token_layer?: number;
  /** Mean bytes of one node call, per node (what the echoes send). */
  call_bytes?: EchoSize[];
  grpc_echo?: EchoResult;
  tcp_echo?: EchoResult;
  /** overhead_us_p50 / the echo's p50 round, same bytes, same link. */
  overhead_vs_grpc_echo?: number;
  overhead_vs_tcp_echo?: number;
  /** Network floor of a step: layers x 2 x one-way delay + (bytes out + back) / bandwidth, ms (0 on loopback). */
  floor_step_ms?: number;
  /** step_ms / (floor_step_ms + local step_ms at the same concurrency). */
  vs_floor_plus_local?: number;
  /** How late the emulator released chunks against their due times during the timed run. */
  link_lateness?: LatenessStats;
}

async function main(): Promise<void> {
  const shape = arg('shape', 'mixtral');
  const layers = Number(arg('layers', String(DEFAULT_LAYERS[shape] ?? 2)));
  const tokens = Number(arg('tokens', '16'));
  const nodeCounts = arg('nodes', '2,4').split(',').map(Number);
  const device = arg('device', 'cpu') as Device;
  const json = process.argv.includes('--json');
  const replicas = Number(arg('replicas', '1'));
  const hedge = arg('hedge', 'on') === 'on';
  const overlaps = arg('overlap', 'auto').split(',').map((o) => {
    const v = o.trim();
    if (v !== 'auto' && v !== 'on' && v !== 'off') throw new UserError(`--overlap ${o}: use auto, on, off or a list such as off,on,auto`);
    return v as OverlapMode;
  });
  const transports = arg('transport', 'auto').split(',').map((t) => {
    const v = t.trim();
    if (!(RUN_TRANSPORTS as readonly string[]).includes(v)) throw new UserError(`--transport ${t}: use ${RUN_TRANSPORTS.join(', ')} or a list such as socket,grpc`);
    return v as RunTransport;
  });
  const rounds = Number(arg('rounds', '1'));
  const links = arg('link', 'loopback').split(',').map((t) => ({ label: t.trim(), spec: parseLink(t) }));
  const machines = Machines.fromArgs(Math.max(...nodeCounts), links.some((l) => l.spec !== null));
  const nodeThreads = Number(arg('node-threads', '0')) || (machines?.perMachine ?? 0);
  const levels = arg('concurrency', '1').split(',').map(Number);
  const wireArg = arg('wire', '');
  const wires = wireArg ? wireArg.split(',').map((w) => w.trim() as WireEncoding) : null;
  for (const w of wires ?? []) if (!WIRE_ENCODINGS.includes(w)) throw new UserError(`--wire "${w}": expected ${WIRE_ENCODINGS.join(', ')}`);
  const echoRounds = Number(arg('echo-rounds', '200'));
  for (const [name, v] of [['layers', layers], ['tokens', tokens], ['echo-rounds', echoRounds], ['rounds', rounds], ...levels.map((c) => ['concurrency', c] as const), ...nodeCounts.map((n) => ['nodes', n] as const)] as const) {
    if (!Number.isInteger(v) || v < 1) throw new UserError(`--${name} must be a positive integer, got ${v}`);
  }
  const dir = arg('model', '') || await benchModelDir(shape, layers, log);
  machines?.pinSelf();
  // From sources (node -r test/cluster/ts-register-cached.js bench/cluster.ts) the nodes run from sources too.
  const nodeCommand = __filename.endsWith('.ts')
    ? [process.execPath, '-r', path.resolve(__dirname, '..', 'test', 'cluster', 'ts-register-cached.js'), path.resolve(__dirname, '..', 'cli', 'expert-node.ts')]
    : undefined;

  const timed = new TimedExperts();
  const engine = await loadEngine({ modelDir: dir, device, log, experts: { kind: 'file', path: 'bench' }, remoteExperts: async () => timed });
  const tok = TextTokenizer.fromModel(engine.folder);
  const c = engine.config;
  const dims = { hiddenSize: c.hiddenSize, intermediateSize: c.intermediateSize, numLayers: c.numLayers, numExperts: c.numExperts };
  const results: ModeResult[] = [];
  const description = engine.backend.description;
  const layerMean = () => [...timed.layerUs.values()].reduce((a, b) => a + b, 0) / Math.max(1, timed.layerUs.size);
  const linkProcs = new Map<string, LinkProcess>();
  let echo: EchoServer | null = null;
  try {
    // ---- local ----
    log('local: loading every expert in process');
    timed.current = await LocalExperts.load(engine.folder, engine.backend, { store: 'auto', mode: 'sparse' });
    engine.overlap = 'off';
    const localStepMs = new Map<number, number>();
    for (const conc of levels) {
      const run = await measure(engine, tok, conc, tokens, () => timed.layerUs.clear());
      localStepMs.set(conc, (run.seconds * 1000) / run.steps);
      results.push({ mode: 'local', link: '-', concurrency: conc, tokens_per_s: run.tokensPerS, step_ms: (run.seconds * 1000) / run.steps, layer_us_mean: layerMean() });
    }
    await timed.current.close();
    timed.current = null;

    echo = await EchoServer.start();
    machines?.pinEcho(echo.pid);
    for (const l of links) {
      if (!l.spec) continue;
      const proc = await LinkProcess.start(l.spec);
      linkProcs.set(l.label, proc);
      machines?.pinLink(proc.pid);
    }

    // ---- clusters ----
    for (const n of nodeCounts) {
      log(`cluster:${n}: starting ${n} expert nodes`);
      const cluster = await LocalCluster.start({ modelDir: dir, dims, nodes: n, replicas: Math.min(replicas, n), device, threads: nodeThreads, nodeCommand, log });
      try {
        machines?.pinNodes(cluster.nodes.map((node) => node.pid));
        for (const l of links) {
          const proc = linkProcs.get(l.label) ?? null;
          const via = async (address: string) => (proc ? proc.proxy(address) : address);
          const shardMap: ShardMap = { nodes: await Promise.all(cluster.shardMap.nodes.map(async (node) => ({ ...node, address: await via(node.address) }))) };
          const echoGrpc = await Promise.all(cluster.nodes.map(() => via(echo!.grpcAddress)));
          const echoTcp = await Promise.all(cluster.nodes.map(() => via(echo!.tcpAddress)));
          for (let round = 1; round <= rounds; round++) for (const wire of wires ?? (n === nodeCounts[0] ? WIRE_ENCODINGS : (['f32'] as const))) for (const transport of transports) {
            // compute per (step, layer): the slowest node call, to separate transport from kernels.
            const computeUs = new Map<string, number>();
            const remote = await RemoteExperts.connect({
              shardMap, model: dims, wire, hedge, name: `cluster:${n}`, transport,
              observers: [{ onCallEnd: (call, r) => {
                const key = callKey(call.stepId, call.layer, call);
                computeUs.set(key, Math.max(computeUs.get(key) ?? 0, r.computeUs + r.queueUs));
              } }],
            });
            timed.current = remote;
            try {
              for (const overlap of overlaps) for (const conc of levels) {
                engine.overlap = overlap;
                log(`cluster:${n} link ${l.label} wire ${wire} transport ${via0(remote)} overlap ${overlap} concurrency ${conc}${rounds > 1 ? ` round ${round}` : ''}`);
                let linkReset: Promise<void> = Promise.resolve();
                const run = await measure(engine, tok, conc, tokens, () => {
                  remote.resetStats();
                  timed.layerUs.clear();
                  computeUs.clear();
                  if (proc) linkReset = proc.resetStats();
                });
                await linkReset;
                const linkLateness = proc ? await proc.stats() : undefined;
                const overhead = [...timed.layerUs].map(([k, us]) => us - (computeUs.get(k) ?? 0)).sort((a, b) => a - b);
                const stats = remote.stats();
                const sent = stats.reduce((s, x) => s + x.bytesSent, 0);
                const received = stats.reduce((s, x) => s + x.bytesReceived, 0);
                const generated = run.tokensPerS * run.seconds;
                const stepMs = (run.seconds * 1000) / run.steps;
                const r: ModeResult = {
                  mode: `cluster:${n}`, link: l.label, wire, overlap, transport: via0(remote), ...(rounds > 1 ? { round } : {}), concurrency: conc, tokens_per_s: run.tokensPerS,
                  vs_local: run.tokensPerS / results.find((x) => x.mode === 'local' && x.concurrency === conc)!.tokens_per_s,
                  step_ms: stepMs, layer_us_mean: layerMean(),
                  overhead_us_mean: overhead.reduce((a, b) => a + b, 0) / Math.max(1, overhead.length),
                  overhead_us_p50: pct(overhead, 0.5), overhead_us_p99: pct(overhead, 0.99),
                  bytes_sent_per_token_layer: sent / (generated * c.numLayers),
                  bytes_received_per_token_layer: received / (generated * c.numLayers),
                };
                if (l.spec) {
                  const bytesPerStep = (sent + received) / run.steps;
                  r.floor_step_ms = (c.numLayers * 2 * l.spec.delayUs) / 1000 + (bytesPerStep * 8) / (l.spec.mbit * 1e3);
                  r.vs_floor_plus_local = stepMs / (r.floor_step_ms + localStepMs.get(conc)!);
                  r.link_lateness = linkLateness;
                }
                // The echoes: each node's mean call, through the same link, right after the run.
                const used = stats.map((s, i) => ({ i, s })).filter(({ s }) => s.calls > 0);
                if (used.length > 0) {
                  r.call_bytes = used.map(({ s }) => ({ out: Math.round(s.bytesSent / s.calls), back: Math.round(s.bytesReceived / s.calls) }));
                  r.grpc_echo = await grpcEcho(used.map(({ i }) => echoGrpc[i]), r.call_bytes, echoRounds);
                  r.tcp_echo = await tcpEcho(used.map(({ i }) => echoTcp[i]), r.call_bytes, echoRounds);
                  r.overhead_vs_grpc_echo = r.overhead_us_p50! / r.grpc_echo.p50_us;
                  r.overhead_vs_tcp_echo = r.overhead_us_p50! / r.tcp_echo.p50_us;
                }
                results.push(r);
              }
            } finally {
              await remote.close();
              timed.current = null;
            }
          }
        }
      } finally {
        await cluster.stop();
      }
    }
  } finally {
    await engine.close();
    await echo?.close();
    for (const p of linkProcs.values()) await p.close();
  }

  if (!json) {
    console.log(`decode, ${c.numLayers} layer(s) at hidden ${c.hiddenSize} x intermediate ${c.intermediateSize}, ${c.numExperts} experts top-${c.topK}, ` +
      `${description}, ${os.cpus().length} CPUs, ${tokens} tokens per request, ${replicas} replica(s), hedge ${hedge ? 'on' : 'off'}`);
    console.log(`links: ${links.map((l) => describeLink(l.spec)).join('; ')}`);
    console.log(machines ? `machines: ${machines.describe()}` : 'machines: every process shares every CPU (--machine-cpus N pins each to its own)');
    console.log('mode        link      wire  tr      ovl   conc  tokens/s  vs local  step ms  floor ms  vs floor+local  layer ms  overhead us (mean/p50/p99)' +
      '  grpc echo p50  tcp echo p50  x grpc  x tcp  B/token/layer sent   recv');
    const f = (v: number | undefined, d: number, w: number) => (v === undefined ? '-' : v.toFixed(d)).padStart(w);
    for (const r of results) {
      const o = r.overhead_us_mean === undefined ? '-'
        : `${r.overhead_us_mean.toFixed(0)}/${r.overhead_us_p50!.toFixed(0)}/${r.overhead_us_p99!.toFixed(0)}`;
      console.log(`${r.mode.padEnd(10)}  ${r.link.padEnd(8)}  ${(r.wire ?? '-').padEnd(4)}  ${(r.transport ?? '-').padEnd(6)}  ${(r.overlap ?? '-').padEnd(4)}  ${String(r.concurrency).padStart(4)}  ` +
        `${f(r.tokens_per_s, 2, 8)}  ${f(r.vs_local, 2, 8)}  ${f(r.step_ms, 2, 7)}  ${f(r.floor_step_ms, 2, 8)}  ${f(r.vs_floor_plus_local, 2, 14)}  ` +
        `${f(r.layer_us_mean / 1000, 2, 8)}  ${o.padStart(26)}  ${f(r.grpc_echo?.p50_us, 0, 13)}  ${f(r.tcp_echo?.p50_us, 0, 12)}  ` +
        `${f(r.overhead_vs_grpc_echo, 2, 6)}  ${f(r.overhead_vs_tcp_echo, 2, 5)}  ${f(r.bytes_sent_per_token_layer, 0, 18)}  ${f(r.bytes_received_per_token_layer, 0, 5)}`);
    }
    for (const r of results) {
      if (r.link_lateness) {
        const s = r.link_lateness;
        console.log(`emulator ${r.mode} ${r.link} ${r.wire} overlap ${r.overlap} c${r.concurrency}: ${s.chunks} chunks released late by mean ${s.mean_us.toFixed(0)} / p50 ${s.p50_us.toFixed(0)} / p99 ${s.p99_us.toFixed(0)} us; ` +
          `the emulator used ${(s.cpu_ms / s.window_ms * 100).toFixed(0)}% of one core`);
      }
    }
  }
  console.log(JSON.stringify({ bench: 'cluster', layers: c.numLayers, hidden: c.hiddenSize, intermediate: c.intermediateSize, experts: c.numExperts, tokens, replicas, hedge,
    links: links.map((l) => ({ name: l.label, delay_us: l.spec?.delayUs ?? 0, mbit: l.spec?.mbit ?? null })),
    cpus: os.cpus().length, machine_cpus: machines?.perMachine ?? null, device: description, results }));
}

main().catch((e) => {
  process.stderr.write(`${e instanceof UserError ? e.message : e instanceof Error ? e.stack : e}\n`);
  process.exitCode = 1;
});
