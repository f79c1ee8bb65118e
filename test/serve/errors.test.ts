// Errors as OpenAI error objects with the right status, through the official client,
// plus the server's behaviour under load and disconnects, on a small demo model.
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import OpenAI from 'openai';
import { makeDemoModel } from '../../core/demo-model';
import type { Engine } from '../../coordinator/engine';
import { loadTestEngine, serve, waitFor, type TestServer } from './helpers';

const DEMO = { layers: 2, hidden: 64, intermediate: 128, heads: 4, kvHeads: 2, experts: 4, topK: 2, vocab: 300, predictorRank: 16, shards: 2 };

let dir: string;
let engine: Engine;
let srv: TestServer;
let client: OpenAI;

beforeAll(async () => {
  dir = fs.mkdtempSync(path.join(os.tmpdir(), 'ts-serve-'));
  await makeDemoModel(dir, DEMO);
  engine = await loadTestEngine(dir);
  srv = await serve(engine, { modelName: 'demo' });
  client = new OpenAI({ apiKey: 'unused', baseURL: `${srv.url}/v1`, maxRetries: 0 });
});
afterAll(async () => {
  await srv?.close();
  await engine?.close();
  fs.rmSync(dir, { recursive: true, force: true });
});

async function post(url: string, body: string | object, headers: Record<string, string> = {}): Promise<{ status: number; json: any }> {
  const res = await fetch(url, {
    method: 'POST',
    headers: { 'content-type': 'application/json', ...headers },
    body: typeof body === 'string' ? body : JSON.stringify(body),
  });
  return { status: res.status, json: await res.json() };
}

/** The client's error for a request (the official client maps statuses to classes). */
async function errorOf(p: Promise<unknown>): Promise<InstanceType<typeof OpenAI.APIError>> {
  try {
    await p;
  } catch (e) {
    if (e instanceof OpenAI.APIError) return e;
    throw e;
  }
  throw new Error('expected the request to fail');
}

