// The OpenAI and vLLM request fields beyond the basics, through the HTTP API with the
// official client on a small demo model: logprobs (the shapes OpenAI documents, streamed =
// whole, echo + logprobs + max_tokens 0 scoring text the way lm-eval's loglikelihood
// requests do), penalties, logit_bias, min_p, stop_token_ids, min_tokens, and vLLM's
// /tokenize and /detokenize.
import OpenAI from 'openai';
import { useDemoModel } from './helpers';

const demo = useDemoModel(undefined, { modelName: 'demo' });
let client: OpenAI;
beforeAll(() => (client = demo.client));

const PROMPT = 'the quick brown fox';
type Logprobs = { tokens: string[]; token_logprobs: (number | null)[]; top_logprobs: (Record<string, number> | null)[]; text_offset: number[] };

test('completions logprobs: one entry per token, alternatives with the chosen one, offsets into the text', async () => {
  const r = await client.completions.create({ model: 'demo', prompt: PROMPT, max_tokens: 6, temperature: 0, logprobs: 2, ignore_eos: true } as never);
  const c = r.choices[0];
  const lp = c.logprobs as Logprobs;
  expect(lp.tokens).toHaveLength(r.usage!.completion_tokens);
  expect(lp.tokens.join('')).toBe(c.text);
  lp.tokens.forEach((t, i) => {
    const top = lp.top_logprobs[i]!;
    expect(lp.token_logprobs[i]).toBeLessThanOrEqual(0);
    expect(Object.keys(top).length).toBeGreaterThanOrEqual(1);
    expect(Object.keys(top).length).toBeLessThanOrEqual(3);
    expect(top[t]).toBe(lp.token_logprobs[i]); // greedy: the chosen token is the best one
    expect(Math.max(...Object.values(top))).toBe(lp.token_logprobs[i]);
    expect(lp.text_offset[i]).toBe(lp.tokens.slice(0, i).join('').length);
  });
});

test('echo + logprobs + max_tokens 0 scores a continuation the way generation saw it', async () => {
  const gen = await client.completions.create({ model: 'demo', prompt: PROMPT, max_tokens: 5, temperature: 0, logprobs: 0, ignore_eos: true } as never);
  const text = PROMPT + gen.choices[0].text;
  const scored = await client.completions.create({ model: 'demo', prompt: text, max_tokens: 0, echo: true, logprobs: 1 } as never);
  const c = scored.choices[0];
  expect(c.text).toBe(text);
  const lp = c.logprobs as Logprobs;
  expect(lp.tokens).toHaveLength(scored.usage!.prompt_tokens);
  expect(lp.token_logprobs[0]).toBeNull();
  expect(lp.top_logprobs[0]).toBeNull();
  const genLp = gen.choices[0].logprobs as Logprobs;
  const tail = lp.token_logprobs.slice(-genLp.tokens.length);
  tail.forEach((x, i) => expect(x!).toBeCloseTo(genLp.token_logprobs[i]!, 4));
  expect(lp.tokens.slice(-genLp.tokens.length)).toEqual(genLp.tokens);
});

test('streamed logprobs (with echo) add up to the whole response', async () => {
  const body = { model: 'demo', prompt: PROMPT, max_tokens: 8, temperature: 0, logprobs: 1, echo: true, ignore_eos: true };
  const whole = await client.completions.create(body as never);
  const stream = await client.completions.create({ ...body, stream: true } as never);
  const got: Logprobs = { tokens: [], token_logprobs: [], top_logprobs: [], text_offset: [] };
  let text = '';
  for await (const chunk of stream as unknown as AsyncIterable<OpenAI.Completion>) {
    const ch = chunk.choices[0];
    text += ch.text;
    const lp = ch.logprobs as Logprobs | null;
    if (!lp) continue;
    got.tokens.push(...lp.tokens);
    got.token_logprobs.push(...lp.token_logprobs);
    got.top_logprobs.push(...lp.top_logprobs);
    got.text_offset.push(...lp.text_offset);
  }
  expect(text).toBe(whole.choices[0].text);
  expect(got).toEqual(whole.choices[0].logprobs);
});

