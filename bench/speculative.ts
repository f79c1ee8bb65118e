// Speculative decoding (issue 15): what verifying K proposed tokens in one forward pass costs, and what it
// buys on a copy-heavy workload, with experts in process and on expert-node processes (optionally through
// an emulated link, bench/link-emulator.ts), one sequence at a time, all in one run.
//   (a) verification cost: the mean time of a decode step with K+1 rows (a proposer that always proposes K
//       tokens) over a step with 1 row (no proposer), for each K of --k.
//   (b) copy-heavy workload: prompts that repeat a long random token span (BOS, span, span). First greedy
//       decoding without speculation (the baseline, which also teaches the oracle each prompt's
//       continuation), then each proposer of --proposers with K = --spec-k:
//         oracle       proposes the greedy continuation; with --oracle-miss q each proposed token is wrong
//                      with probability q and the proposal ends at the first wrong one, so acceptance
//                      (accepted / proposed) is about 1 - q (q = 0.4: about 60%)
//         ngram, suffix the real proposers (coordinator/speculative/parse.ts: `ngram:K`, `suffix:K`); a
//                      random-weight model rarely repeats itself, so they show what it achieves here, not
//                      what a trained model would
//       Reports tokens per forward pass, round trips per token (forward passes x layers / tokens: one call
//       per node per layer per pass), acceptance, decode tokens/s and its ratio to the baseline, and whether
//       the tokens equal the baseline's (greedy speculation must not change them).
//       With --concurrency 1,2,4,8,16, (b) also runs C copy-heavy prompts at once (distinct spans) through the
//       continuous-batching scheduler (coordinator/scheduler.ts, as bench/cluster.ts's measure()) for each C,
//       without speculation and with each proposer (oracle at each --oracle-miss, the real ones at K = --spec-k),
//       the engine's batch cap on speculation lifted (speculativeMaxBatch) so every batch size proposes.
//       Decode tokens/s over the window after the last prefill step (every prompt prefilled) to the last step,
//       the ratio with/without, acceptance, and per setting the crossover: the smallest C with ratio < 1 (the
//       batch size above which `auto` should stop speculating).
// Decode only: the prompt's prefill step (which samples the first token) is not timed or counted.
// Models as bench/cluster.ts (the same folders under the temp dir, random bf16 weights, written once):
//   --shape mixtral  hidden 4096, intermediate 14336, 8 experts top-2, predictor rank 1024 (default 1 layer)
//   --shape demo     hidden 1024, intermediate 3584, 8 experts top-2, predictor rank 256 (default 8 layers)
//   node dist/bench/speculative.js [--shape mixtral|demo] [--layers N] [--model DIR] [--tokens 32]
//        [--k 1,2,4,8] [--steps 8] [--spec-k 4] [--experts local,cluster:2] [--link loopback|10gbe|1gbe|wifi|DELAY_US:MBIT]
//        [--proposers oracle,ngram,suffix] [--oracle-miss 0,0.4] [--prompts 2] [--span 24] [--parts a,b]
//        [--concurrency 1,2,4,8,16] [--wire f32|bf16|...] [--device cpu] [--node-threads 0] [--machine-cpus 0] [--overlap off] [--rounds 1] [--json]
// --rounds N: (b)'s one-sequence runs N times in turn (baseline, proposers, baseline, ...); each ratio is taken
// against its own round's baseline and the table shows the medians (the JSON also each round's).
// --node-threads: CPU threads per expert node (0: the cores shared evenly between the nodes, as LocalCluster does;
// with --machine-cpus N, N).
// --machine-cpus N: each process on its own N CPUs, as if on its own machine (bench/machines.ts).
// --overlap off|on|auto (default off): the engine's overlap. A verification pass has K+1 rows of the one
// sequence, which `on` runs as two pipelined micro-batches (the second lane's attention waits for the first's per
// layer), so one lane's expert calls are on the wire while the other computes; 1-row steps never split.
// Target (issue 15): with --link 1gbe, one sequence, K = 4 and acceptance >= 60%, decode tokens/s >= 2x without
// speculation.
import os from 'node:os';
import path from 'node:path';
import type { ExpertBackend, ExpertBatch, ExpertNodeHealth, ExpertOutput, StepContext } from '../core/expert-backend';
import type { Device } from '../core/native';
import type { ShardMap } from '../core/shard-map';
import { UserError } from '../core/errors';
import { WIRE_ENCODINGS, type WireEncoding } from '../core/wire/rows';
import { OVERLAP_MODES, type Engine, type OverlapMode } from '../coordinator/engine';
import { loadEngine } from '../coordinator/load-engine';
import { LocalCluster } from '../coordinator/local-cluster';
import { LocalExperts } from '../coordinator/local-experts';
import { RemoteExperts } from '../coordinator/remote-experts';
import { GREEDY } from '../coordinator/sampler';
import { Scheduler } from '../coordinator/scheduler';
import { quantile } from '../coordinator/call-latency';
import { Registry } from '../core/metrics';
import { TextTokenizer } from '../core/tokenizer';
import { parseSpeculative } from '../coordinator/speculative/parse';
import type { DraftProposer } from '../coordinator/speculative/proposer';
import { benchModelDir } from './bench-shapes';
import { arg } from './models';
import { LinkProcess, describeLink, parseLink } from './link-emulator';
import { Machines } from './machines';
import { mulberry32 as prng } from '../core/mulberry32';

