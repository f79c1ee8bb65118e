// Continuous batching on a real engine (small demo model): batched tokens equal
// solo tokens, prompts are prefilled in chunks without stalling decoders, the KV
// budget makes requests wait, cancellation and engine failures free everything.
import type { ExpertBackend } from '../../core/expert-backend';
import { Registry } from '../../core/metrics';
import type { TextTokenizer } from '../../core/tokenizer';
import { Engine } from '../../coordinator/engine';
import { GREEDY } from '../../coordinator/sampler';
import { QueueFullError, Scheduler, StepError, type GenerationRequest, type SchedulerOptions, type SequenceHandle } from '../../coordinator/scheduler';
import type { Sequence } from '../../coordinator/sequence';
import { useDemoModel } from './helpers';

const demo = useDemoModel();
let engine: Engine;
let tok: TextTokenizer;
beforeAll(() => ({ engine, tokenizer: tok } = demo));

/** The shared engine with some methods replaced (failures, hooks). */
const hooked = (over: Partial<Pick<Engine, 'grow' | 'copyPrefix' | 'newSequence'>>): Engine => Object.assign(Object.create(engine) as Engine, over);

/** An engine whose next grow first runs what `arm` was given (set once the handles exist). */
function growHook(): { engine: Engine; arm: (f: () => void) => void } {
  let armed: (() => void) | null = null;
  const e = hooked({
    grow: async (seq, tokens) => {
      const f = armed;
      armed = null;
      f?.();
      return engine.grow(seq, tokens);
    },
  });
  return { engine: e, arm: (f) => (armed = f) };
}

const sched = (opts: SchedulerOptions = {}, e: Engine = engine) => new Scheduler(e, tok, { metrics: new Registry(), ...opts });
const greedy = (promptIds: number[], maxTokens: number, extra: Partial<GenerationRequest> = {}): GenerationRequest => ({
  promptIds,
  sampling: GREEDY,
  maxTokens,
  stopIds: [],
  ...extra,
});
const prompt = (len: number, seed: number) => [1, ...Array.from({ length: len - 1 }, (_, i) => 3 + ((i * 7 + seed * 13) % 250))];

test('sequences batched together (joining at different steps) produce the tokens they produce alone', async () => {
  const prompts = [prompt(5, 1), prompt(17, 2), prompt(40, 3), prompt(9, 4)];
  const s = sched({ prefillBudget: 16 });
  const solo = [];
  for (const p of prompts) solo.push((await s.submit(greedy(p, 10)).result).tokenIds);
  const rows: number[] = [];
  s.onStep = (x) => rows.push(x.rows);
  const first = s.submitAll(prompts.slice(0, 2).map((p) => greedy(p, 10)));
  await new Promise((r) => setTimeout(r, 5));
  const later = s.submitAll(prompts.slice(2).map((p) => greedy(p, 10)));
  const batched = await Promise.all([...first, ...later].map((h) => h.result));
  expect(batched.map((r) => r.tokenIds)).toEqual(solo);
  expect(batched.every((r) => r.finishReason === 'length')).toBe(true);
  expect(Math.max(...rows)).toBeGreaterThan(4); // several sequences shared steps
  await s.close();
});

test('a long prompt is prefilled in budget-sized chunks while the others keep decoding', async () => {
  const s = sched({ prefillBudget: 32 });
  const decoders = s.submitAll([greedy(prompt(4, 5), 200), greedy(prompt(4, 6), 200)]);
  const counts = () => decoders.map((h) => h.tokenIds.length);
  await new Promise<void>((r) => {
    s.onStep = () => counts()[0] > 2 && r();
  });
  const log: { rows: number; prefill: number; progressed: boolean }[] = [];
  let before = counts();
  s.onStep = (x) => {
    const now = counts();
    log.push({ rows: x.rows, prefill: x.prefillRows, progressed: now.every((c, i) => c === before[i] + 1 || c >= 200) });
    before = now;
  };
  const long = s.submit(greedy(prompt(300, 7), 3));
  await long.result;
  s.onStep = null;
  const prefillSteps = log.filter((l) => l.prefill > 0);
  expect(prefillSteps.length).toBe(Math.ceil(300 / 32));
  expect(prefillSteps.every((l) => l.prefill <= 32 && l.rows <= 32 + 2)).toBe(true);
  expect(prefillSteps.every((l) => l.progressed)).toBe(true); // no decode step was skipped
  decoders.forEach((h) => h.cancel());
  await s.close();
});