test('chat logprobs: content entries with bytes and top_logprobs; streamed the same', async () => {
  const body = { model: 'demo', messages: [{ role: 'user' as const, content: 'hello' }], max_tokens: 6, temperature: 0, logprobs: true, top_logprobs: 2, ignore_eos: true };
  const r = await client.chat.completions.create(body as never);
  const content = r.choices[0].logprobs!.content!;
  expect(content).toHaveLength(r.usage!.completion_tokens);
  for (const e of content) {
    expect(e.top_logprobs).toHaveLength(2);
    expect(e.top_logprobs[0].logprob).toBe(e.logprob);
    expect(e.bytes!.length).toBeGreaterThan(0);
    expect(e.logprob).toBeLessThanOrEqual(0);
  }
  const stream = await client.chat.completions.create({ ...body, stream: true } as never);
  const streamed: typeof content = [];
  for await (const chunk of stream as unknown as AsyncIterable<OpenAI.ChatCompletionChunk>) streamed.push(...(chunk.choices[0]?.logprobs?.content ?? []));
  // The same tokens; logprobs equal to rounding (this request's prompt K/V came from the prefix cache).
  const logprobsOf = (c: typeof content) => c.flatMap((e) => [e.logprob, ...e.top_logprobs.map((t) => t.logprob)]);
  const tokensOf = (c: typeof content) => JSON.stringify(c, (k, v) => (k === 'logprob' ? undefined : v));
  expect(tokensOf(streamed)).toBe(tokensOf(content));
  logprobsOf(streamed).forEach((x, i) => expect(x).toBeCloseTo(logprobsOf(content)[i], 4));
  // Without logprobs the field stays null; top_logprobs alone is a 400 naming it.
  const plain = await client.chat.completions.create({ ...body, logprobs: undefined, top_logprobs: undefined } as never);
  expect(plain.choices[0].logprobs).toBeNull();
  await expect(client.chat.completions.create({ ...body, logprobs: false } as never)).rejects.toMatchObject({ status: 400, param: 'top_logprobs' });
  const zero = await client.chat.completions.create({ ...body, logprobs: undefined, top_logprobs: 0 } as never); // neutral: accepted
  expect(zero.choices[0].logprobs).toBeNull();
});

test('penalties reach the sampler: a strong repetition penalty changes greedy output', async () => {
  const body = { model: 'demo', prompt: PROMPT, max_tokens: 24, temperature: 0, ignore_eos: true };
  const plain = await client.completions.create(body as never);
  const penalised = await client.completions.create({ ...body, repetition_penalty: 10 } as never);
  const neutral = await client.completions.create({ ...body, repetition_penalty: 1, presence_penalty: 0, frequency_penalty: 0 } as never);
  expect(penalised.choices[0].text).not.toBe(plain.choices[0].text);
  expect(neutral.choices[0].text).toBe(plain.choices[0].text);
  const presence = await client.completions.create({ ...body, presence_penalty: 2, frequency_penalty: 2 } as never);
  expect(presence.choices[0].text).not.toBe(plain.choices[0].text);
});

