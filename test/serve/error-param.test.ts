// A 400 names the field the client actually sent (OpenAI's `param`), also for limits the
// server checks after validation (the KV budget), and a UserError's own param reaches the body.
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { makeDemoModel } from '../../core/demo-model';
import { UserError } from '../../core/errors';
import type { Engine } from '../../coordinator/engine';
import { toApiError } from '../../coordinator/api/errors';
import { loadTestEngine, serve, type TestServer } from './helpers';

const DEMO = { layers: 1, hidden: 32, intermediate: 64, heads: 2, kvHeads: 1, experts: 2, topK: 1, vocab: 300, predictorRank: 8, shards: 1 };
const BUDGET_TOKENS = 40;

let dir: string;
let engine: Engine;
let srv: TestServer;

beforeAll(async () => {
  dir = fs.mkdtempSync(path.join(os.tmpdir(), 'ts-error-param-'));
  await makeDemoModel(dir, DEMO);
  engine = await loadTestEngine(dir);
  srv = await serve(engine, { scheduler: { kvBudgetBytes: engine.kvBytesFor(BUDGET_TOKENS) }, modelName: 'demo' });
});
afterAll(async () => {
  await srv?.close();
  await engine?.close();
  fs.rmSync(dir, { recursive: true, force: true });
});

async function chat(body: object): Promise<{ status: number; error: { message: string; param: string | null; code: string | null } }> {
  const res = await fetch(`${srv.url}/v1/chat/completions`, {
    method: 'POST',
    headers: { 'content-type': 'application/json' },
    body: JSON.stringify({ model: 'demo', messages: [{ role: 'user', content: 'hi' }], ...body }),
  });
  return { status: res.status, error: ((await res.json()) as { error: never }).error };
}

describe('a chat request over the KV budget names the field it sent', () => {
  test('max_completion_tokens', async () => {
    const r = await chat({ max_completion_tokens: BUDGET_TOKENS });
    expect(r.status).toBe(400);
    expect(r.error.param).toBe('max_completion_tokens');
    expect(r.error.message).toMatch(/^max_completion_tokens: .*KV cache/);
    expect(r.error.message).toMatch(/lower max_completion_tokens/);
    expect(r.error.message).not.toMatch(/\bmax_tokens\b/);
  });

  test('max_tokens', async () => {
    const r = await chat({ max_tokens: BUDGET_TOKENS });
    expect(r.status).toBe(400);
    expect(r.error.param).toBe('max_tokens');
    expect(r.error.message).toMatch(/^max_tokens: .*KV cache/);
  });

  test('one that fits still runs', async () => {
    const r = await fetch(`${srv.url}/v1/chat/completions`, {
      method: 'POST',
      headers: { 'content-type': 'application/json' },
      body: JSON.stringify({ model: 'demo', messages: [{ role: 'user', content: 'hi' }], max_completion_tokens: 2, temperature: 0 }),
    });
    expect(r.status).toBe(200);
  });
});

test('a UserError that knows its field sets param; one that does not falls back to the message', () => {
  expect(toApiError(new UserError('the request needs more than fits', 'max_completion_tokens')).toJSON().error.param).toBe('max_completion_tokens');
  expect(toApiError(new UserError('max_tokens must be a non-negative integer, got -1')).toJSON().error.param).toBe('max_tokens');
  expect(toApiError(new UserError('something else')).toJSON().error.param).toBeNull();
});