test('the KV budget caps running sequences; the rest wait in order and all finish', async () => {
  const p = prompt(6, 8);
  const one = engine.kvBytesFor(p.length + 12);
  const s = sched({ kvBudgetBytes: 2 * one, maxQueue: 10 });
  let maxRunning = 0;
  s.onStep = () => (maxRunning = Math.max(maxRunning, s.stats.running));
  const hs = s.submitAll(Array.from({ length: 5 }, () => greedy(p, 12)));
  expect(s.stats).toEqual(expect.objectContaining({ running: 2, waiting: 3, kvBytes: 2 * one }));
  const rs = await Promise.all(hs.map((h) => h.result));
  expect(maxRunning).toBe(2);
  expect(rs.every((r) => r.tokenIds.length === 12)).toBe(true);
  expect(new Set(rs.map((r) => r.tokenIds.join(','))).size).toBe(1);
  expect(s.stats).toEqual(expect.objectContaining({ running: 0, waiting: 0, kvBytes: 0 }));
  // One that can never fit is refused up front, not queued forever.
  expect(() => s.submit(greedy(p, 40))).toThrow(/KV cache/);
  await s.close();
});

test('a cache starts with kvGrowTokens of room and grows as the sequence decodes; tokens are unchanged', async () => {
  const p = prompt(6, 30);
  const whole = sched({ kvGrowTokens: 4096 });
  const want = (await whole.submit(greedy(p, 60)).result).tokenIds;
  await whole.close();

  const s = sched({ kvGrowTokens: 8 });
  const held: number[] = [];
  s.onStep = () => held.push(s.stats.kvBytes);
  const h = s.submit(greedy(p, 60));
  expect(s.stats.kvBytes).toBe(engine.kvBytesFor(p.length + 8));
  expect((await h.result).tokenIds).toEqual(want);
  // It grew in steps (8 positions, a quarter of its size past 32) up to what it can need, never past it.
  const sizes = [...new Set(held.filter((b) => b > 0))].map((b) => b / engine.kvBytesFor(1));
  expect(sizes).toEqual([14, 22, 30, 38, 47, 58, 66]);
  expect(s.stats).toEqual(expect.objectContaining({ kvBytes: 0, preemptions: 0 }));
  await s.close();
});

test('when growth needs budget held by newer sequences they are preempted, recompute, and still give the same tokens', async () => {
  const reqs = [prompt(6, 31), prompt(9, 32), prompt(7, 33), prompt(5, 34)].map((p) => ({ p, max: 40 }));
  const solo = sched({ kvGrowTokens: 4096 });
  const want: number[][] = [];
  for (const r of reqs) want.push((await solo.submit(greedy(r.p, r.max)).result).tokenIds);
  await solo.close();

  // Room for the four first caches (prompt + 8) but far from four whole ones (~50 each).
  const metrics = new Registry();
  const s = new Scheduler(engine, tok, { metrics, kvGrowTokens: 8, kvBudgetBytes: engine.kvBytesFor(80), maxQueue: 10 });
  const streamed: number[][] = reqs.map(() => []);
  const hs = s.submitAll(reqs.map((r, i) => greedy(r.p, r.max, { onDelta: (d) => streamed[i].push(...d.tokenIds) })));
  expect(s.stats.running).toBe(4);
  let over = 0;
  s.onStep = () => (over = Math.max(over, s.stats.kvBytes - s.stats.kvBudget));
  const rs = await Promise.all(hs.map((h) => h.result));
  expect(rs.map((r) => r.tokenIds)).toEqual(want);
  expect(streamed).toEqual(want); // a preempted sequence streams each token once
  expect(over).toBeLessThanOrEqual(0);
  expect(s.stats.preemptions).toBeGreaterThan(0);
  expect(hs[0].preemptions).toBe(0); // the oldest is never the one preempted
  expect(metrics.text()).toMatch(new RegExp(`turbosparse_scheduler_preemptions_total ${s.stats.preemptions}\\b`));
  expect(s.stats).toEqual(expect.objectContaining({ running: 0, waiting: 0, kvBytes: 0 }));
  await s.close();
});