describe('logit_bias, min_p, stop_token_ids, min_tokens', () => {
  const body = { model: 'demo', prompt: PROMPT, max_tokens: 8, temperature: 0, ignore_eos: true, return_token_ids: true };
  const ids = async (extra: object) => ((await client.completions.create({ ...body, ...extra } as never)).choices[0] as unknown as { token_ids: number[]; finish_reason: string });

  test('logit_bias +100 forces a token, -100 bans the greedy choice', async () => {
    const plain = await ids({});
    const forced = await ids({ logit_bias: { '42': 100 } });
    expect(forced.token_ids).toEqual(Array(8).fill(42));
    const banned = await ids({ logit_bias: { [String(plain.token_ids[0])]: -100 } });
    expect(banned.token_ids).not.toContain(plain.token_ids[0]);
  });

  test('stop_token_ids end a choice at that token (not in the output); min_tokens holds them off', async () => {
    const plain = await ids({});
    const stopAt = plain.token_ids[3];
    const first = plain.token_ids.indexOf(stopAt);
    const stopped = await ids({ stop_token_ids: [stopAt] });
    expect(stopped.finish_reason).toBe('stop');
    expect(stopped.token_ids).toEqual(plain.token_ids.slice(0, first));
    const held = await ids({ stop_token_ids: [plain.token_ids[0]], min_tokens: 3 });
    expect(held.token_ids.length).toBeGreaterThanOrEqual(3);
    expect(held.token_ids.slice(0, 3)).not.toContain(plain.token_ids[0]);
  });

  test('min_p 1 at a high temperature is greedy', async () => {
    const plain = await ids({});
    const minP = await ids({ temperature: 1.5, min_p: 1, seed: 7 });
    expect(minP.token_ids).toEqual(plain.token_ids);
  });

  test('bad values are 400s naming the field', async () => {
    for (const [extra, param] of [
      [{ logit_bias: { abc: 1 } }, 'logit_bias'],
      [{ logit_bias: { '99999': 1 } }, 'logit_bias'],
      [{ logit_bias: { '5': 101 } }, 'logit_bias.5'],
      [{ logit_bias: { '5': 1, '05': 2 } }, 'logit_bias'],
      [{ logit_bias: Object.fromEntries(Array.from({ length: 1025 }, (_, i) => [String(i % 300) + '0'.repeat(Math.floor(i / 300)), 1])) }, 'logit_bias'],
      [{ stop_token_ids: [99999] }, 'stop_token_ids'],
      [{ min_tokens: 9 }, 'min_tokens'],
      [{ min_p: 1.5 }, 'min_p'],
    ] as const) {
      await expect(client.completions.create({ ...body, ...extra } as never)).rejects.toMatchObject({ status: 400, param });
    }
  });
});

describe('POST /tokenize and /detokenize (vLLM)', () => {
  const post = async (path: string, body: object) => {
    const res = await fetch(`${demo.server.url}${path}`, { method: 'POST', headers: { 'content-type': 'application/json' }, body: JSON.stringify(body) });
    return { status: res.status, json: (await res.json()) as any };
  };

  test('a prompt and chat messages tokenize as generation sees them; ids detokenize back', async () => {
    const t = await post('/tokenize', { prompt: PROMPT });
    expect(t.status).toBe(200);
    const gen = await client.completions.create({ model: 'demo', prompt: PROMPT, max_tokens: 1 });
    expect(t.json.count).toBe(gen.usage!.prompt_tokens);
    expect(t.json.tokens).toHaveLength(t.json.count);
    expect(t.json.max_model_len).toBe(demo.engine.config.maxPositionEmbeddings);
    expect((await post('/detokenize', { tokens: t.json.tokens })).json).toEqual({ prompt: PROMPT });
    const bare = await post('/tokenize', { prompt: PROMPT, add_special_tokens: false });
    expect(bare.json.tokens).toEqual(t.json.tokens.slice(t.json.count - bare.json.count));

    const messages = [{ role: 'user', content: 'hello there' }];
    const chat = await client.chat.completions.create({ model: 'demo', messages: messages as never, max_tokens: 1 });
    expect((await post('/tokenize', { messages })).json.count).toBe(chat.usage!.prompt_tokens);
  });

  test('bad bodies are 400s naming the field; GET is a 405', async () => {
    expect((await post('/tokenize', { prompt: 'a', messages: [{ role: 'user', content: 'b' }] })).json.error.param).toBe('prompt');
    expect((await post('/tokenize', {})).status).toBe(400);
    const far = await post('/detokenize', { tokens: [1, 99999] });
    expect([far.status, far.json.error.param]).toEqual([400, 'tokens[1]']);
    expect((await fetch(`${demo.server.url}/tokenize`)).status).toBe(405);
  });
});