const log = (line: string) => process.stderr.write(`${line}\n`);

/** Layers when --layers is not given, per --shape. */
const DEFAULT_LAYERS: Record<string, number> = { mixtral: 1, demo: 8 };

/** The engine's expert backend, swapped between modes so the coordinator's weights load once. */
class SwitchedExperts implements ExpertBackend {
  readonly name = 'bench';
  current: ExpertBackend | null = null;
  stats(): ExpertNodeHealth[] {
    return this.current?.stats?.() ?? [];
  }
  runExperts(batch: ExpertBatch, ctx?: StepContext): Promise<ExpertOutput> {
    return this.current!.runExperts(batch, ctx);
  }
  async close(): Promise<void> {
    await this.current?.close();
  }
}


/** Always proposes k tokens (a fixed guess): a decode step then has k+1 rows, whatever is accepted. */
class FixedProposer implements DraftProposer {
  readonly name: string;
  constructor(readonly k: number, private readonly vocab: number) {
    this.name = `fixed:${k}`;
  }
  propose(_seqId: number, tokens: readonly number[], k: number): number[] {
    const last = tokens[tokens.length - 1];
    return Array.from({ length: k }, (_, i) => (last + 7 * (i + 1)) % this.vocab);
  }
}

/**
 * Knows each sequence's greedy continuation (learned from the baseline run) and proposes it; each proposed
 * token is wrong with probability `miss`, and the proposal ends at the first wrong one.
 */
class OracleProposer implements DraftProposer {
  readonly name: string;
  private readonly known = new Map<number, { promptLength: number; continuation: number[] }>();
  private readonly random: () => number;
  constructor(readonly k: number, private readonly miss: number, private readonly vocab: number, seed = 7) {
    this.name = `oracle:${k}${miss > 0 ? `:miss${miss}` : ''}`;
    this.random = prng(seed);
  }
  /** Prompts whose sequence ids are not known in advance (through the scheduler): matched on first proposal. */
  private readonly byPrompt: { prompt: number[]; continuation: number[] }[] = [];
  learn(seqId: number, promptLength: number, continuation: number[]): void {
    this.known.set(seqId, { promptLength, continuation });
  }
  learnPrompt(prompt: number[], continuation: number[]): void {
    this.byPrompt.push({ prompt, continuation });
  }
  propose(seqId: number, tokens: readonly number[], k: number): number[] {
    let s = this.known.get(seqId);
    if (!s) {
      const p = this.byPrompt.find((e) => e.prompt.length <= tokens.length && e.prompt.every((t, i) => t === tokens[i]));
      if (!p) return [];
      s = { promptLength: p.prompt.length, continuation: p.continuation };
      this.known.set(seqId, s);
    }
    const at = tokens.length - s.promptLength;
    const out: number[] = [];
    for (const t of s.continuation.slice(at, at + k)) {
      if (this.miss > 0 && this.random() < this.miss) {
        out.push((t + 1) % this.vocab);
        break;
      }
      out.push(t);
    }
    return out;
  }
}

interface Decoded {
  /** Every output token, the prefill step's first one included. */
  tokenIds: number[];
  /** Decode steps (forward passes after the prefill step) and the tokens they produced. */
  passes: number;
  decodeTokens: number;
  seconds: number;
  draftTokens: number;
  acceptedTokens: number;
  /** Per decode step: its rows and wall time (ms). */
  stepRows: number[];
  stepMs: number[];
}

/**
 * One sequence, greedy, `maxTokens` tokens; the prefill step is not timed. `beforeDecode` runs after the
 * sequence exists (the oracle learns its id there).
 */