test('near the budget a cache grows as far as fits instead of preempting; a preempted sequence is not readmitted to thrash', async () => {
  // Two sequences that together need 512 positions in a budget of 460: one preemption at most,
  // not a preempt/recompute cycle every few tokens.
  const s = sched({ kvGrowTokens: 4, kvBudgetBytes: engine.kvBytesFor(460), prefixCache: false, prefillBudget: 64 });
  let prefill = 0;
  s.onStep = (x) => (prefill += x.prefillRows);
  const rs = await Promise.all(s.submitAll([greedy(prompt(6, 42), 250), greedy(prompt(6, 43), 250)]).map((h) => h.result));
  expect(rs.map((r) => r.tokenIds.length)).toEqual([250, 250]);
  expect(s.stats.preemptions).toBeLessThanOrEqual(1);
  expect(prefill).toBeLessThanOrEqual(12 + 256); // both prompts, plus at most one recompute
  await s.close();
});

test('a preempted sequence cancelled while it waits ends with the tokens it had', async () => {
  const s = sched({ kvGrowTokens: 4, kvBudgetBytes: engine.kvBytesFor(60), maxQueue: 4 });
  const [old, young] = s.submitAll([greedy(prompt(6, 35), 50), greedy(prompt(6, 36), 50)]);
  await new Promise<void>((r) => (s.onStep = () => young.preemptions > 0 && r()));
  s.onStep = null;
  const had = young.tokenIds.length;
  expect(s.stats.waiting).toBe(1);
  young.cancel();
  const r = await young.result;
  expect(r.finishReason).toBe('cancelled');
  expect(r.tokenIds).toHaveLength(had);
  expect((await old.result).tokenIds).toHaveLength(50);
  expect(s.stats.kvBytes).toBe(0);
  await s.close();
});

test('a preempted sequence waiting for room does not take a new request\'s queue slot', async () => {
  const s = sched({ kvGrowTokens: 4, kvBudgetBytes: engine.kvBytesFor(60), maxQueue: 1 });
  const [old, young] = s.submitAll([greedy(prompt(6, 53), 50), greedy(prompt(6, 54), 50)]);
  await new Promise<void>((r) => (s.onStep = () => young.preemptions > 0 && r()));
  s.onStep = null;
  expect(s.stats.waiting).toBe(1);
  const late = s.submit(greedy(prompt(6, 55), 5)); // the one slot is free: the waiting one is preempted, not new
  expect(() => s.submit(greedy(prompt(6, 56), 5))).toThrow(QueueFullError);
  expect((await late.result).tokenIds).toHaveLength(5);
  await Promise.all([old.result, young.result]);
  await s.close();
});

test('a sequence cancelled just before it is preempted ends then, not after it is readmitted', async () => {
  // Three caches of 10 positions in a budget of 34: at position 10 the oldest grows by 4 (to 34 held), then the
  // second must preempt the newest, whose cancel arrives while the oldest grows.
  const hook = growHook();
  const s = sched({ kvGrowTokens: 4, kvBudgetBytes: engine.kvBytesFor(34) }, hook.engine);
  const [a, b, c] = s.submitAll([greedy(prompt(6, 37), 20), greedy(prompt(6, 38), 20), greedy(prompt(6, 39), 20)]);
  hook.arm(() => c.cancel());
  const r = await c.result;
  expect(r.finishReason).toBe('cancelled');
  expect(a.done || b.done).toBe(false); // it did not wait for a slot to come back
  expect(s.stats.waiting).toBe(0);
  expect((await a.result).tokenIds).toHaveLength(20);
  expect((await b.result).tokenIds).toHaveLength(20);
  expect(s.stats.kvBytes).toBe(0);
  await s.close();
});

