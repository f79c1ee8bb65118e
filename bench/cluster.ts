// Decode speed with experts in process vs on expert-node processes over loopback
// gRPC, at Mixtral width (hidden 4096, intermediate 14336, 8 experts, top-2;
// 1-2 layers of random bf16 weights made once by this script, the same model
// bench/decode.ts uses). Reports tokens/s of local, cluster:2 and cluster:4,
// the per-layer round-trip overhead of the cluster (a layer's expert time minus
// the slowest node's compute), and bytes per token per layer for each wire.
//   node dist/bench/cluster.js [--layers 2] [--tokens 16] [--nodes 2,4] [--device cpu] [--model DIR] [--json]
//                              [--replicas 1] [--hedge on|off]   (hedging needs replicas to send to)
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import type { ExpertBackend, ExpertBatch, ExpertOutput, StepContext } from '../core/expert-backend';
import { makeDemoModel } from '../core/demo-model';
import type { Device } from '../core/native';
import { WIRE_ENCODINGS, type WireEncoding } from '../core/wire/rows';
import type { Engine } from '../coordinator/engine';
import { loadEngine } from '../coordinator/load-engine';
import { LocalCluster } from '../coordinator/local-cluster';
import { LocalExperts } from '../coordinator/local-experts';
import { RemoteExperts } from '../coordinator/remote-experts';
import { GREEDY } from '../coordinator/sampler';

function arg(name: string, def: string): string {
  const i = process.argv.indexOf(`--${name}`);
  return i >= 0 ? process.argv[i + 1] : def;
}

const log = (line: string) => process.stderr.write(`${line}\n`);

/** The engine's expert backend, swapped between runs so the coordinator's weights load once; times every layer. */
class TimedExperts implements ExpertBackend {
  readonly name = 'bench';
  current: ExpertBackend | null = null;
  /** Wall time of each runExperts call (one per layer per step), microseconds, keyed "step:layer". */
  layerUs = new Map<string, number>();
  async runExperts(batch: ExpertBatch, ctx?: StepContext): Promise<ExpertOutput> {
    const t0 = process.hrtime.bigint();
    const out = await this.current!.runExperts(batch, ctx);
    this.layerUs.set(`${ctx?.stepId}:${batch.layer}`, Number(process.hrtime.bigint() - t0) / 1000);
    return out;
  }
  async close(): Promise<void> {
    await this.current?.close();
  }
}

/**
 * Greedy decode: an untimed prefill and warm-up step, then `tokens` timed steps;
 * `onTimed` runs just before the first timed step (to reset counters). Returns tokens/s.
 */
async function decode(engine: Engine, tokens: number, onTimed: () => void = () => undefined): Promise<number> {
  // Fixed prompt ids, folded into the vocabulary of a small --model (tiny-a has 512 tokens).
  const prompt = [1, 100, 200, 300, 400, 500, 600, 700].map((id) => id % engine.config.vocabSize);
  const seq = engine.newSequence(prompt, { sampling: GREEDY, maxTokens: tokens + 2, stopIds: [] });
  await engine.step([seq]); // prefill: samples the first token
  await engine.step([seq]); // warm up
  onTimed();
  const t0 = performance.now();
  let n = 0;
  for (; !seq.finished; n++) await engine.step([seq]);
  const s = (performance.now() - t0) / 1000;
  engine.release(seq);
  return n / s;
}

function pct(sorted: number[], q: number): number {
  return sorted.length ? sorted[Math.min(sorted.length - 1, Math.ceil(q * sorted.length) - 1)] : 0;
}

interface ModeResult {
  mode: string;
  wire?: WireEncoding;
  tokens_per_s: number;
  layer_us_mean: number;
  /** cluster only: a layer's wall time minus its slowest node call's compute time. */
  overhead_us_mean?: number;
  overhead_us_p50?: number;
  overhead_us_p99?: number;
  bytes_sent_per_token_layer?: number;
  bytes_received_per_token_layer?: number;
}