async function decode(engine: Engine, prompt: number[], maxTokens: number, proposer: DraftProposer | null,
  beforeDecode: (seqId: number) => void = () => undefined): Promise<Decoded> {
  engine.proposer = null;
  const seq = engine.newSequence(prompt, { sampling: GREEDY, maxTokens, stopIds: [] });
  try {
    while (!seq.finished && seq.pendingPrompt > 0) await engine.step([seq]);
    beforeDecode(seq.id);
    engine.proposer = proposer;
    const stepRows: number[] = [];
    const stepMs: number[] = [];
    let draftTokens = 0;
    let acceptedTokens = 0;
    const outBefore = seq.outputIds.length;
    const t0 = performance.now();
    while (!seq.finished) {
      const s0 = performance.now();
      const r = await engine.step([seq]);
      stepMs.push(performance.now() - s0);
      stepRows.push(r.rows);
      draftTokens += r.draftTokens ?? 0;
      acceptedTokens += r.acceptedTokens ?? 0;
    }
    const seconds = (performance.now() - t0) / 1000;
    return {
      tokenIds: [...seq.outputIds], passes: stepMs.length, decodeTokens: seq.outputIds.length - outBefore, seconds,
      draftTokens, acceptedTokens, stepRows, stepMs,
    };
  } finally {
    engine.release(seq);
    engine.proposer = null;
  }
}

const mean = (xs: number[]) => xs.reduce((a, b) => a + b, 0) / Math.max(1, xs.length);

interface CostResult {
  experts: string;
  link: string;
  k: number;
  rows: number;
  step_ms: number;
  /** step_ms over the 1-row step's, same mode. */
  vs_one_row: number;
}

interface WorkloadResult {
  experts: string;
  link: string;
  proposer: string;
  k: number;
  oracle_miss?: number;
  decode_tokens: number;
  forward_passes: number;
  tokens_per_pass: number;
  /** forward passes x layers / tokens: sequential expert round trips per token (cluster). */
  round_trips_per_token: number;
  draft_tokens: number;
  accepted_tokens: number;
  /** accepted / proposed (null without proposals). */
  acceptance: number | null;
  tokens_per_s: number;
  /** tokens_per_s over the baseline's (no speculation), same mode. */
  vs_none: number;
  /** Greedy output equal to the baseline's, every prompt. */
  identical: boolean;
  /** With --rounds: each round's tokens/s and ratio (the fields above are their medians). */
  tokens_per_s_rounds: number[];
  vs_none_rounds: number[];
}

/** (a): mean decode step time with k+1 rows, for k = 0 and each of `ks`; `steps` timed steps after 2 warm-up ones. */
async function verificationCost(engine: Engine, mode: string, link: string, ks: number[], steps: number): Promise<CostResult[]> {
  const V = engine.config.vocabSize;
  const prompt = [1, 11, 22, 33, 44, 55, 66, 77].map((t) => t % V);
  const out: CostResult[] = [];
  let base = 0;
  for (const k of [0, ...ks]) {
    // Enough tokens that every step can carry k proposals (each step emits at most k + 1).
    const maxTokens = (steps + 3) * (k + 1) + 2;
    const proposer = k > 0 ? new FixedProposer(k, V) : null;
    const d = await decode(engine, prompt, maxTokens, proposer);
    const timed = d.stepMs.slice(2, 2 + steps);
    const rows = d.stepRows.slice(2, 2 + steps);
    const stepMs = mean(timed);
    if (k === 0) base = stepMs;
    out.push({ experts: mode, link, k, rows: mean(rows), step_ms: stepMs, vs_one_row: stepMs / base });
    log(`${mode} ${link} (a) k=${k}: ${mean(rows).toFixed(1)} rows, ${stepMs.toFixed(2)} ms per step`);
  }
  return out;
}

/** BOS, a random span of `span` tokens, the same span again: the continuation of a copy. */
function copyPrompts(count: number, span: number, vocab: number): number[][] {
  const r = prng(12345);
  return Array.from({ length: count }, () => {
    const s = Array.from({ length: span }, () => 3 + Math.floor(r() * (vocab - 3)));
    return [1, ...s, ...s];
  });
}

/**
 * (b): the baseline, then each proposer, over every prompt; `rounds` times in turn (baseline, proposers,
 * baseline, ...), each proposer's ratio taken against its own round's baseline, then the median, so that a
 * shared machine's drift between runs falls on both sides of each ratio.
 */