test('a repeated prompt copies its prefix from the finished sequence\'s cache: prefill shrinks, tokens are unchanged', async () => {
  const metrics = new Registry();
  const s = new Scheduler(engine, tok, { metrics, prefillBudget: 64 });
  const p = prompt(40, 40);
  let prefill = 0;
  s.onStep = (x) => (prefill += x.prefillRows);
  const first = await s.submit(greedy(p, 8)).result;
  expect(prefill).toBe(40);
  expect(s.stats.prefixCacheBytes).toBeGreaterThan(0);
  prefill = 0;
  const h = s.submit(greedy(p, 8));
  expect(h.cachedTokens).toBe(39); // all but the last prompt token, whose logits it needs
  expect((await h.result).tokenIds).toEqual(first.tokenIds);
  expect(prefill).toBe(1);
  expect(metrics.text()).toMatch(/turbosparse_prefix_cache_hit_tokens_total 39\b/);
  expect(metrics.text()).toMatch(/turbosparse_prefix_cache_queried_tokens_total 78\b/);

  // A follow-up turn: the previous prompt, its output and new tokens. Only what is new is computed.
  const next = [...p, ...first.tokenIds, 9, 10, 11];
  const plain = sched({ prefixCache: false });
  const want = (await plain.submit(greedy(next, 8)).result).tokenIds;
  await plain.close();
  prefill = 0;
  const turn = s.submit(greedy(next, 8));
  expect(turn.cachedTokens).toBe(p.length + first.tokenIds.length - 1); // its last output token was never fed back
  expect((await turn.result).tokenIds).toEqual(want);
  expect(prefill).toBe(4);
  await s.close();
  expect(s.stats.prefixCacheBytes).toBe(0);
});

test('a request sharing a prefix with a running sequence copies it from that sequence, without waiting for it to finish', async () => {
  const s = sched({ prefillBudget: 64 });
  const p = prompt(40, 62);
  const plain = sched({ prefixCache: false });
  const want = (await plain.submit(greedy([...p, 7, 8], 6)).result).tokenIds;
  await plain.close();
  const first = s.submit(greedy(p, 200));
  await new Promise<void>((r) => (s.onStep = () => first.tokenIds.length >= 2 && r())); // prefilled, decoding
  let prefill = 0;
  s.onStep = (x) => (prefill += x.prefillRows);
  const second = s.submit(greedy([...p, 7, 8], 6));
  expect(second.cachedTokens).toBe(40); // the whole shared prompt: first holds it
  expect((await second.result).tokenIds).toEqual(want);
  expect(prefill).toBe(2);
  expect(first.done).toBe(false);
  first.cancel();
  await s.close();
});

test('requests submitted together with a shared prompt compute it once: the others wait for it and copy it', async () => {
  const p = prompt(40, 70);
  const plain = sched({ prefixCache: false });
  const want = (await plain.submit(greedy(p, 6)).result).tokenIds;
  const wantLonger = (await plain.submit(greedy([...p, 9, 10, 11], 6)).result).tokenIds;
  await plain.close();
  const s = sched({ prefillBudget: 64 });
  let prefill = 0;
  s.onStep = (x) => (prefill += x.prefillRows);
  const hs = s.submitAll([greedy(p, 6), greedy(p, 6), greedy(p, 6), greedy([...p, 9, 10, 11], 6)]);
  expect(hs.slice(1).every((h) => h.waitFor?.src === hs[0])).toBe(true);
  const rs = await Promise.all(hs.map((h) => h.result));
  expect(rs.map((r) => r.tokenIds)).toEqual([want, want, want, wantLonger]);
  expect(hs.slice(1).map((h) => h.cachedTokens)).toEqual([39, 39, 40]);
  expect(prefill).toBe(40 + 1 + 1 + 3); // the prompt once; each other one its own last token(s)
  await s.close();
});

test('requests waiting for a source that finishes in its prefill step copy from its kept cache', async () => {
  const p = prompt(100, 72);
  const s = sched({ prefillBudget: 512 });
  let prefill = 0;
  s.onStep = (x) => (prefill += x.prefillRows);
  const hs = s.submitAll([greedy(p, 1), greedy(p, 1), greedy(p, 1), greedy(p, 1)]);
  const rs = await Promise.all(hs.map((h) => h.result));
  expect(new Set(rs.map((r) => r.tokenIds.join(','))).size).toBe(1);
  expect(hs.slice(1).map((h) => h.cachedTokens)).toEqual([99, 99, 99]);
  expect(prefill).toBe(100 + 3);
  await s.close();
});

test('a request waiting for a shared prompt whose source is cancelled computes the prompt itself', async () => {
  const p = prompt(40, 71);
  const plain = sched({ prefixCache: false });
  const want = (await plain.submit(greedy(p, 6)).result).tokenIds;
  await plain.close();
  const s = sched({ prefillBudget: 16 });
  const [src, h] = s.submitAll([greedy(p, 6), greedy(p, 6)]);
  expect(h.waitFor?.src).toBe(src);
  src.cancel();
  expect((await src.result).finishReason).toBe('cancelled');
  expect((await h.result).tokenIds).toEqual(want);
  expect(h.waitFor).toBeNull();
  await s.close();
});