async function main(): Promise<void> {
  const layers = Number(arg('layers', '2'));
  const tokens = Number(arg('tokens', '16'));
  const nodeCounts = arg('nodes', '2,4').split(',').map(Number);
  const device = arg('device', 'cpu') as Device;
  const json = process.argv.includes('--json');
  const replicas = Number(arg('replicas', '1'));
  const hedge = arg('hedge', 'on') === 'on';
  let dir = arg('model', '');
  if (!dir) {
    dir = path.join(os.tmpdir(), `turbosparse-bench-mixtral-${layers}l`);
    if (!fs.existsSync(path.join(dir, 'config.json'))) {
      log(`writing a Mixtral-width ${layers}-layer random bf16 model to ${dir} (once)`);
      await makeDemoModel(dir, {
        layers, hidden: 4096, intermediate: 14336, heads: 32, kvHeads: 8, experts: 8, topK: 2, vocab: 2048,
        predictorRank: 1024, shards: 2, dtype: 'bf16', seed: 1, activeFraction: 0.1,
      });
    }
  }
  // From sources (node -r test/cluster/ts-register-cached.js bench/cluster.ts) the nodes run from sources too.
  const nodeCommand = __filename.endsWith('.ts')
    ? [process.execPath, '-r', path.resolve(__dirname, '..', 'test', 'cluster', 'ts-register-cached.js'), path.resolve(__dirname, '..', 'cli', 'expert-node.ts')]
    : undefined;

  const timed = new TimedExperts();
  const engine = await loadEngine({ modelDir: dir, device, log, experts: { kind: 'file', path: 'bench' }, remoteExperts: async () => timed });
  const c = engine.config;
  const dims = { hiddenSize: c.hiddenSize, intermediateSize: c.intermediateSize, numLayers: c.numLayers, numExperts: c.numExperts };
  const results: ModeResult[] = [];
  const description = engine.backend.description;
  const layerMean = () => [...timed.layerUs.values()].reduce((a, b) => a + b, 0) / Math.max(1, timed.layerUs.size);
  try {
    // ---- local ----
    log('local: loading every expert in process');
    timed.current = await LocalExperts.load(engine.folder, engine.backend, { store: 'auto', mode: 'sparse' });
    results.push({ mode: 'local', tokens_per_s: await decode(engine, tokens, () => timed.layerUs.clear()), layer_us_mean: layerMean() });
    await timed.current.close();
    timed.current = null;

    // ---- clusters ----
    for (const n of nodeCounts) {
      log(`cluster:${n}: starting ${n} expert nodes`);
      const cluster = await LocalCluster.start({ modelDir: dir, dims, nodes: n, replicas: Math.min(replicas, n), device, nodeCommand, log });
      try {
        for (const wire of n === nodeCounts[0] ? WIRE_ENCODINGS : (['f32'] as const)) {
          // compute per (step, layer): the slowest node call, to separate transport from kernels.
          const computeUs = new Map<string, number>();
          const remote = await RemoteExperts.connect({
            shardMap: cluster.shardMap, model: dims, wire, hedge, name: `cluster:${n}`,
            observers: [{ onCallEnd: (call, r) => {
              const key = `${call.stepId}:${call.layer}`;
              computeUs.set(key, Math.max(computeUs.get(key) ?? 0, r.computeUs + r.queueUs));
            } }],
          });
          timed.current = remote;
          await decode(engine, 2); // open the streams, warm caches
          const tps = await decode(engine, tokens, () => {
            remote.resetStats();
            timed.layerUs.clear();
          });
          const overhead = [...timed.layerUs].map(([k, us]) => us - (computeUs.get(k) ?? 0)).sort((a, b) => a - b);
          const stats = remote.stats();
          const perTokenLayer = tokens * c.numLayers;
          results.push({
            mode: `cluster:${n}`, wire, tokens_per_s: tps, layer_us_mean: layerMean(),
            overhead_us_mean: overhead.reduce((a, b) => a + b, 0) / overhead.length,
            overhead_us_p50: pct(overhead, 0.5), overhead_us_p99: pct(overhead, 0.99),
            bytes_sent_per_token_layer: stats.reduce((s, x) => s + x.bytesSent, 0) / perTokenLayer,
            bytes_received_per_token_layer: stats.reduce((s, x) => s + x.bytesReceived, 0) / perTokenLayer,
          });
          await remote.close();
          timed.current = null;
        }
      } finally {
        await cluster.stop();
      }
    }
  } finally {
    await engine.close();
  }

  if (!json) {
    console.log(`decode, ${c.numLayers} layer(s) at hidden ${c.hiddenSize} x intermediate ${c.intermediateSize}, ${c.numExperts} experts top-${c.topK}, ` +
      `${description}, ${os.cpus().length} CPUs, ${tokens} tokens, ${replicas} replica(s), hedge ${hedge ? 'on' : 'off'}`);
    console.log('mode        wire  tokens/s  layer ms  overhead us (mean/p50/p99)  B/token/layer sent  recv');
    for (const r of results) {
      const o = r.overhead_us_mean === undefined ? '-'.padStart(26)
        : `${r.overhead_us_mean.toFixed(0)}/${r.overhead_us_p50!.toFixed(0)}/${r.overhead_us_p99!.toFixed(0)}`.padStart(26);
      const b = r.bytes_sent_per_token_layer === undefined ? `${'-'.padStart(19)}  ${'-'.padStart(5)}`
        : `${r.bytes_sent_per_token_layer.toFixed(0).padStart(19)}  ${r.bytes_received_per_token_layer!.toFixed(0).padStart(5)}`;
      console.log(`${r.mode.padEnd(10)}  ${(r.wire ?? '-').padEnd(4)}  ${r.tokens_per_s.toFixed(2).padStart(8)}  ${(r.layer_us_mean / 1000).toFixed(2).padStart(8)}  ${o}  ${b}`);
    }
  }
  console.log(JSON.stringify({ bench: 'cluster', layers: c.numLayers, hidden: c.hiddenSize, intermediate: c.intermediateSize, tokens, replicas, hedge,
    cpus: os.cpus().length, device: description, results }));
}

main().catch((e) => {
  process.stderr.write(`${e instanceof Error ? e.stack : e}\n`);
  process.exitCode = 1;
});
