// Speculative decoding through the continuous-batching scheduler: concurrent requests (some
// proposed for, some not) give the tokens, logprobs and text they give without speculation;
// a stop string cuts the output at the same place; the spec counters count.
import { Registry } from '../../core/metrics';
import type { TextTokenizer } from '../../core/tokenizer';
import type { Engine } from '../../coordinator/engine';
import { GREEDY } from '../../coordinator/sampler';
import { Scheduler, type GenerationRequest, type GenerationResult } from '../../coordinator/scheduler';
import type { DraftProposer } from '../../coordinator/speculative/proposer';
import { useDemoModel } from '../serve/helpers';

const demo = useDemoModel();
let engine: Engine;
let tok: TextTokenizer;
beforeAll(() => ({ engine, tokenizer: tok } = demo));

const prompt = (len: number, seed: number) => [1, ...Array.from({ length: len - 1 }, (_, i) => 3 + ((i * 7 + seed * 13) % 250))];
const req = (promptIds: number[], extra: Partial<GenerationRequest> = {}): GenerationRequest =>
  ({ promptIds, sampling: GREEDY, maxTokens: 14, stopIds: [], logprobs: 2, ...extra });

/** Proposes what a run without speculation produced after the same prompt; no proposals for the prompts in `skip`. */
function replay(results: Map<string, number[]>, k: number, skip: Set<string>): DraftProposer {
  return {
    name: 'replay',
    k,
    propose(_id, tokens, kk) {
      for (const [key, full] of results) {
        if (skip.has(key) || !key.split(',').every((t, i) => Number(t) === tokens[i])) continue;
        return full.slice(tokens.length, tokens.length + kk);
      }
      return [];
    },
  };
}

async function runAll(reqs: GenerationRequest[], metrics = new Registry()): Promise<GenerationResult[]> {
  const s = new Scheduler(engine, tok, { metrics, prefillBudget: 16 });
  try {
    return await Promise.all(s.submitAll(reqs).map((h) => h.result));
  } finally {
    await s.close();
  }
}

test('concurrent requests, some with proposals: the same tokens, logprobs and text; the counters count', async () => {
  const prompts = [prompt(6, 1), prompt(19, 2), prompt(9, 3), prompt(4, 4)];
  const plain = await runAll(prompts.map((p) => req(p)));
  const truth = new Map(prompts.map((p, i) => [p.join(','), [...p, ...plain[i].tokenIds]]));
  engine.proposer = replay(truth, 4, new Set([prompts[2].join(',')]));
  const metrics = new Registry();
  try {
    const spec = await runAll(prompts.map((p) => req(p)), metrics);
    spec.forEach((r, i) => {
      expect(r.tokenIds).toEqual(plain[i].tokenIds);
      expect(r.text).toBe(plain[i].text);
      expect(r.logprobs).toEqual(plain[i].logprobs);
    });
    const text = metrics.text();
    const drafted = Number(/turbosparse_spec_draft_tokens_total (\d+)/.exec(text)![1]);
    const kept = Number(/turbosparse_spec_accepted_tokens_total (\d+)/.exec(text)![1]);
    expect(drafted).toBeGreaterThan(20);
    expect(kept).toBe(drafted); // the replayed proposals are the model's own tokens
  } finally {
    engine.proposer = null;
  }
});

test('a stop string inside a speculative step cuts the output where it does without speculation', async () => {
  const p = prompt(7, 5);
  const [plain] = await runAll([req(p, { maxTokens: 16 })]);
  // A stop string from the middle of the plain output's text.
  const stop = plain.text.slice(Math.floor(plain.text.length / 2), Math.floor(plain.text.length / 2) + 2);
  expect(stop.length).toBe(2);
  const [cut] = await runAll([req(p, { maxTokens: 16, stopStrings: [stop] })]);
  engine.proposer = replay(new Map([[p.join(','), [...p, ...plain.tokenIds]]]), 6, new Set());
  try {
    const [spec] = await runAll([req(p, { maxTokens: 16, stopStrings: [stop] })]);
    expect(spec.text).toBe(cut.text);
    expect(spec.tokenIds).toEqual(cut.tokenIds);
    expect(spec.finishReason).toBe('stop');
  } finally {
    engine.proposer = null;
  }
});

test('with preemption (a small KV budget) and overlapped steps: the same tokens, each streamed once', async () => {
  const prompts = [prompt(6, 31), prompt(9, 32), prompt(7, 33), prompt(5, 34)];
  const want = (await runAll(prompts.map((p) => req(p, { maxTokens: 40, logprobs: undefined })))).map((r) => r.tokenIds);
  const truth = new Map(prompts.map((p, i) => [p.join(','), [...p, ...want[i]]]));
  engine.proposer = replay(truth, 3, new Set());
  engine.overlap = 'on';
  const drafted = engine.speculation.draftTokens;
  try {
    const s = new Scheduler(engine, tok, { metrics: new Registry(), kvGrowTokens: 8, kvBudgetBytes: engine.kvBytesFor(80), maxQueue: 10 });
    const streamed: number[][] = prompts.map(() => []);
    const hs = s.submitAll(prompts.map((p, i) => req(p, { maxTokens: 40, logprobs: undefined, onDelta: (d) => streamed[i].push(...d.tokenIds) })));
    const rs = await Promise.all(hs.map((h) => h.result));
    expect(rs.map((r) => r.tokenIds)).toEqual(want);
    expect(streamed).toEqual(want);
    expect(s.stats.preemptions).toBeGreaterThan(0);
    expect(engine.speculation.draftTokens).toBeGreaterThan(drafted);
    await s.close();
  } finally {
    engine.proposer = null;
    engine.overlap = 'auto';
  }
});