test('kept prefix caches give way: running sequences never wait or get preempted for them', async () => {
  const s = sched({ kvGrowTokens: 8, kvBudgetBytes: engine.kvBytesFor(2 * 48) });
  for (let i = 0; i < 4; i++) await s.submit(greedy(prompt(30, 50 + i), 10)).result;
  expect(s.stats.prefixCacheBytes).toBeGreaterThan(0);
  let over = 0;
  s.onStep = () => (over = Math.max(over, s.stats.kvBytes + s.stats.prefixCacheBytes - s.stats.kvBudget));
  const hs = s.submitAll([greedy(prompt(30, 60), 18), greedy(prompt(30, 61), 18)]);
  expect(s.stats.running).toBe(2);
  await Promise.all(hs.map((h) => h.result));
  expect(over).toBeLessThanOrEqual(0);
  expect(s.stats.preemptions).toBe(0);
  await s.close();
});

test('prefixCache false: every prompt is computed', async () => {
  const s = sched({ prefixCache: false, prefillBudget: 64 });
  const p = prompt(40, 41);
  let prefill = 0;
  s.onStep = (x) => (prefill += x.prefillRows);
  await s.submit(greedy(p, 4)).result;
  await s.submit(greedy(p, 4)).result;
  expect(prefill).toBe(80);
  expect(s.stats.prefixCacheBytes).toBe(0);
  await s.close();
});

test('a cancelled sequence freed to make room does not keep its cache as a prefix (the budget holds)', async () => {
  // Three caches of 24 positions in 78: the oldest grows to 30, then the second needs 28 and the
  // newest, cancelled meanwhile, is freed for it. Kept as a prefix, its 24 would overrun the budget.
  const hook = growHook();
  const s = sched({ kvGrowTokens: 4, kvBudgetBytes: engine.kvBytesFor(78) }, hook.engine);
  let over = -Infinity;
  s.onStep = () => (over = Math.max(over, s.stats.kvBytes + s.stats.prefixCacheBytes - s.stats.kvBudget));
  const [a, b, c] = s.submitAll([greedy(prompt(20, 44), 12), greedy(prompt(20, 45), 12), greedy(prompt(20, 46), 12)]);
  hook.arm(() => c.cancel());
  expect((await c.result).finishReason).toBe('cancelled');
  await Promise.all([a.result, b.result]);
  expect(over).toBeLessThanOrEqual(0);
  await s.close();
});

test('a cache that cannot grow or a prefix that cannot be copied fails its own sequence only; the budget comes back', async () => {
  const noGrow = hooked({
    grow: async () => {
      throw new Error('out of device memory');
    },
  });
  const s = sched({ kvGrowTokens: 4 }, noGrow);
  const [short, long] = s.submitAll([greedy(prompt(6, 47), 3), greedy(prompt(6, 48), 30)]);
  await expect(long.result).rejects.toThrow(/step failed: out of device memory/);
  expect((await short.result).tokenIds).toHaveLength(3);
  expect(s.stats.kvBytes).toBe(0);
  await s.close();

  const noCopy = hooked({
    copyPrefix: async () => {
      throw new Error('copy failed');
    },
  });
  const s2 = sched({}, noCopy);
  const p = prompt(30, 49);
  await s2.submit(greedy(p, 2)).result; // leaves its cache as a prefix
  await expect(s2.submit(greedy(p, 2)).result).rejects.toThrow(/copy failed/);
  expect(s2.stats.kvBytes).toBe(0);
  expect((await s2.submit(greedy(prompt(30, 50), 2)).result).tokenIds).toHaveLength(2);
  await s2.close();
});

