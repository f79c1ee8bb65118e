// Log-probabilities and penalties through the scheduler on a real engine (small demo
// model): a generated token's logprob equals the prompt logprob of the same token when
// the output is fed back as a prompt (the check lm-eval's loglikelihood relies on),
// alternatives are the most likely tokens, and penalties change greedy output as defined.
import { Registry } from '../../core/metrics';
import type { TextTokenizer } from '../../core/tokenizer';
import { Engine } from '../../coordinator/engine';
import { GREEDY } from '../../coordinator/sampler';
import { Scheduler, type GenerationRequest, type SchedulerOptions } from '../../coordinator/scheduler';
import { useDemoModel } from './helpers';

const demo = useDemoModel();
let engine: Engine;
let tok: TextTokenizer;
beforeAll(() => ({ engine, tokenizer: tok } = demo));

const sched = (opts: SchedulerOptions = {}) => new Scheduler(engine, tok, { metrics: new Registry(), ...opts });
const req = (promptIds: number[], maxTokens: number, extra: Partial<GenerationRequest> = {}): GenerationRequest => ({
  promptIds,
  sampling: GREEDY,
  maxTokens,
  stopIds: [],
  ...extra,
});
const PROMPT = [1, 40, 41, 42, 77, 120, 9];

test('generated-token logprobs equal the prompt logprobs of the same text fed back; deltas carry them', async () => {
  const s = sched({ prefillBudget: 4 });
  const fromDeltas: number[] = [];
  const gen = await s.submit(req(PROMPT, 12, { logprobs: 3, onDelta: (d) => fromDeltas.push(...(d.logprobs ?? []).map((e) => e.id)) })).result;
  expect(gen.logprobs!.map((e) => e.id)).toEqual(gen.tokenIds);
  expect(fromDeltas).toEqual(gen.tokenIds);
  for (const e of gen.logprobs!) {
    expect(e.logprob).toBeLessThanOrEqual(0);
    expect(e.top).toHaveLength(3);
    expect(e.top[0].id).toBe(e.id); // greedy takes the most likely token
    expect(e.top[0].logprob).toBe(e.logprob);
    expect(e.top[1].logprob).toBeLessThanOrEqual(e.top[0].logprob);
    expect(e.top[2].logprob).toBeLessThanOrEqual(e.top[1].logprob);
    expect(e.top.reduce((a, t) => a + Math.exp(t.logprob), 0)).toBeLessThanOrEqual(1 + 1e-6);
  }

  // Scored as a prompt (chunked prefill of 4), with nothing generated.
  const all = [...PROMPT, ...gen.tokenIds];
  const scored = await s.submit(req(all, 0, { promptLogprobs: 2 })).result;
  expect(scored.tokenIds).toEqual([]);
  expect(scored.promptLogprobs!.map((e) => e.id)).toEqual(all.slice(1));
  const tail = scored.promptLogprobs!.slice(PROMPT.length - 1);
  tail.forEach((e, i) => {
    expect(e.logprob).toBeCloseTo(gen.logprobs![i].logprob, 4);
    expect(e.top.map((t) => t.id)).toEqual(gen.logprobs![i].top.slice(0, 2).map((t) => t.id));
  });
  await s.close();
});

test('prompt logprobs survive a preemption without repeats', async () => {
  const s = sched({ kvGrowTokens: 4, kvBudgetBytes: engine.kvBytesFor(40), prefillBudget: 64 });
  const a = s.submit(req(PROMPT, 25));
  const b = s.submit(req([...PROMPT, 5, 6], 25, { promptLogprobs: 0, logprobs: 0 }));
  const [ra, rb] = await Promise.all([a.result, b.result]);
  expect(b.preemptions).toBeGreaterThan(0);
  expect(rb.promptLogprobs!.map((e) => e.id)).toEqual([...PROMPT, 5, 6].slice(1));
  expect(rb.logprobs!.map((e) => e.id)).toEqual(rb.tokenIds);
  expect(rb.logprobs!.every((e) => e.top.length === 0)).toBe(true);
  expect(ra.tokenIds).toHaveLength(25);
  await s.close();
});

test('presence, frequency and repetition penalties steer greedy decoding away from repeats', async () => {
  const s = sched();
  const plain = (await s.submit(req(PROMPT, 40)).result).tokenIds;
  expect(new Set(plain).size).toBeLessThan(plain.length); // the demo model repeats itself
  const presence = (await s.submit(req(PROMPT, 40, { sampling: { ...GREEDY, presencePenalty: 1e6 } })).result).tokenIds;
  expect(new Set(presence).size).toBe(presence.length);
  const frequency = (await s.submit(req(PROMPT, 40, { sampling: { ...GREEDY, frequencyPenalty: 1e6 } })).result).tokenIds;
  expect(frequency).toEqual(presence); // one occurrence each: the same penalty
  const repetition = (await s.submit(req(PROMPT, 40, { sampling: { ...GREEDY, repetitionPenalty: 1e6 } })).result).tokenIds;
  expect(repetition.some((t) => PROMPT.includes(t))).toBe(false);
  expect(repetition).not.toEqual(plain);
  await s.close();
});

test('a bf16 KV cache holds half the bytes and scores text within rounding of the f32 cache', async () => {
  const f32 = sched({ prefixCache: false });
  const gen = await f32.submit(req(PROMPT, 20, { logprobs: 0 })).result;
  const text = [...PROMPT, ...gen.tokenIds];
  const want = (await f32.submit(req(text, 0, { promptLogprobs: 0 })).result).promptLogprobs!;
  await f32.close();
  const half = new Engine(engine.folder, engine.backend, engine.weights, engine.experts, { kvDtype: 'bf16' });
  expect(half.kvBytesFor(100)).toBe(engine.kvBytesFor(100) / 2);
  const s = new Scheduler(half, tok, { metrics: new Registry(), prefixCache: false });
  const h = s.submit(req(text, 0, { promptLogprobs: 0 }));
  expect(s.stats.kvBytes).toBe(half.kvBytesFor(text.length)); // prompt + max_tokens 0
  const got = (await h.result).promptLogprobs!;
  expect(got.map((e) => e.id)).toEqual(want.map((e) => e.id));
  const diffs = got.map((e, i) => Math.abs(e.logprob - want[i].logprob));
  const mean = diffs.reduce((a, b) => a + b, 0) / diffs.length;
  expect(mean).toBeGreaterThan(0); // it did round
  expect(mean).toBeLessThan(0.03); // a broken cache is off by nats
  expect(Math.max(...diffs)).toBeLessThan(0.2);
  await s.close();
});
