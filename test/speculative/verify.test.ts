// Speculative verification in the engine: K proposed tokens run as extra rows of one decode
// step. Greedy output (tokens and every emitted token's logits) is identical to decoding without
// speculation, whatever the proposals (right, wrong, partly right); max_tokens is never passed;
// stop ids end it at the right token; the sampling acceptance rule keeps the model's distribution.
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { makeDemoModel } from '../../core/demo-model';
import { Engine } from '../../coordinator/engine';
import { loadEngine } from '../../coordinator/load-engine';
import { GREEDY, Rng, sample, sampleVerifying } from '../../coordinator/sampler';
import type { DraftProposer } from '../../coordinator/speculative/proposer';

const quiet = { log: () => undefined };

/** Proposes the continuation `truth` gives for a sequence, corrupting every `wrongEvery`-th proposal. */
function oracle(truth: Map<number, number[]>, k: number, wrongEvery = 0): DraftProposer & { calls: number } {
  let n = 0;
  return {
    name: 'oracle',
    k,
    calls: 0,
    propose(seqId, tokens, kk) {
      this.calls++;
      const full = truth.get(seqId) ?? [];
      const next = full.slice(tokens.length, tokens.length + kk);
      return next.map((t) => (wrongEvery > 0 && ++n % wrongEvery === 0 ? (t + 1) % 300 : t));
    },
  };
}

interface Out {
  tokens: number[][];
  logits: Buffer[];
  steps: number;
}

async function run(engine: Engine, prompts: number[][], maxTokens: number, stopIds: number[] = []): Promise<Out> {
  const seqs = prompts.map((ids) => engine.newSequence(ids, { sampling: GREEDY, maxTokens, stopIds }));
  const logits: Buffer[][] = seqs.map(() => []);
  let steps = 0;
  while (seqs.some((s) => !s.finished)) {
    const r = await engine.step(seqs.filter((s) => !s.finished));
    for (const s of r.sampled) logits[seqs.indexOf(s.seq)].push(Buffer.from(s.logits.slice().buffer));
    steps++;
  }
  const out = { tokens: seqs.map((s) => [...s.outputIds]), logits: logits.map((l) => Buffer.concat(l)), steps };
  for (const s of seqs) engine.release(s);
  return out;
}

