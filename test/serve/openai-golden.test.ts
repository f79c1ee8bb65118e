// The official `openai` client, unchanged, against `turbosparse serve` on tiny-a:
// greedy tokens equal the model authors' golden continuations, alone and batched,
// streamed and not; chat, n, seeds, stop strings, usage.
import OpenAI from 'openai';
import type { Engine } from '../../coordinator/engine';
import { describeGolden, goldenJson, TINY_A_MODEL } from '../helpers/golden';
import { loadTestEngine, serve, type TestServer } from './helpers';

type WithIds = { token_ids: number[]; prompt_token_ids: number[] };

describeGolden('openai client against serve on tiny-a (golden)', () => {
  // Read in beforeAll: jest runs a skipped describe's body too, and the folder may be absent.
  let golden: ReturnType<typeof goldenJson>;
  let engine: Engine;
  let srv: TestServer;
  let client: OpenAI;
  beforeAll(async () => {
    golden = goldenJson();
    engine = await loadTestEngine(TINY_A_MODEL);
    srv = await serve(engine, { modelName: 'tiny-a' });
    client = new OpenAI({ apiKey: 'unused', baseURL: `${srv.url}/v1`, maxRetries: 0 });
  });
  afterAll(async () => {
    await srv?.close();
    await engine?.close();
  });

  const ask = (ids: number[], extra: Record<string, unknown> = {}) =>
    client.completions.create({
      model: 'tiny-a',
      prompt: ids,
      max_tokens: 12,
      temperature: 0,
      return_token_ids: true,
      ...extra,
    } as OpenAI.CompletionCreateParamsNonStreaming);

  test('greedy tokens equal the golden ones for every prompt, sent together (one batch)', async () => {
    const steps: number[] = [];
    srv.scheduler.onStep = (s) => steps.push(s.rows);
    const all = await Promise.all(golden.prompts.map((p) => ask(p.ids)));
    srv.scheduler.onStep = null;
    all.forEach((r, i) => {
      const c = r.choices[0] as typeof r.choices[0] & WithIds;
      expect(c.token_ids).toEqual(golden.prompts[i].greedy);
      expect(c.prompt_token_ids).toEqual(golden.prompts[i].ids);
      expect(c.finish_reason).toBe('length');
      expect(c.text).toBe(srv.tokenizer.decode(golden.prompts[i].greedy));
      expect(r.usage).toEqual({ prompt_tokens: golden.prompts[i].ids.length, completion_tokens: 12, total_tokens: golden.prompts[i].ids.length + 12 });
      expect(r.object).toBe('text_completion');
      expect(r.model).toBe('tiny-a');
    });
    // Decode steps carried all three sequences at once.
    expect(Math.max(...steps)).toBeGreaterThanOrEqual(3);
    expect(steps.filter((n) => n === 3).length).toBeGreaterThanOrEqual(8);
  });

  test('a list of token-id prompts gives one choice per prompt, in order', async () => {
    const r = await ask([], { prompt: golden.prompts.map((p) => p.ids) });
    expect(r.choices.map((c) => c.index)).toEqual([0, 1, 2]);
    r.choices.forEach((c, i) => expect((c as typeof c & WithIds).token_ids).toEqual(golden.prompts[i].greedy));
    expect(r.usage!.prompt_tokens).toBe(golden.prompts.reduce((s, p) => s + p.ids.length, 0));
  });

  test('streaming: chunks in OpenAI format that add up to the same text, usage last', async () => {
    const p = golden.prompts[1];
    const stream = await client.completions.create({
      model: 'tiny-a',
      prompt: p.ids,
      max_tokens: 12,
      temperature: 0,
      stream: true,
      stream_options: { include_usage: true },
      return_token_ids: true,
    } as OpenAI.CompletionCreateParamsStreaming);
    let text = '';
    const ids: number[] = [];
    let finish: string | null = null;
    let usage: OpenAI.CompletionUsage | null | undefined;
    let chunks = 0;
    for await (const chunk of stream) {
      chunks++;
      expect(chunk.object).toBe('text_completion');
      if (chunk.usage) usage = chunk.usage;
      for (const c of chunk.choices) {
        text += c.text;
        ids.push(...((c as unknown as WithIds).token_ids ?? []));
        if (c.finish_reason) finish = c.finish_reason;
      }
    }
    expect(chunks).toBeGreaterThan(3);
    expect(ids).toEqual(p.greedy);
    expect(text).toBe(srv.tokenizer.decode(p.greedy));
    expect(finish).toBe('length');
    expect(usage).toEqual({ prompt_tokens: p.ids.length, completion_tokens: 12, total_tokens: p.ids.length + 12 });
  });

  test('the raw stream ends with data: [DONE]', async () => {
    const res = await fetch(`${srv.url}/v1/completions`, {
      method: 'POST',
      headers: { 'content-type': 'application/json' },
      body: JSON.stringify({ prompt: golden.prompts[0].ids, max_tokens: 3, temperature: 0, stream: true }),
    });
    expect(res.headers.get('content-type')).toMatch(/^text\/event-stream/);
    const body = await res.text();
    const events = body.split('\n\n').filter((e) => e.length > 0);
    expect(events.every((e) => e.startsWith('data: '))).toBe(true);
    expect(events[events.length - 1]).toBe('data: [DONE]');
  });

  test('a stop string cuts the text before it and finishes with "stop"', async () => {
    const p = golden.prompts[0];
    const full = srv.tokenizer.decode(p.greedy);
    // A stop string from the middle of the golden continuation.
    const at = Math.floor(full.length / 2);
    const stop = full.slice(at, at + 2);
    const cut = full.indexOf(stop);
    const r = await ask(p.ids, { stop: [stop, 'never-appears'] });
    expect(r.choices[0].text).toBe(full.slice(0, cut));
    expect(r.choices[0].finish_reason).toBe('stop');
    const ids = (r.choices[0] as unknown as WithIds).token_ids;
    expect(ids).toEqual(p.greedy.slice(0, ids.length));
    expect(ids.length).toBeLessThan(12);
    // Streaming holds back what could start a stop string: the streamed text is the same.
    const stream = await client.completions.create({ model: 'tiny-a', prompt: p.ids, max_tokens: 12, temperature: 0, stop, stream: true });
    let text = '';
    for await (const c of stream) text += c.choices[0]?.text ?? '';
    expect(text).toBe(full.slice(0, cut));
  });

  test('n and seed: n independent samples, reproducible with the same seed', async () => {
    const p = golden.prompts[2];
    const req = { prompt: p.ids, max_tokens: 8, temperature: 1.0, n: 3, seed: 1234 };
    const a = await ask(p.ids, req);
    const b = await ask(p.ids, req);
    expect(a.choices).toHaveLength(3);
    const ids = (r: typeof a) => r.choices.map((c) => (c as unknown as WithIds).token_ids);
    expect(ids(a)).toEqual(ids(b));
    expect(new Set(ids(a).map((x) => x.join(','))).size).toBeGreaterThan(1);
    expect(a.usage!.completion_tokens).toBe(24);
    expect(a.usage!.prompt_tokens).toBe(p.ids.length);
  });

  test('chat completions with ChatML (no template in tokenizer_config.json), streamed and not', async () => {
    const messages: OpenAI.ChatCompletionMessageParam[] = [
      { role: 'system', content: 'be brief' },
      { role: 'user', content: 'hello there' },
    ];
    const r = await client.chat.completions.create({ model: 'tiny-a', messages, max_tokens: 6, temperature: 0 });
    expect(r.object).toBe('chat.completion');
    expect(r.choices[0].message.role).toBe('assistant');
    expect(typeof r.choices[0].message.content).toBe('string');
    const expectedPrompt = srv.tokenizer.encode('<|im_start|>system\nbe brief<|im_end|>\n<|im_start|>user\nhello there<|im_end|>\n<|im_start|>assistant\n');
    expect(r.usage!.prompt_tokens).toBe(expectedPrompt.length);
    const stream = await client.chat.completions.create({ model: 'tiny-a', messages, max_tokens: 6, temperature: 0, stream: true });
    let content = '';
    let role: string | undefined;
    let finish: string | null = null;
    for await (const c of stream) {
      expect(c.object).toBe('chat.completion.chunk');
      role ??= c.choices[0]?.delta.role;
      content += c.choices[0]?.delta.content ?? '';
      finish = c.choices[0]?.finish_reason ?? finish;
    }
    expect(role).toBe('assistant');
    expect(content).toBe(r.choices[0].message.content);
    expect(finish).toBe(r.choices[0].finish_reason);
  });

  test('GET /v1/models, /health, /ready and /metrics', async () => {
    const models = await client.models.list();
    expect(models.data.map((m) => m.id)).toEqual(['tiny-a']);
    expect((await fetch(`${srv.url}/health`)).status).toBe(200);
    expect((await fetch(`${srv.url}/ready`)).status).toBe(200);
    const m = await fetch(`${srv.url}/metrics`);
    const text = await m.text();
    expect(text).toMatch(/^turbosparse_generated_tokens_total \d+/m);
    expect(text).toMatch(/turbosparse_http_requests_total\{route="\/v1\/completions",status="200"\} \d+/);
    expect(text).toMatch(/^turbosparse_scheduler_running_sequences 0$/m);
  });
});