describe('a grow that fails (out of native memory) while others run', () => {
  const solo = async (p: number[], n: number) => {
    const plain = sched();
    const r = (await plain.submit(greedy(p, n)).result).tokenIds;
    await plain.close();
    return r;
  };
  /** An engine whose grow fails once for the sequence `target()` returns. */
  const failOnceFor = (target: () => Sequence | null) => {
    let failed = false;
    return hooked({
      grow: async (seq, tokens) => {
        if (!failed && seq === target()) {
          failed = true;
          throw new Error('out of device memory');
        }
        return engine.grow(seq, tokens);
      },
    });
  };

  test('the newest is requeued, recomputes, and finishes with the tokens it has alone', async () => {
    const [pOld, pNew] = [prompt(6, 52), prompt(6, 51)];
    const want = [await solo(pOld, 40), await solo(pNew, 30)];
    let young: SequenceHandle | null = null;
    const s = sched({ kvGrowTokens: 4 }, failOnceFor(() => young?.seq ?? null));
    const [old, y] = s.submitAll([greedy(pOld, 40), greedy(pNew, 30)]);
    young = y;
    expect([(await old.result).tokenIds, (await y.result).tokenIds]).toEqual(want);
    expect([old.preemptions, y.preemptions]).toEqual([0, 1]);
    expect(s.stats.kvBytes).toBe(0);
    await s.close();
  });

  test('for the oldest, the newest gives its cache back instead: the oldest keeps its progress', async () => {
    const [pOld, pNew] = [prompt(6, 53), prompt(6, 54)];
    const want = [await solo(pOld, 40), await solo(pNew, 30)];
    let oldest: SequenceHandle | null = null;
    const s = sched({ kvGrowTokens: 4 }, failOnceFor(() => oldest?.seq ?? null));
    const [o, young] = s.submitAll([greedy(pOld, 40), greedy(pNew, 30)]);
    oldest = o;
    expect([(await o.result).tokenIds, (await young.result).tokenIds]).toEqual(want);
    expect([o.preemptions, young.preemptions]).toEqual([0, 1]);
    await s.close();
  });
});

test('a sequence cancelled while another grows gets no room made for it (nothing live is preempted for it)', async () => {
  const hook = growHook();
  const s = sched({ kvGrowTokens: 4, kvBudgetBytes: engine.kvBytesFor(34) }, hook.engine);
  // Three caches of 10 in 34; a and c alone fit to their end (16 each), but not b grown beside them.
  const [a, b, c] = s.submitAll([greedy(prompt(6, 57), 10), greedy(prompt(6, 58), 10), greedy(prompt(6, 59), 10)]);
  hook.arm(() => b.cancel());
  expect((await b.result).finishReason).toBe('cancelled');
  await Promise.all([a.result, c.result]);
  expect(c.preemptions).toBe(0);
  await s.close();
});

test('a cache that cannot be allocated frees the kept prefixes and tries again; prefix metrics count the request once', async () => {
  const metrics = new Registry();
  let failNext = false;
  const e = hooked({
    newSequence: (...args) => {
      if (failNext) {
        failNext = false;
        throw new Error('cannot allocate device memory for the KV cache');
      }
      return engine.newSequence(...args);
    },
  });
  const s = new Scheduler(e, tok, { metrics, prefillBudget: 64 });
  const p = prompt(40, 60);
  const first = await s.submit(greedy(p, 4)).result;
  expect(s.stats.prefixCacheBytes).toBeGreaterThan(0);
  failNext = true;
  const h = s.submit(greedy(p, 4));
  expect(h.cachedTokens).toBe(0); // its hit was in the prefixes that were freed
  expect(s.stats.prefixCacheBytes).toBe(0);
  expect((await h.result).tokenIds).toEqual(first.tokenIds);
  expect(metrics.text()).toMatch(/turbosparse_prefix_cache_queried_tokens_total 78\b/);
  expect(metrics.text()).toMatch(/turbosparse_prefix_cache_hit_tokens_total 0\b/);
  await s.close();
});