describe('bad requests are 400s that name the field', () => {
  test.each([
    [{ prompt: 'hi', temperature: 'hot' }, 'temperature'],
    [{ prompt: 'hi', max_tokens: -1 }, 'max_tokens'],
    [{ prompt: 'hi', top_p: 0 }, 'top_p'],
    [{ prompt: 'hi', n: 0 }, 'n'],
    [{ prompt: 'hi', stop: [1, 2] }, 'stop'],
    [{ prompt: 'hi', logprobs: 21 }, 'logprobs'],
    [{ prompt: 'hi', echo: 'yes' }, 'echo'],
    [{ prompt: 'hi', presence_penalty: 2.5 }, 'presence_penalty'],
    [{ prompt: 'hi', repetition_penalty: 0 }, 'repetition_penalty'],
    [{}, 'prompt'],
    [{ prompt: {} }, 'prompt'],
    [{ prompt: [1, -4] }, 'prompt[1]'],
    [{ prompt: [[1, 2], []] }, 'prompt[1]'],
    [{ prompt: [5, 99999] }, 'prompt'],
  ])('%j -> param %s', async (body, param) => {
    const e = await errorOf(client.completions.create({ model: 'demo', ...body } as never));
    expect(e).toBeInstanceOf(OpenAI.BadRequestError);
    expect(e.status).toBe(400);
    expect(e.param).toBe(param);
    expect(e.type).toBe('invalid_request_error');
    expect(e.message).toContain(param.replace(/\[.*$/, ''));
  });

  test('chat: a missing messages field, a bad role, a non-text part', async () => {
    for (const [body, param] of [
      [{}, 'messages'],
      [{ messages: [{ role: 'robot', content: 'x' }] }, 'messages[0].role'],
      [{ messages: [{ role: 'user', content: [{ type: 'image_url', image_url: { url: 'x' } }] }] }, 'messages[0].content[0]'],
    ] as const) {
      const e = await errorOf(client.chat.completions.create({ model: 'demo', ...body } as never));
      expect(e.status).toBe(400);
      expect(e.param).toBe(param);
    }
  });

  test('not JSON, not an object, empty: 400 with an OpenAI error object', async () => {
    for (const body of ['{"prompt": ', '[1,2]', '']) {
      const r = await post(`${srv.url}/v1/completions`, body);
      expect(r.status).toBe(400);
      expect(r.json.error).toEqual(expect.objectContaining({ type: 'invalid_request_error', message: expect.any(String) }));
    }
  });

  test('a prompt beyond the context is a 400 context_length_exceeded; prompt + max_tokens too', async () => {
    const ctx = engine.config.maxPositionEmbeddings;
    const long = await errorOf(client.completions.create({ model: 'demo', prompt: Array(ctx).fill(5), max_tokens: 1 }));
    expect(long.status).toBe(400);
    expect(long.code).toBe('context_length_exceeded');
    const over = await errorOf(client.completions.create({ model: 'demo', prompt: [1, 5, 6], max_tokens: ctx }));
    expect(over.status).toBe(400);
    expect(over.param).toBe('max_tokens');
    expect(over.code).toBe('context_length_exceeded');
  });

  test('a body over the size limit is a 413', async () => {
    const r = await post(`${srv.url}/v1/completions`, { prompt: 'x'.repeat(17 * 2 ** 20) });
    expect(r.status).toBe(413);
    expect(r.json.error.code).toBe('request_too_large');
  });

  test('an unknown model is a 404, an unknown route a 404, a wrong method a 405', async () => {
    const e = await errorOf(client.completions.create({ model: 'gpt-17', prompt: 'hi' }));
    expect(e).toBeInstanceOf(OpenAI.NotFoundError);
    expect(e.code).toBe('model_not_found');
    // A client value with a line break is quoted with its escapes visible: the message stays one line.
    const odd = await post(`${srv.url}/v1/completions`, { model: 'a\nb\u2028c', prompt: 'hi' });
    expect(odd.status).toBe(404);
    expect(odd.json.error.message).toBe('model: "a\\nb\\u2028c" is not served here; this server serves "demo"');
    expect((await fetch(`${srv.url}/v1/nothing`)).status).toBe(404);
    expect((await fetch(`${srv.url}/v1/completions`)).status).toBe(405);
  });

  test('the server survives all of it', async () => {
    const r = await client.completions.create({ model: 'demo', prompt: 'hello', max_tokens: 4, temperature: 0 });
    expect(r.choices[0].finish_reason).toMatch(/^(length|stop)$/);
  });
});

test('401 without the API key when one is set; health stays open', async () => {
  const locked = await serve(engine, { apiKey: 'sekret', modelName: 'demo' });
  try {
    const bad = new OpenAI({ apiKey: 'wrong', baseURL: `${locked.url}/v1`, maxRetries: 0 });
    const e = await errorOf(bad.models.list());
    expect(e).toBeInstanceOf(OpenAI.AuthenticationError);
    expect(e.code).toBe('invalid_api_key');
    expect((await fetch(`${locked.url}/v1/models`)).status).toBe(401);
    const good = new OpenAI({ apiKey: 'sekret', baseURL: `${locked.url}/v1`, maxRetries: 0 });
    expect((await good.completions.create({ model: 'demo', prompt: 'hi', max_tokens: 2 })).choices).toHaveLength(1);
    expect((await fetch(`${locked.url}/health`)).status).toBe(200);
  } finally {
    await locked.close();
  }
});

test('503 from /ready and generation while experts are missing', async () => {
  let ready = false;
  const s = await serve(engine, { ready: () => ready, modelName: 'demo' });
  try {
    const c = new OpenAI({ apiKey: 'x', baseURL: `${s.url}/v1`, maxRetries: 0 });
    expect((await fetch(`${s.url}/ready`)).status).toBe(503);
    const e = await errorOf(c.completions.create({ model: 'demo', prompt: 'hi', max_tokens: 2 }));
    expect(e.status).toBe(503);
    expect(e.code).toBe('experts_unavailable');
    ready = true;
    expect((await fetch(`${s.url}/ready`)).status).toBe(200);
    expect((await c.completions.create({ model: 'demo', prompt: 'hi', max_tokens: 2 })).choices).toHaveLength(1);
  } finally {
    await s.close();
  }
});

test('when the KV budget is full requests wait in a bounded queue; beyond it 429', async () => {
  const prompt = [1, 10, 11, 12];
  const maxTokens = 4000;
  const one = engine.kvBytesFor(prompt.length + maxTokens);
  // kvGrowTokens = maxTokens: the first request's cache holds all it can need from the start, filling the budget.
  const s = await serve(engine, { scheduler: { kvBudgetBytes: one, kvGrowTokens: maxTokens, maxQueue: 1 }, modelName: 'demo' });
  const c = new OpenAI({ apiKey: 'x', baseURL: `${s.url}/v1`, maxRetries: 0 });
  try {
    const body = { model: 'demo', prompt, max_tokens: maxTokens, ignore_eos: true } as OpenAI.CompletionCreateParamsNonStreaming;
    const first = new AbortController();
    const a = c.completions.create(body, { signal: first.signal }).catch((e) => e);
    await waitFor(() => s.scheduler.stats.running === 1, 10000, 'the first request to run');
    const b = c.completions.create({ ...body, max_tokens: 5 }).catch((e) => e);
    await waitFor(() => s.scheduler.stats.waiting === 1, 10000, 'the second request to wait');
    const e = await errorOf(c.completions.create({ ...body, max_tokens: 5 }));
    expect(e).toBeInstanceOf(OpenAI.RateLimitError);
    expect(e.status).toBe(429);
    expect(e.code).toBe('queue_full');
    // One that could never fit the KV budget is a 400 naming max_tokens, not a wait.
    const big = await errorOf(c.completions.create({ ...body, max_tokens: maxTokens + 50 }));
    expect(big.status).toBe(400);
    expect(big.param).toBe('max_tokens');
    expect(big.message).toMatch(/KV cache/);
    // The first one leaving (its client goes away) lets the waiting one run to completion.
    first.abort();
    const rb = await b;
    expect(rb.choices[0].finish_reason).toBe('length');
    expect(rb.usage.completion_tokens).toBe(5);
    expect(await a).toBeInstanceOf(Error);
    await waitFor(() => s.scheduler.stats.kvBytes === 0, 10000, 'the KV budget to be free');
  } finally {
    await s.close();
  }
});

test('chat without max_tokens generates what the KV budget holds (not a 400) when the context would not fit', async () => {
  const budgetTokens = 60;
  const s = await serve(engine, { scheduler: { kvBudgetBytes: engine.kvBytesFor(budgetTokens) }, modelName: 'demo' });
  try {
    const c = new OpenAI({ apiKey: 'x', baseURL: `${s.url}/v1`, maxRetries: 0 });
    // The full context (4096 tokens) is far beyond this budget.
    expect(engine.kvBytesFor(engine.config.maxPositionEmbeddings)).toBeGreaterThan(s.scheduler.opts.kvBudgetBytes);
    // Greedy: a sampled end-of-turn token (a chat stop besides EOS) would end it early, at random.
    const r = await c.chat.completions.create({ model: 'demo', messages: [{ role: 'user', content: 'hi' }], ignore_eos: true, temperature: 0 } as never);
    const done = r as OpenAI.ChatCompletion;
    expect(done.choices[0].finish_reason).toBe('length');
    expect(done.usage!.prompt_tokens + done.usage!.completion_tokens).toBe(budgetTokens);
    // An explicit max_tokens beyond the budget is still the 400 that names it.
    const e = await errorOf(c.chat.completions.create({ model: 'demo', messages: [{ role: 'user', content: 'hi' }], max_tokens: budgetTokens }));
    expect(e.status).toBe(400);
    expect(e.param).toBe('max_tokens');
  } finally {
    await s.close();
  }
});

test('a client that disconnects cancels its sequence (streaming and not) and frees its KV cache', async () => {
  const cancelled = () => srv.metrics.get('turbosparse_sequences_finished_total')!.json().series.find((x) => x.labels.reason === 'cancelled')?.value ?? 0;
  const before = cancelled();
  const ac = new AbortController();
  const stream = await client.completions.create(
    { model: 'demo', prompt: [1, 20, 21], max_tokens: 3500, stream: true, ignore_eos: true } as OpenAI.CompletionCreateParamsStreaming,
    { signal: ac.signal },
  );
  let chunks = 0;
  try {
    for await (const _ of stream) {
      if (++chunks === 3) ac.abort();
    }
  } catch {
    // the client may end the iteration quietly or with an abort error
  }
  expect(chunks).toBe(3);
  await waitFor(() => cancelled() === before + 1 && srv.scheduler.stats.running === 0, 10000, 'the stream to be cancelled');
  expect(srv.scheduler.stats.kvBytes).toBe(0);

  const ac2 = new AbortController();
  const p = client.completions.create({ model: 'demo', prompt: [1, 22], max_tokens: 3500, ignore_eos: true } as never, { signal: ac2.signal }).catch((e) => e);
  await waitFor(() => srv.scheduler.stats.running === 1, 10000, 'the request to start');
  ac2.abort();
  await p;
  await waitFor(() => cancelled() === before + 2 && srv.scheduler.stats.running === 0, 10000, 'the request to be cancelled');
  expect(srv.scheduler.stats.kvBytes).toBe(0);
});

test('the demo model chat template (tokenizer_config.json) and its <|im_end|> end the turn', async () => {
  const r = await client.chat.completions.create({ model: 'demo', messages: [{ role: 'user', content: 'hi' }], max_tokens: 20, temperature: 0 });
  expect(r.choices[0].message.content).not.toContain('<|im_end|>');
  const ids = srv.tokenizer.encode('<|im_start|>user\nhi<|im_end|>\n<|im_start|>assistant\n');
  expect(r.usage!.prompt_tokens).toBe(ids.length);
});