async function copyWorkload(engine: Engine, mode: string, link: string, prompts: number[][], tokens: number,
  proposers: string[], specK: number, misses: number[], rounds: number): Promise<WorkloadResult[]> {
  const V = engine.config.vocabSize;
  const L = engine.config.numLayers;
  const summarise = (proposer: string, runs: Decoded[], identical: boolean, baseTps: number, miss?: number): WorkloadResult => {
    const tokensOut = runs.reduce((s, d) => s + d.decodeTokens, 0);
    const passes = runs.reduce((s, d) => s + d.passes, 0);
    const seconds = runs.reduce((s, d) => s + d.seconds, 0);
    const draft = runs.reduce((s, d) => s + d.draftTokens, 0);
    const accepted = runs.reduce((s, d) => s + d.acceptedTokens, 0);
    const tps = tokensOut / seconds;
    return {
      experts: mode, link, proposer, k: proposer === 'none' ? 0 : specK, ...(miss !== undefined ? { oracle_miss: miss } : {}),
      decode_tokens: tokensOut, forward_passes: passes, tokens_per_pass: tokensOut / passes,
      round_trips_per_token: (passes * L) / tokensOut, draft_tokens: draft, accepted_tokens: accepted,
      acceptance: draft > 0 ? accepted / draft : null, tokens_per_s: tps, vs_none: baseTps > 0 ? tps / baseTps : 1, identical,
      tokens_per_s_rounds: [tps], vs_none_rounds: [baseTps > 0 ? tps / baseTps : 1],
    };
  };
  // Per setting (in order), its result of each round.
  const byRound = new Map<string, WorkloadResult[]>();
  const record = (key: string, r: WorkloadResult, round: number) => {
    byRound.set(key, [...(byRound.get(key) ?? []), r]);
    log(`${mode} ${link} (b) round ${round} ${key}: ${r.tokens_per_pass.toFixed(2)} tokens/pass, ${r.tokens_per_s.toFixed(2)} tokens/s ` +
      `(${r.vs_none.toFixed(2)}x), acceptance ${r.acceptance === null ? '-' : r.acceptance.toFixed(2)}, identical ${r.identical}`);
  };
  let first: Decoded[] | null = null; // the first baseline: the oracle's continuation and the reference tokens
  for (let round = 1; round <= rounds; round++) {
    const baseline: Decoded[] = [];
    for (const p of prompts) baseline.push(await decode(engine, p, tokens, null));
    const reference = (first ??= baseline);
    const same = (runs: Decoded[]) => runs.every((d, i) => d.tokenIds.length === reference[i].tokenIds.length && d.tokenIds.every((t, j) => t === reference[i].tokenIds[j]));
    const base = summarise('none', baseline, same(baseline), 0);
    record('none', base, round);
    for (const name of proposers) {
      if (name === 'oracle') {
        for (const miss of misses) {
          const oracle = new OracleProposer(specK, miss, V);
          const runs: Decoded[] = [];
          for (const [i, p] of prompts.entries()) {
            runs.push(await decode(engine, p, tokens, oracle, (id) => oracle.learn(id, p.length, reference[i].tokenIds)));
          }
          record(`oracle miss ${miss}`, summarise('oracle', runs, same(runs), base.tokens_per_s, miss), round);
        }
      } else {
        const proposer = parseSpeculative(`${name}:${specK}`); // fresh per round: suffix learns only within it
        const runs: Decoded[] = [];
        for (const p of prompts) runs.push(await decode(engine, p, tokens, proposer));
        record(proposer.name, summarise(proposer.name, runs, same(runs), base.tokens_per_s), round);
      }
    }
  }
  // One row per setting: counts from the first round (each round decodes alike), speeds the median of the rounds.
  return [...byRound.values()].map((rs) => ({
    ...rs[0],
    tokens_per_s: quantile(rs.map((r) => r.tokens_per_s), 0.5),
    vs_none: quantile(rs.map((r) => r.vs_none), 0.5),
    identical: rs.every((r) => r.identical),
    tokens_per_s_rounds: rs.map((r) => r.tokens_per_s),
    vs_none_rounds: rs.map((r) => r.vs_none),
  }));
}

interface BatchedRun {
  tokenIds: number[][];
  /** Decode window: after the last step with prefill rows, to the last step. */
  decodeTokens: number;
  passes: number;
  seconds: number;
  draftTokens: number;
  acceptedTokens: number;
}

/**
 * All `prompts` at once through a fresh scheduler (no prefix cache: each run prefills alike), greedy, `tokens`
 * each, with `proposer` on the engine; timed from the last step that prefilled to the last step.
 */
