// What bounds a client's hold on the server: request and header timeouts, the connection
// cap, a request that can never fit (400, not a 429 to retry), and how requests a client
// gave up on are counted.
import { parsePrometheusText } from '../helpers/prometheus';
import { serve, SMALL_DEMO, useDemoModel, waitFor, type TestServer } from './helpers';
import { rawExchange, statusOf } from './raw-http';
import net from 'node:net';

const ctx = useDemoModel(SMALL_DEMO);

async function post(url: string, body: object): Promise<{ status: number; json: any }> {
  const res = await fetch(url, { method: 'POST', headers: { 'content-type': 'application/json' }, body: JSON.stringify(body) });
  return { status: res.status, json: await res.json() };
}

function counter(s: TestServer, name: string, labels: Record<string, string> = {}): number | undefined {
  const f = parsePrometheusText(s.metrics.text()).get(name);
  return f?.samples.find((x) => Object.entries(labels).every(([k, v]) => x.labels[k] === v))?.value;
}

test('a request whose headers or body stop coming is answered 408 and closed after the timeout, not held for minutes', async () => {
  const s = await serve(ctx.engine, { http: { requestTimeoutMs: 1500, headersTimeoutMs: 800 } });
  try {
    const [headers, body] = await Promise.all([
      rawExchange(s.url, 'POST /v1/completions HTTP/1.1\r\nHost: x\r\n', 15000),
      rawExchange(s.url, 'POST /v1/completions HTTP/1.1\r\nHost: x\r\ncontent-type: application/json\r\ncontent-length: 1000\r\n\r\n{"prompt":', 15000),
    ]);
    // Node's defaults (60 s for headers, 300 s for the request) would still hold both.
    expect(headers).toMatchObject({ closed: true });
    expect(statusOf(headers)).toBe(408);
    expect(headers.ms).toBeLessThan(8000);
    expect(body).toMatchObject({ closed: true });
    expect(statusOf(body)).toBe(408);
    expect(body.ms).toBeGreaterThan(1000);
    expect(body.ms).toBeLessThan(9000);
    expect((await fetch(`${s.url}/health`)).status).toBe(200);
  } finally {
    await s.close();
  }
}, 30000);

test('connections beyond --max-connections are closed at once; a freed slot serves again', async () => {
  const s = await serve(ctx.engine, { http: { maxConnections: 2 } });
  const held: net.Socket[] = [];
  try {
    for (let i = 0; i < 2; i++) {
      const sock = net.connect(Number(new URL(s.url).port), '127.0.0.1');
      await new Promise((r) => sock.once('connect', r));
      held.push(sock);
    }
    const count = () => new Promise<number>((r) => s.http.server.getConnections((_e, n) => r(n)));
    await waitFor(async () => (await count()) === 2, 5000, 'two connections');
    const refused = await rawExchange(s.url, 'GET /health HTTP/1.1\r\nHost: x\r\n\r\n', 5000);
    expect(refused.closed).toBe(true);
    expect(refused.text).toBe('');
    held.pop()!.destroy();
    await waitFor(async () => (await count()) === 1, 5000, 'the freed connection');
    const ok = await rawExchange(s.url, 'GET /health HTTP/1.1\r\nHost: x\r\nconnection: close\r\n\r\n', 5000);
    expect(statusOf(ok)).toBe(200);
  } finally {
    held.forEach((h) => h.destroy());
    await s.close();
  }
});