describe('third review', () => {
  test('a request admitted while another sequence awaits its prefix copy does not copy from that sequence', async () => {
    let gate: (() => void) | null = null;
    let arm = false;
    const e = hooked({
      copyPrefix: async (seq, src, tokens) => {
        if (!arm) return engine.copyPrefix(seq, src, tokens);
        arm = false;
        seq.computed = tokens; // as the engine does, before the copy is in
        await new Promise<void>((r) => (gate = r));
        throw new Error('copy failed');
      },
    });
    const s = sched({ prefillBudget: 64 }, e);
    const p = prompt(40, 63);
    const plain = sched({ prefixCache: false });
    const want = (await plain.submit(greedy([...p, 7, 8], 4)).result).tokenIds;
    await plain.close();
    await s.submit(greedy(p, 2)).result; // keeps its cache
    await new Promise((r) => setTimeout(r, 10)); // the loop is idle
    arm = true;
    const b = s.submit(greedy([...p, 7], 4)); // copies from the kept cache: the copy hangs, then fails
    (s as unknown as { prefix: { clear(): void } }).prefix.clear();
    const c = s.submit(greedy([...p, 7, 8], 4)); // B looks computed, but its copy is not in
    expect(c.cachedTokens).toBe(0);
    gate!();
    await expect(b.result).rejects.toThrow(/copy failed/);
    expect((await c.result).tokenIds).toEqual(want);
    await s.close();
  });

  test('an older sequence requeued after failed grows keeps its age: newer ones are preempted first', async () => {
    const reqs = [prompt(6, 64), prompt(6, 65), prompt(6, 66)];
    const solo = sched({ prefixCache: false });
    const want: number[][] = [];
    for (const p of reqs) want.push((await solo.submit(greedy(p, 20)).result).tokenIds);
    await solo.close();
    let oldest: SequenceHandle | null = null;
    let failures = 2;
    const e = hooked({
      grow: async (seq, tokens) => {
        if (seq === oldest?.seq && failures-- > 0) throw new Error('out of device memory');
        return engine.grow(seq, tokens);
      },
    });
    const s = sched({ kvGrowTokens: 4, kvBudgetBytes: engine.kvBytesFor(70), prefixCache: false }, e);
    // The batch runs oldest first and the last running sequence is the one preempted: age order always.
    const running = () => (s as unknown as { running: SequenceHandle[] }).running.map((h) => h.id);
    let unordered = 0;
    let readmittedBesideOthers = false;
    s.onStep = () => {
      const ids = running();
      if (ids.some((id, i) => i > 0 && id < ids[i - 1])) unordered++;
      if (hs[0].preemptions > 0 && ids.length > 1 && ids.includes(hs[0].id)) readmittedBesideOthers = true;
    };
    const hs = s.submitAll(reqs.map((p) => greedy(p, 20)));
    oldest = hs[0];
    expect((await Promise.all(hs.map((h) => h.result))).map((r) => r.tokenIds)).toEqual(want);
    expect(readmittedBesideOthers).toBe(true); // the case this test is about happened
    expect(unordered).toBe(0);
    await s.close();
  });

  test('min_tokens also holds off stop strings (their match starts after the first min_tokens tokens)', async () => {
    const s = sched();
    const p = prompt(7, 67);
    const base = await s.submit(greedy(p, 12)).result;
    const stop = base.text.slice(0, 2);
    expect((await s.submit(greedy(p, 12, { stopStrings: [stop] })).result).tokenIds.length).toBeLessThan(8);
    const held = await s.submit(greedy(p, 12, { stopStrings: [stop], minTokens: 8 })).result;
    expect(held.tokenIds.length).toBeGreaterThanOrEqual(8);
    expect(held.tokenIds).toEqual(base.tokenIds.slice(0, held.tokenIds.length));
    await s.close();
  });

  test('a sequence cancelled while a later one in the batch grows gets no more deltas', async () => {
    let target: SequenceHandle | null = null;
    let onTargetGrow: (() => void) | null = null;
    const e = hooked({
      grow: async (seq, tokens) => {
        if (seq === target?.seq) onTargetGrow?.();
        return engine.grow(seq, tokens);
      },
    });
    const s = sched({ kvGrowTokens: 4 }, e);
    let cancelled = false;
    let late = 0;
    const a = s.submit(greedy(prompt(6, 68), 30, { onDelta: () => cancelled && late++ }));
    const b = s.submit(greedy(prompt(7, 69), 30));
    target = b;
    onTargetGrow = () => {
      onTargetGrow = null;
      a.cancel();
      cancelled = true;
    };
    expect((await a.result).finishReason).toBe('cancelled');
    expect(late).toBe(0);
    await b.result;
    await s.close();
  });
});

test('cancel: a waiting request leaves without running, a running one at the next step', async () => {
  const p = prompt(6, 9);
  const s = sched({ kvBudgetBytes: engine.kvBytesFor(p.length + 500), maxQueue: 4 });
  const [running, waiting] = s.submitAll([greedy(p, 500), greedy(p, 500)]);
  waiting.cancel();
  expect(await waiting.result).toEqual(expect.objectContaining({ finishReason: 'cancelled', tokenIds: [] }));
  await new Promise<void>((r) => (s.onStep = () => running.tokenIds.length >= 3 && r()));
  running.cancel();
  const r = await running.result;
  expect(r.finishReason).toBe('cancelled');
  expect(r.tokenIds.length).toBeLessThan(500);
  expect(s.stats.kvBytes).toBe(0);
  await s.close();
});