async function batched(engine: Engine, tok: TextTokenizer, prompts: number[][], tokens: number, proposer: DraftProposer | null): Promise<BatchedRun> {
  const scheduler = new Scheduler(engine, tok, { metrics: new Registry(), kvBudgetBytes: 2 ** 40, maxRunning: 1024, prefixCache: false });
  engine.proposer = proposer;
  try {
    const handles = scheduler.submitAll(prompts.map((p) => ({ promptIds: p, sampling: GREEDY, maxTokens: tokens, stopIds: [] })));
    const emitted = () => handles.reduce((n, h) => n + h.tokenIds.length, 0);
    let start = { t: performance.now(), tokens: 0, passes: 0, draft: 0, accepted: 0 };
    let end = start;
    let passes = 0;
    scheduler.onStep = (s) => {
      passes++;
      const at = { t: performance.now(), tokens: emitted(), passes, draft: engine.speculation.draftTokens, accepted: engine.speculation.acceptedTokens };
      if (s.prefillRows > 0) start = at;
      end = at;
    };
    const results = await Promise.all(handles.map((h) => h.result));
    return {
      tokenIds: results.map((r) => [...r.tokenIds]), decodeTokens: end.tokens - start.tokens, passes: end.passes - start.passes,
      seconds: (end.t - start.t) / 1000, draftTokens: end.draft - start.draft, acceptedTokens: end.accepted - start.accepted,
    };
  } finally {
    engine.proposer = null;
    await scheduler.close();
  }
}

interface ConcurrencyResult {
  experts: string;
  link: string;
  proposer: string;
  k: number;
  oracle_miss?: number;
  concurrency: number;
  /** Decode tokens/s without speculation, with, and with over without. */
  tokens_per_s_none: number;
  tokens_per_s_spec: number;
  ratio: number;
  acceptance: number | null;
  tokens_per_pass_none: number;
  tokens_per_pass_spec: number;
  /** Every sequence's greedy output equal to the run without speculation. */
  identical: boolean;
}

/** (b) at each concurrency: the baseline (teaches the oracle every prompt's continuation), then each proposer. */
async function concurrencySweep(engine: Engine, tok: TextTokenizer, mode: string, link: string, span: number, tokens: number,
  levels: number[], proposers: string[], specK: number, misses: number[]): Promise<ConcurrencyResult[]> {
  const V = engine.config.vocabSize;
  // The engine's cap on speculation (speculativeMaxBatch, when it has one) lifted: every batch size proposes.
  const capped = engine as unknown as { speculativeMaxBatch?: number };
  const cap = capped.speculativeMaxBatch;
  if (cap !== undefined) capped.speculativeMaxBatch = Number.MAX_SAFE_INTEGER;
  const all = copyPrompts(Math.max(...levels), span, V);
  const out: ConcurrencyResult[] = [];
  try {
    for (const c of levels) {
      const prompts = all.slice(0, c);
      const base = await batched(engine, tok, prompts, tokens, null);
      const baseTps = base.decodeTokens / base.seconds;
      log(`${mode} ${link} (b) C=${c} none: ${baseTps.toFixed(2)} tokens/s (${base.decodeTokens} tokens, ${base.passes} passes)`);
      const settings: { proposer: DraftProposer; miss?: number }[] = [];
      for (const name of proposers) {
        if (name === 'oracle') {
          for (const miss of misses) {
            const oracle = new OracleProposer(specK, miss, V);
            prompts.forEach((p, i) => oracle.learnPrompt(p, base.tokenIds[i]));
            settings.push({ proposer: oracle, miss });
          }
        } else settings.push({ proposer: parseSpeculative(`${name}:${specK}`) });
      }
      for (const { proposer, miss } of settings) {
        const r = await batched(engine, tok, prompts, tokens, proposer);
        await proposer.close?.();
        const tps = r.decodeTokens / r.seconds;
        const identical = r.tokenIds.every((ids, i) => ids.length === base.tokenIds[i].length && ids.every((t, j) => t === base.tokenIds[i][j]));
        const row: ConcurrencyResult = {
          experts: mode, link, proposer: miss !== undefined ? 'oracle' : proposer.name, k: specK, ...(miss !== undefined ? { oracle_miss: miss } : {}),
          concurrency: c, tokens_per_s_none: baseTps, tokens_per_s_spec: tps, ratio: tps / baseTps,
          acceptance: r.draftTokens > 0 ? r.acceptedTokens / r.draftTokens : null,
          tokens_per_pass_none: base.decodeTokens / Math.max(1, base.passes), tokens_per_pass_spec: r.decodeTokens / Math.max(1, r.passes), identical,
        };
        out.push(row);
        log(`${mode} ${link} (b) C=${c} ${row.proposer}${miss !== undefined ? ` miss ${miss}` : ''}: ${tps.toFixed(2)} tokens/s (${row.ratio.toFixed(2)}x), ` +
          `acceptance ${row.acceptance === null ? '-' : row.acceptance.toFixed(2)}, identical ${identical}`);
      }
    }
  } finally {
    if (cap !== undefined) capped.speculativeMaxBatch = cap;
  }
  return out;
}