describe('speculative verification (demo model, in-process experts)', () => {
  let dir: string;
  let engine: Engine;
  const prompts = [[1, 20, 30, 40], [2, 9, 8, 7, 6, 5], [3, 100]];
  let plain: Out;
  const truth = new Map<number, number[]>();

  beforeAll(async () => {
    dir = fs.mkdtempSync(path.join(os.tmpdir(), 'ts-spec-'));
    await makeDemoModel(dir, { layers: 2, hidden: 64, intermediate: 128, heads: 4, kvHeads: 2, experts: 4, topK: 2, vocab: 300, predictorRank: 16, shards: 1 });
    engine = await loadEngine({ modelDir: dir, device: 'cpu', ...quiet });
    plain = await run(engine, prompts, 12);
  });
  afterAll(async () => {
    await engine?.close();
    fs.rmSync(dir, { recursive: true, force: true });
  });

  /** Sequence ids are assigned in order: the next run's ids are known before it starts. */
  function expectTruthFor(e: Engine, outputs: number[][]): void {
    const next = (e as unknown as { nextSeqId: number }).nextSeqId;
    truth.clear();
    outputs.forEach((o, i) => truth.set(next + i, [...prompts[i], ...o]));
  }

  test.each([
    ['right proposals, K=4', 4, 0],
    ['every 3rd proposal wrong, K=3', 3, 3],
    ['every proposal wrong, K=2', 2, 1],
  ])('%s: the same tokens and logits as without speculation, in fewer steps when proposals are right', async (_name, k, wrongEvery) => {
    expectTruthFor(engine, plain.tokens);
    engine.proposer = oracle(truth, k, wrongEvery);
    const before = { ...engine.speculation };
    try {
      const spec = await run(engine, prompts, 12);
      expect(spec.tokens).toEqual(plain.tokens);
      spec.logits.forEach((l, i) => expect(l.equals(plain.logits[i])).toBe(true));
      const drafted = engine.speculation.draftTokens - before.draftTokens;
      const kept = engine.speculation.acceptedTokens - before.acceptedTokens;
      expect(drafted).toBeGreaterThan(0);
      if (wrongEvery === 0) {
        expect(kept).toBe(drafted);
        expect(spec.steps).toBeLessThan(plain.steps / 2);
      }
      if (wrongEvery === 1) expect(kept).toBe(0);
    } finally {
      engine.proposer = null;
    }
  });

  test('no proposals in steps with more decoding sequences than speculativeMaxBatch; a sequence whose guesses fail rests', async () => {
    expectTruthFor(engine, plain.tokens);
    engine.proposer = oracle(truth, 2);
    engine.speculativeMaxBatch = 2;
    const before = engine.speculation.draftTokens;
    try {
      const three = await run(engine, prompts, 12); // 3 decoding sequences > 2
      expect(three.tokens).toEqual(plain.tokens);
      expect(engine.speculation.draftTokens).toBe(before);
      // Guesses that are (almost) always wrong, one sequence, a long output: after 16 failed
      // proposals it rests 32 steps, so far fewer than its ~60 decode steps ask the proposer.
      engine.speculativeMaxBatch = 4;
      let calls = 0;
      engine.proposer = { name: 'wrong', k: 2, propose: (_id, tokens) => (calls++, [(tokens.length * 7919 + 13) % 300, (tokens.length * 104729 + 7) % 300]) };
      const alone = await run(engine, [prompts[0]], 60);
      engine.proposer = null;
      expect(alone.tokens[0]).toEqual((await run(engine, [prompts[0]], 60)).tokens[0]);
      expect(calls).toBeGreaterThanOrEqual(8);
      expect(calls).toBeLessThan(35); // 8 steps proposing, 32 resting, 8 proposing, ... over ~59 steps
    } finally {
      engine.proposer = null;
      engine.speculativeMaxBatch = 4;
    }
  });

  test('max_tokens is never passed and a stop id ends the output at its place', async () => {
    expectTruthFor(engine, plain.tokens);
    engine.proposer = oracle(truth, 8);
    try {
      const five = await run(engine, prompts, 5);
      expect(five.tokens).toEqual(plain.tokens.map((t) => t.slice(0, 5)));
      // A stop id: the 4th token of the first prompt's output.
      const stopId = plain.tokens[0][3];
      expectTruthFor(engine, plain.tokens);
      const stopped = await run(engine, [prompts[0]], 12, [stopId]);
      engine.proposer = null;
      const reference = await run(engine, [prompts[0]], 12, [stopId]);
      expect(stopped.tokens).toEqual(reference.tokens);
      expect(stopped.tokens[0]).not.toContain(stopId);
    } finally {
      engine.proposer = null;
    }
  });
});

test('the sampling acceptance rule emits the model\'s distribution whatever the proposal', () => {
  // Five tokens with known probabilities at temperature 1.
  const probs = [0.5, 0.25, 0.15, 0.07, 0.03];
  const logits = Float32Array.from(probs, (p) => Math.log(p));
  const params = { temperature: 1, topK: 0, topP: 1 };
  const n = 40000;
  for (const proposal of [0, 2, 4]) {
    const rng = new Rng(1234 + proposal);
    const counts = new Array(5).fill(0);
    let kept = 0;
    for (let i = 0; i < n; i++) {
      const { token, accepted } = sampleVerifying(logits, params, rng, proposal);
      counts[token]++;
      if (accepted) kept++;
    }
    // Each frequency within 4 standard deviations of its probability; acceptance = p(proposal).
    probs.forEach((p, t) => expect(Math.abs(counts[t] / n - p)).toBeLessThan(4 * Math.sqrt((p * (1 - p)) / n)));
    expect(Math.abs(kept / n - probs[proposal])).toBeLessThan(4 * Math.sqrt((probs[proposal] * (1 - probs[proposal])) / n));
  }
  // A proposal outside top-k is never kept; the draw is then plain sampling from the top-k.
  const rng = new Rng(7);
  const topK = { temperature: 1, topK: 2, topP: 1 };
  for (let i = 0; i < 200; i++) {
    const { token, accepted } = sampleVerifying(logits, topK, rng, 4);
    expect(accepted).toBe(false);
    expect([0, 1]).toContain(token);
  }
  // Greedy: the argmax, kept only when it is the proposal.
  expect(sampleVerifying(logits, GREEDY, rng, 0)).toEqual({ token: 0, accepted: true });
  expect(sampleVerifying(logits, GREEDY, rng, 1)).toEqual({ token: 0, accepted: false });
  expect(sample(logits, GREEDY, rng)).toBe(0);
});
