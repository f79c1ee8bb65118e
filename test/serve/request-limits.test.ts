// The one place a request is checked against the model and the server: the same request is
// refused with the engine's/scheduler's message, or with the API's (naming the client's fields,
// OpenAI's code), and the API's "KV budget holds N generated tokens" agrees with the bytes.
import { UserError } from '../../core/errors';
import { RequestLimitError, RequestLimits, checkPrompt, type LimitsEngine } from '../../coordinator/request-limits';

const config = { vocabSize: 100, maxPositionEmbeddings: 64 };
/** KV bytes are 40 per position, as the engine's are linear in the positions. */
const engine = {
  config,
  kvBytesFor: (tokens: number) => 40 * tokens,
  kvTokensLimit: (prompt: number, max: number) => Math.min(config.maxPositionEmbeddings, prompt + Math.max(0, max)),
} as unknown as LimitsEngine;
const fields = { prompt: 'messages', maxTokens: 'max_completion_tokens' };
const ids = (n: number) => Array.from({ length: n }, (_, i) => 1 + (i % 50));

function thrown(f: () => void): RequestLimitError {
  try {
    f();
  } catch (e) {
    expect(e).toBeInstanceOf(RequestLimitError);
    expect(e).toBeInstanceOf(UserError);
    return e as RequestLimitError;
  }
  throw new Error('expected a RequestLimitError');
}

test('a prompt is refused the same way by both callers, worded for each', () => {
  for (const [prompt, internal, api, code] of [
    [[], /^prompt is empty: give at least one token$/, /^messages: the prompt is empty$/, null],
    [[1, 100], /^prompt token id 100 is outside the vocabulary \(0\.\.99\)$/, /^messages: token id 100 is outside the vocabulary \(0\.\.99\)$/, null],
    [ids(64), /^prompt has 64 tokens; the model's context is 64: shorten the prompt$/, /^messages: this model's maximum context length is 64 tokens, but the prompt has 64 tokens/, 'context_length_exceeded'],
  ] as const) {
    expect(thrown(() => checkPrompt(config, prompt)).message).toMatch(internal);
    const e = thrown(() => checkPrompt(config, prompt, 'messages'));
    expect([e.message, e.param, e.code]).toEqual([expect.stringMatching(api), 'messages', code]);
  }
  expect(() => checkPrompt(config, ids(63))).not.toThrow();
});

test('prompt + max_tokens beyond the context is refused by the API only (the scheduler stops at the context)', () => {
  const limits = new RequestLimits(engine, 40 * 1000);
  expect(() => limits.check(ids(60), 10)).not.toThrow();
  const e = thrown(() => limits.check(ids(60), 10, fields));
  expect([e.param, e.code]).toEqual(['max_completion_tokens', 'context_length_exceeded']);
  expect(e.message).toMatch(/you requested 70 \(60 in the prompt, 10 to generate\)/);
});

test('the KV budget: refused exactly when prompt + max_tokens needs more bytes than it holds, by both callers', () => {
  const limits = new RequestLimits(engine, 40 * 30 + 7);
  expect(limits.maxTokensFitting(10)).toBe(20);
  expect(limits.maxTokensFitting(31)).toBe(-1);
  for (let prompt = 1; prompt < 40; prompt++) {
    for (let max = 0; prompt + max <= 63; max++) {
      const over = 40 * (prompt + max) > limits.kvBudgetBytes;
      const check = (f?: typeof fields) => () => limits.check(ids(prompt), max, f);
      if (!over) {
        expect(check()).not.toThrow();
        expect(check(fields)).not.toThrow();
        continue;
      }
      expect(thrown(check()).message).toMatch(/^max_tokens: the request needs .* of KV cache/);
      const e = thrown(check(fields));
      if (prompt > 30) expect([e.param, e.message]).toEqual(['messages', expect.stringMatching(/alone need more KV cache/)]);
      else expect([e.param, e.message]).toEqual(['max_completion_tokens', expect.stringMatching(`holds ${30 - prompt} generated tokens after this prompt of ${prompt} tokens, but ${max} were requested`)]);
    }
  }
});

test('max_tokens must be a count', () => {
  const limits = new RequestLimits(engine, 40 * 1000);
  expect(thrown(() => limits.check([1], -1)).message).toBe('max_tokens must be a non-negative integer, got -1');
  expect(thrown(() => limits.check([1], 1.5)).message).toBe('max_tokens must be a non-negative integer, got 1.5');
});