test('a request that can never fit is a 400 naming n, not a 429 to retry', async () => {
  const engine = ctx.engine;
  // 1 running + 1 waiting at most, by the KV budget: each first cache is 200 positions of 300.
  const s = await serve(engine, { scheduler: { kvBudgetBytes: engine.kvBytesFor(300), kvGrowTokens: 256, maxQueue: 1, maxRunning: 8 } });
  try {
    const many = await post(`${s.url}/v1/completions`, { prompt: Array.from({ length: 5000 }, () => 'hi'), max_tokens: 1 });
    expect(many.status).toBe(400);
    expect(many.json.error).toMatchObject({ param: 'n', type: 'invalid_request_error' });
    expect(many.json.error.message).toMatch(/5000 sequences .*at most 9 at once/);
    const prompt = Array.from({ length: 100 }, (_, i) => 10 + i);
    const kv = await post(`${s.url}/v1/completions`, { prompt, n: 3, max_tokens: 100, ignore_eos: true });
    expect(kv.status).toBe(400);
    expect(kv.json.error.param).toBe('n');
    expect(kv.json.error.message).toMatch(/3 sequences .*starts only 1 of them at once/);
    // Two fit (one runs, one waits): that is served.
    const two = await post(`${s.url}/v1/completions`, { prompt, n: 2, max_tokens: 2, ignore_eos: true });
    expect(two.status).toBe(200);
    expect(two.json.choices).toHaveLength(2);
    expect(counter(s, 'turbosparse_queue_full_rejections_total')).toBe(0);
  } finally {
    await s.close();
  }
});

test('requests whose client went away are counted as cancelled; step_errors and queue_full_rejections start at 0', async () => {
  const s = await serve(ctx.engine);
  try {
    const text = s.metrics.text();
    expect(counter(s, 'turbosparse_step_errors_total')).toBe(0);
    expect(counter(s, 'turbosparse_queue_full_rejections_total')).toBe(0);
    expect(text).toMatch(/^turbosparse_step_errors_total 0$/m);
    const body = { prompt: [1, 5, 6], max_tokens: 2000, ignore_eos: true };
    // A stream left after its first chunk, and a plain request left while it generates.
    const stream = new AbortController();
    const res = await fetch(`${s.url}/v1/completions`, {
      method: 'POST', headers: { 'content-type': 'application/json' }, body: JSON.stringify({ ...body, stream: true }), signal: stream.signal,
    });
    expect(res.status).toBe(200);
    await res.body!.getReader().read();
    stream.abort();
    const cancelled = () => counter(s, 'turbosparse_http_requests_total', { route: '/v1/completions', status: 'cancelled' });
    await waitFor(() => cancelled() === 1 && s.scheduler.stats.running === 0, 10000, 'the stream counted and its sequence ended');
    const plain = new AbortController();
    const pending = fetch(`${s.url}/v1/completions`, {
      method: 'POST', headers: { 'content-type': 'application/json' }, body: JSON.stringify(body), signal: plain.signal,
    }).catch(() => undefined);
    await waitFor(() => s.scheduler.stats.running === 1, 10000, 'the plain request to run');
    plain.abort();
    await pending;
    await waitFor(() => cancelled() === 2, 10000, 'two cancelled requests counted');
    expect(counter(s, 'turbosparse_http_requests_total', { route: '/v1/completions', status: '200' })).toBeUndefined();
    await waitFor(() => s.scheduler.stats.running === 0, 10000, 'both sequences cancelled');
  } finally {
    await s.close();
  }
});

test('a client that leaves while its prompts are tokenized gets nothing generated', async () => {
  const s = await serve(ctx.engine);
  try {
    // 20 prompts of ~4000 tokens: tokenized in the worker thread for a while.
    const prompt = Array.from({ length: 20 }, (_, i) => `${i} ` + 'the model reads a prompt. '.repeat(150));
    const gone = new AbortController();
    const pending = fetch(`${s.url}/v1/completions`, {
      method: 'POST', headers: { 'content-type': 'application/json' }, body: JSON.stringify({ prompt, max_tokens: 50 }), signal: gone.signal,
    }).catch(() => undefined);
    await new Promise((r) => setTimeout(r, 60));
    gone.abort();
    await pending;
    await waitFor(() => counter(s, 'turbosparse_http_requests_total', { route: '/v1/completions', status: 'cancelled' }) === 1, 10000, 'the request counted');
    await new Promise((r) => setTimeout(r, 1500)); // tokenizing ends meanwhile
    expect(counter(s, 'turbosparse_prompt_tokens_total') ?? 0).toBe(0);
    expect(counter(s, 'turbosparse_generated_tokens_total') ?? 0).toBe(0);
  } finally {
    await s.close();
  }
});