/** Per setting (experts, link, proposer, miss): the smallest concurrency whose ratio is < 1 (null: speculation paid at every one). */
function crossovers(rows: ConcurrencyResult[]): { experts: string; link: string; proposer: string; oracle_miss?: number; pays_up_to: number | null; stops_at: number | null }[] {
  const keyOf = (r: ConcurrencyResult) => `${r.experts}|${r.link}|${r.proposer}|${r.oracle_miss ?? ''}`;
  const keys = [...new Set(rows.map(keyOf))];
  return keys.map((key) => {
    const rs = rows.filter((r) => keyOf(r) === key).sort((a, b) => a.concurrency - b.concurrency);
    const stop = rs.find((r) => r.ratio < 1);
    const paying = rs.filter((r) => r.ratio >= 1 && (!stop || r.concurrency < stop.concurrency));
    const r0 = rs[0];
    return {
      experts: r0.experts, link: r0.link, proposer: r0.proposer, ...(r0.oracle_miss !== undefined ? { oracle_miss: r0.oracle_miss } : {}),
      pays_up_to: paying.length ? paying[paying.length - 1].concurrency : null, stops_at: stop ? stop.concurrency : null,
    };
  });
}

async function main(): Promise<void> {
  const shape = arg('shape', 'mixtral');
  const layers = Number(arg('layers', String(DEFAULT_LAYERS[shape] ?? 1)));
  const tokens = Number(arg('tokens', '32'));
  const steps = Number(arg('steps', '8'));
  const specK = Number(arg('spec-k', '4'));
  const promptCount = Number(arg('prompts', '2'));
  const span = Number(arg('span', '24'));
  const ks = arg('k', '1,2,4,8').split(',').map(Number);
  const device = arg('device', 'cpu') as Device;
  const json = process.argv.includes('--json');
  const parts = arg('parts', 'a,b').split(',').map((p) => p.trim());
  for (const p of parts) if (p !== 'a' && p !== 'b') throw new UserError(`--parts ${p}: use a, b or a,b`);
  const modes = arg('experts', 'local,cluster:2').split(',').map((m) => m.trim());
  const nodeCounts = new Map<string, number>();
  for (const m of modes) {
    const c = /^cluster:(\d+)$/.exec(m);
    if (m !== 'local' && !c) throw new UserError(`--experts ${m}: use local or cluster:N (e.g. local,cluster:2)`);
    if (c) nodeCounts.set(m, Number(c[1]));
  }
  const linkLabel = arg('link', 'loopback').trim();
  const linkSpec = parseLink(linkLabel);
  const wire = arg('wire', 'f32') as WireEncoding;
  const machines = Machines.fromArgs(Math.max(0, ...nodeCounts.values()), linkSpec !== null);
  const nodeThreads = Number(arg('node-threads', '0')) || (machines?.perMachine ?? 0);
  const rounds = Number(arg('rounds', '1'));
  const overlap = arg('overlap', 'off') as OverlapMode;
  if (!(OVERLAP_MODES as readonly string[]).includes(overlap)) throw new UserError(`--overlap ${overlap}: use ${OVERLAP_MODES.join(', ')}`);
  if (!WIRE_ENCODINGS.includes(wire)) throw new UserError(`--wire "${wire}": expected ${WIRE_ENCODINGS.join(', ')}`);
  const proposers = arg('proposers', 'oracle,ngram,suffix').split(',').map((p) => p.trim());
  for (const p of proposers) if (!['oracle', 'ngram', 'suffix'].includes(p)) throw new UserError(`--proposers ${p}: use oracle, ngram, suffix or a list`);
  const misses = arg('oracle-miss', '0,0.4').split(',').map(Number);
  const concArg = arg('concurrency', '');
  const levels = concArg ? concArg.split(',').map(Number) : [];
  for (const q of misses) if (!(q >= 0 && q < 1)) throw new UserError(`--oracle-miss must be in [0, 1), got ${q}`);
  for (const [name, v] of [['layers', layers], ['tokens', tokens], ['steps', steps], ['spec-k', specK], ['prompts', promptCount], ['span', span], ['rounds', rounds],
    ...ks.map((k) => ['k', k] as const), ...levels.map((l) => ['concurrency', l] as const), ...[...nodeCounts.values()].map((n) => ['experts cluster:N', n] as const)] as const) {
    if (!Number.isInteger(v) || v < 1) throw new UserError(`--${name} must be a positive integer, got ${v}`);
  }
  const dir = arg('model', '') || await benchModelDir(shape, layers, log);
  machines?.pinSelf();
  // From sources (node -r test/cluster/ts-register-cached.js bench/speculative.ts) the nodes run from sources too.
  const nodeCommand = __filename.endsWith('.ts')
    ? [process.execPath, '-r', path.resolve(__dirname, '..', 'test', 'cluster', 'ts-register-cached.js'), path.resolve(__dirname, '..', 'cli', 'expert-node.ts')]
    : undefined;

  const switched = new SwitchedExperts();
  const engine = await loadEngine({ modelDir: dir, device, log, experts: { kind: 'file', path: 'bench' }, remoteExperts: async () => switched });
  engine.overlap = overlap;
  const tok = TextTokenizer.fromModel(engine.folder);
  const c = engine.config;
  const dims = { hiddenSize: c.hiddenSize, intermediateSize: c.intermediateSize, numLayers: c.numLayers, numExperts: c.numExperts };
  const prompts = copyPrompts(promptCount, span, c.vocabSize);
  const cost: CostResult[] = [];
  const work: WorkloadResult[] = [];
  const conc: ConcurrencyResult[] = [];
  const description = engine.backend.description;
  let linkProc: LinkProcess | null = null;
  const run = async (mode: string, link: string) => {
    await decode(engine, prompts[0].slice(0, 8), 3, null); // warm-up: connections, first-call allocations
    if (parts.includes('a')) cost.push(...await verificationCost(engine, mode, link, ks, steps));
    if (parts.includes('b')) work.push(...await copyWorkload(engine, mode, link, prompts, tokens, proposers, specK, misses, rounds));
    if (parts.includes('b') && levels.length) conc.push(...await concurrencySweep(engine, tok, mode, link, span, tokens, levels, proposers, specK, misses));
  };
  try {
    for (const mode of modes) {
      if (mode === 'local') {
        log('local: loading every expert in process');
        switched.current = await LocalExperts.load(engine.folder, engine.backend, { store: 'auto', mode: 'sparse' });
        try {
          await run('local', '-');
        } finally {
          await switched.current.close();
          switched.current = null;
        }
        continue;
      }
      const n = nodeCounts.get(mode)!;
      if (linkSpec && !linkProc) {
        linkProc = await LinkProcess.start(linkSpec);
        machines?.pinLink(linkProc.pid);
      }
      log(`${mode}: starting ${n} expert nodes`);
      const cluster = await LocalCluster.start({ modelDir: dir, dims, nodes: n, device, threads: nodeThreads, nodeCommand, log });
      try {
        machines?.pinNodes(cluster.nodes.map((node) => node.pid));
        const via = async (address: string) => (linkProc ? linkProc.proxy(address) : address);
        const shardMap: ShardMap = { nodes: await Promise.all(cluster.shardMap.nodes.map(async (node) => ({ ...node, address: await via(node.address) }))) };
        switched.current = await RemoteExperts.connect({ shardMap, model: dims, wire, name: mode });
        try {
          await run(mode, linkLabel);
        } finally {
          await switched.current.close();
          switched.current = null;
        }
      } finally {
        await cluster.stop();
      }
    }
  } finally {
    await engine.close();
    await linkProc?.close();
  }

  const f = (v: number | null | undefined, d: number, w: number) => (v === null || v === undefined ? '-' : v.toFixed(d)).padStart(w);
  if (!json) {
    console.log(`speculative decoding, one sequence, greedy: ${c.numLayers} layer(s) at hidden ${c.hiddenSize} x intermediate ${c.intermediateSize}, ` +
      `${c.numExperts} experts top-${c.topK}, ${description}, ${os.cpus().length} CPUs; cluster link ${describeLink(linkSpec)}, wire ${wire}`);
    if (machines) console.log(`machines: ${machines.describe()}`);
    if (overlap !== 'off') console.log(`overlap ${overlap} (verification passes as two pipelined micro-batches)`);
    if (cost.length) {
      console.log(`\n(a) verification cost: mean decode step with K+1 rows vs 1 row (${steps} timed steps each)`);
      console.log('experts     link      K  rows  step ms  vs 1 row');
      for (const r of cost) console.log(`${r.experts.padEnd(10)}  ${r.link.padEnd(8)}  ${String(r.k).padStart(1)}  ${f(r.rows, 1, 4)}  ${f(r.step_ms, 2, 7)}  ${f(r.vs_one_row, 2, 8)}`);
    }
    if (work.length) {
      console.log(`\n(b) copy-heavy workload: ${promptCount} prompt(s) of BOS + a ${span}-token random span twice, ${tokens} tokens each (decode only), K=${specK}` +
        `${rounds > 1 ? `; tokens/s and vs none: medians of ${rounds} rounds` : ''}`);
      console.log('experts     link      proposer          miss  tokens  passes  tok/pass  RT/token  accept  tokens/s  vs none  identical');
      for (const r of work) {
        console.log(`${r.experts.padEnd(10)}  ${r.link.padEnd(8)}  ${r.proposer.padEnd(16)}  ${f(r.oracle_miss, 1, 4)}  ${String(r.decode_tokens).padStart(6)}  ` +
          `${String(r.forward_passes).padStart(6)}  ${f(r.tokens_per_pass, 2, 8)}  ${f(r.round_trips_per_token, 2, 8)}  ${f(r.acceptance, 2, 6)}  ` +
          `${f(r.tokens_per_s, 2, 8)}  ${f(r.vs_none, 2, 7)}  ${String(r.identical).padStart(9)}`);
      }
      const target = work.filter((r) => r.link === '1gbe' && r.k === 4 && r.acceptance !== null && r.acceptance >= 0.6);
      if (target.length) {
        console.log('\ntarget (1gbe, one sequence, K=4, acceptance >= 60%: tokens/s >= 2x without speculation):');
        for (const r of target) console.log(`  ${r.experts} ${r.proposer}${r.oracle_miss !== undefined ? ` miss ${r.oracle_miss}` : ''}: acceptance ${r.acceptance!.toFixed(2)}, ${r.vs_none.toFixed(2)}x` +
          `${r.vs_none_rounds.length > 1 ? ` (median of ${r.vs_none_rounds.map((v) => v.toFixed(2)).join(', ')})` : ''} -> ${r.vs_none >= 2 ? 'met' : 'not met'}`);
      }
    }
    if (conc.length) {
      console.log(`\n(b) by concurrency: C copy-heavy prompts at once through the scheduler, ${tokens} tokens each, K=${specK}, decode tokens/s (after the last prefill step)`);
      console.log('experts     link      proposer          miss   C  none tok/s  spec tok/s  ratio  accept  tok/pass  identical');
      for (const r of conc) {
        console.log(`${r.experts.padEnd(10)}  ${r.link.padEnd(8)}  ${r.proposer.padEnd(16)}  ${f(r.oracle_miss, 1, 4)}  ${String(r.concurrency).padStart(2)}  ` +
          `${f(r.tokens_per_s_none, 2, 10)}  ${f(r.tokens_per_s_spec, 2, 10)}  ${f(r.ratio, 2, 5)}  ${f(r.acceptance, 2, 6)}  ${f(r.tokens_per_pass_spec, 2, 8)}  ${String(r.identical).padStart(9)}`);
      }
      console.log('\ncrossover (smallest C with ratio < 1):');
      for (const x of crossovers(conc)) {
        console.log(`  ${x.experts} ${x.link} ${x.proposer}${x.oracle_miss !== undefined ? ` miss ${x.oracle_miss}` : ''}: ` +
          `${x.stops_at === null ? `pays at every C (up to ${x.pays_up_to})` : `pays up to C=${x.pays_up_to ?? '-'}, not at C=${x.stops_at}`}`);
      }
    }
  }
  console.log(JSON.stringify({ bench: 'speculative', layers: c.numLayers, hidden: c.hiddenSize, intermediate: c.intermediateSize, experts: c.numExperts,
    tokens, steps, spec_k: specK, prompts: promptCount, span, wire, link: { name: linkLabel, delay_us: linkSpec?.delayUs ?? 0, mbit: linkSpec?.mbit ?? null },
    cpus: os.cpus().length, machine_cpus: machines?.perMachine ?? null, overlap, device: description, verification_cost: cost, workload: work,
    ...(conc.length ? { concurrency: conc, crossover: crossovers(conc) } : {}) }));
}

main().catch((e) => {
  process.stderr.write(`${e instanceof UserError ? e.message : e instanceof Error ? e.stack : e}\n`);
  process.exitCode = 1;
});
