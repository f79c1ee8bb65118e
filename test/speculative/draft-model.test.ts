// `draft:DIR`: a small model of the same tokenizer proposes greedily; the output is the target's,
// token for token and logit for logit, whether the draft agrees with it (the target as its own
// draft: every proposal kept) or not (other weights); a draft of another tokenizer is refused.
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { makeDemoModel } from '../../core/demo-model';
import { UserError } from '../../core/errors';
import type { Engine } from '../../coordinator/engine';
import { loadEngine } from '../../coordinator/load-engine';
import { GREEDY } from '../../coordinator/sampler';
import { DraftModelProposer } from '../../coordinator/speculative/draft-model';

const quiet = { log: () => undefined };
const shape = { layers: 2, hidden: 64, intermediate: 128, heads: 4, kvHeads: 2, experts: 4, topK: 2, vocab: 300, predictorRank: 16, shards: 1 };

let dir: string;
let target: Engine;
const drafts: Engine[] = [];

beforeAll(async () => {
  dir = fs.mkdtempSync(path.join(os.tmpdir(), 'ts-draft-'));
  await makeDemoModel(path.join(dir, 'target'), { ...shape, seed: 1 });
  await makeDemoModel(path.join(dir, 'other'), { ...shape, layers: 1, seed: 2 });
  await makeDemoModel(path.join(dir, 'vocab'), { ...shape, vocab: 280, seed: 3 });
  target = await loadEngine({ modelDir: path.join(dir, 'target'), device: 'cpu', ...quiet });
});
afterAll(async () => {
  target.proposer = null;
  await target?.close();
  for (const d of drafts) await d.close();
  fs.rmSync(dir, { recursive: true, force: true });
});

async function decode(prompts: number[][], maxTokens: number): Promise<{ tokens: number[][]; logits: Buffer[] }> {
  const seqs = prompts.map((p) => target.newSequence(p, { sampling: GREEDY, maxTokens, stopIds: [] }));
  const logits: Buffer[][] = seqs.map(() => []);
  while (seqs.some((s) => !s.finished)) {
    const r = await target.step(seqs.filter((s) => !s.finished));
    for (const s of r.sampled) logits[seqs.indexOf(s.seq)].push(Buffer.from(s.logits.slice().buffer));
  }
  const out = { tokens: seqs.map((s) => [...s.outputIds]), logits: logits.map((l) => Buffer.concat(l)) };
  for (const s of seqs) target.release(s);
  return out;
}

async function draftOf(name: string): Promise<Engine> {
  const e = await loadEngine({ modelDir: path.join(dir, name), device: 'cpu', ...quiet });
  drafts.push(e);
  return e;
}

test('the target as its own draft: every proposal kept, identical output in fewer forward passes', async () => {
  const prompts = [[1, 5, 9, 13], [2, 40, 41]];
  target.proposer = null;
  const plain = await decode(prompts, 10);
  const p0 = target.speculation.forwardPasses;
  const plainPasses = p0;
  const proposer = new DraftModelProposer(await draftOf('target'), target, 4);
  target.proposer = proposer;
  const before = { ...target.speculation };
  const spec = await decode(prompts, 10);
  target.proposer = null;
  expect(spec.tokens).toEqual(plain.tokens);
  spec.logits.forEach((l, i) => expect(l.equals(plain.logits[i])).toBe(true));
  const drafted = target.speculation.draftTokens - before.draftTokens;
  expect(drafted).toBeGreaterThan(0);
  expect(target.speculation.acceptedTokens - before.acceptedTokens).toBe(drafted);
  expect(target.speculation.forwardPasses - before.forwardPasses).toBeLessThan(plainPasses / 2);
});

test('a draft with other weights: proposals partly wrong, output still the target\'s', async () => {
  const prompts = [[1, 5, 9, 13], [2, 40, 41], [3]];
  target.proposer = null;
  const plain = await decode(prompts, 12);
  const proposer = new DraftModelProposer(await draftOf('other'), target, 3);
  target.proposer = proposer;
  const spec = await decode(prompts, 12);
  target.proposer = null;
  expect(spec.tokens).toEqual(plain.tokens);
  spec.logits.forEach((l, i) => expect(l.equals(plain.logits[i])).toBe(true));
});

test('a draft model of another tokenizer is refused in one line', async () => {
  const d = await draftOf('vocab');
  expect(() => new DraftModelProposer(d, target, 4)).toThrow(UserError);
  expect(() => new DraftModelProposer(d, target, 4)).toThrow(/its tokenizer differs from the model's/);
});