test('deltas (async iterator and callback) add up to the final text; stop strings cut it', async () => {
  const s = sched();
  const p = prompt(7, 10);
  const base = await s.submit(greedy(p, 24)).result;
  expect(base.text).toBe(tok.decode(base.tokenIds));
  const seen: string[] = [];
  const h = s.submit(greedy(p, 24, { onDelta: (d) => seen.push(d.text) }));
  let iterated = '';
  for await (const d of h) iterated += d.text;
  expect(iterated).toBe(base.text);
  expect(seen.join('')).toBe(base.text);

  const at = Math.floor(base.text.length / 2);
  const stop = base.text.slice(at, at + 3);
  const cut = base.text.indexOf(stop);
  const pieces: string[] = [];
  const r = await s.submit(greedy(p, 24, { stopStrings: [stop], onDelta: (d) => pieces.push(d.text) })).result;
  expect(r.finishReason).toBe('stop');
  expect(r.text).toBe(base.text.slice(0, cut));
  expect(pieces.join('')).toBe(r.text); // nothing of the stop string was ever sent
  expect(r.tokenIds).toEqual(base.tokenIds.slice(0, r.tokenIds.length));
  await s.close();
});

test('an engine failure ends the sequences of that step with StepError; the scheduler keeps serving', async () => {
  let failures = 1;
  const flaky: ExpertBackend = {
    name: 'flaky',
    runExperts: (batch, ctx) => (failures-- > 0 ? Promise.reject(new Error('expert node down')) : engine.experts.runExperts(batch, ctx)),
    close: async () => undefined,
  };
  const e = new Engine(engine.folder, engine.backend, engine.weights, flaky);
  const s = sched({}, e);
  const p = prompt(5, 11);
  const [a, b] = s.submitAll([greedy(p, 4), greedy(p, 4)]);
  await expect(a.result).rejects.toBeInstanceOf(StepError);
  await expect(b.result).rejects.toThrow(/expert node down/);
  expect(s.stats.kvBytes).toBe(0);
  const ok = await s.submit(greedy(p, 4)).result;
  expect(ok.tokenIds).toHaveLength(4);
  await s.close();
});

test('a consumer whose callback throws fails only its own sequence', async () => {
  const s = sched();
  const p = prompt(5, 12);
  const [bad, good] = s.submitAll([
    greedy(p, 6, { onDelta: () => { throw new Error('consumer broke'); } }),
    greedy(p, 6),
  ]);
  await expect(bad.result).rejects.toThrow('consumer broke');
  expect((await good.result).tokenIds).toHaveLength(6);
  expect(s.stats.kvBytes).toBe(0);
  await s.close();
});

test('each step makes one expert call per layer carrying every sequence of the batch', async () => {
  const calls: { layer: number; nRows: number }[] = [];
  const counting: ExpertBackend = {
    name: 'counting',
    runExperts: (batch, ctx) => {
      calls.push({ layer: batch.layer, nRows: batch.nRows });
      return engine.experts.runExperts(batch, ctx);
    },
    close: async () => undefined,
  };
  const s = sched({ prefillBudget: 64 }, new Engine(engine.folder, engine.backend, engine.weights, counting));
  const steps: { rows: number; from: number; to: number }[] = [];
  s.onStep = (x) => steps.push({ rows: x.rows, from: steps.length ? steps[steps.length - 1].to : 0, to: calls.length });
  const hs = s.submitAll(Array.from({ length: 6 }, (_, i) => greedy(prompt(5 + i, 20 + i), 8)));
  await Promise.all(hs.map((h) => h.result));
  const layers = engine.config.numLayers;
  expect(steps.length).toBeGreaterThan(0);
  for (const st of steps) {
    const mine = calls.slice(st.from, st.to);
    expect(mine.map((c) => c.layer)).toEqual(Array.from({ length: layers }, (_, L) => L));
    expect(mine.every((c) => c.nRows === st.rows)).toBe(true);
  }
  // Decode steps carry all six sequences: 6 rows per expert call, not 6 calls.
  expect(steps.filter((st) => st.rows === 6).length).toBeGreaterThanOrEqual(6);
  expect(calls.length).toBe(steps.length * layers);
  await s.close();
});
