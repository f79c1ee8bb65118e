// Hostile request bodies for the fuzz suites (HTTP API, batch jobs): every API field with wrong
// types and extreme values. Seeded through the sampler's Rng so a run replays.
import type { Rng } from '../../coordinator/sampler';

/** Values of every kind a field should not have, and some it may. */
export function nasty(r: Rng): { value?: unknown; raw?: string; label: string } {
  const pick = <T>(xs: T[]): T => xs[Math.floor(r.next() * xs.length)];
  const n = Math.floor(r.next() * 22);
  switch (n) {
    case 0: return { value: pick([0, -1, 1, 1.5, -0.5, 2, 3, 128, 129, 4096, 65536, 2 ** 31, 2 ** 53 + 2, -(2 ** 53) - 2]), label: 'number' };
    case 1: return { value: pick([1e308, -1e308, Number.MAX_VALUE, Number.MIN_VALUE, 5e-324]), label: 'extreme number' };
    case 2: return { raw: pick(['1e999', '-1e999', '1e-999', '0.0000000000000000000000000001', '123456789012345678901234567890']), label: 'raw number' };
    case 3: return { raw: pick(['NaN', 'Infinity', '-Infinity', 'undefined', '01', '+1', '.5', '0x10']), label: 'invalid literal' };
    case 4: return { value: pick(['', 'NaN', 'Infinity', '-0', '1e999', '16', 'true', 'null']), label: 'numeric-ish string' };
    case 5: return { value: pick(['\u0000', '\ud800', '\udfff', '🦄'.repeat(500), '\u202eevil', '<|im_start|>system', '</s>', '\r\n', 'ä'.repeat(3000)]), label: 'unicode' };
    case 6: return { value: 'x'.repeat(pick([1000, 50_000, 200_000])), label: 'long string' };
    case 7: return { value: pick([true, false, null]), label: 'literal' };
    case 8: return { value: pick([[], [1, 2, 3], [-1], [1.5], ['a'], [null], [[]], [[1], ['a']], [{}], [true]]), label: 'small array' };
    case 9: return { value: Array.from({ length: pick([1000, 100_000]) }, () => pick([1, 7, 'a', 299])), label: 'huge array' };
    case 10: return { value: Array.from({ length: 20_000 }, (_, i) => i), label: 'many ids' };
    case 11: {
      const depth = pick([100, 5000, 100_000]);
      return { raw: '['.repeat(depth) + ']'.repeat(depth), label: `nested arrays ${depth}` };
    }
    case 12: {
      const depth = pick([100, 5000]);
      return { raw: '{"a":'.repeat(depth) + '1' + '}'.repeat(depth), label: `nested objects ${depth}` };
    }
    case 13: return { raw: pick(['{"__proto__":{"polluted":1}}', '{"constructor":{"prototype":{"x":1}}}', '{"toString":1}']), label: 'prototype keys' };
    case 14: return { value: pick([{}, { type: 'text', text: 'hi' }, { type: 'image_url' }, { role: 'user' }, { include_usage: 'yes' }]), label: 'object' };
    case 15: return { value: Object.fromEntries(Array.from({ length: pick([10, 2000, 50_000]) }, (_, i) => [String(i * 7), pick([1, -100, 100, 101, 'x'])])), label: 'big record' };
    case 16: return { value: [{ role: pick(['user', 'system', 'nobody', '', 5]), content: pick(['hi', null, 5, [], [{ type: 'text', text: 'x' }], [{ type: 'x' }]]) }], label: 'messages-ish' };
    case 17: return { value: Array.from({ length: pick([2, 100, 5000]) }, () => ({ role: 'user', content: 'hi' })), label: 'many messages' };
    case 18: return { value: Array.from({ length: pick([2, 600, 5000]) }, () => pick(['hi', [1, 2]])), label: 'many prompts' };
    case 19: return { value: [1, 2, pick([300, 299, 1e9, -3, 2 ** 31])], label: 'ids at the vocab edge' };
    case 20: return { value: undefined, label: 'removed' };
    default: return { value: 'demo-' + pick(['x', '', '\u0000']), label: 'model-ish' };
  }
}

export const FIELDS: Record<string, string[]> = {
  '/v1/completions': [
    'model', 'prompt', 'max_tokens', 'temperature', 'top_p', 'top_k', 'min_p', 'stop_token_ids', 'min_tokens', 'n', 'stop', 'seed', 'stream',
    'stream_options', 'return_token_ids', 'ignore_eos', 'user', 'presence_penalty', 'frequency_penalty', 'repetition_penalty', 'logit_bias',
    'echo', 'logprobs', 'best_of', 'suffix',
  ],
  '/v1/chat/completions': [
    'model', 'messages', 'max_tokens', 'max_completion_tokens', 'temperature', 'top_p', 'top_k', 'min_p', 'stop_token_ids', 'min_tokens', 'n',
    'stop', 'seed', 'stream', 'stream_options', 'return_token_ids', 'ignore_eos', 'presence_penalty', 'frequency_penalty', 'repetition_penalty',
    'logit_bias', 'logprobs', 'top_logprobs', 'tools', 'tool_choice', 'response_format',
  ],
  '/tokenize': ['model', 'prompt', 'messages', 'add_special_tokens'],
  '/detokenize': ['model', 'tokens'],
};

export const BASE: Record<string, Record<string, unknown>> = {
  '/v1/completions': { model: 'demo', prompt: 'hi', max_tokens: 2 },
  // Both limits: a mutated one leaves the other holding generation short.
  '/v1/chat/completions': { model: 'demo', messages: [{ role: 'user', content: 'hi' }], max_tokens: 2, max_completion_tokens: 2 },
  '/tokenize': { prompt: 'hi' },
  '/detokenize': { tokens: [1, 5, 6] },
};

/** The body of a case: the route's valid body with 1-3 fields replaced (raw values spliced into the text). */
export function mutatedBody(r: Rng, route: string): { text: string; label: string } {
  const body: Record<string, unknown> = { ...BASE[route] };
  const raws = new Map<string, string>();
  const labels: string[] = [];
  const count = 1 + Math.floor(r.next() * 3);
  const fields = FIELDS[route];
  for (let i = 0; i < count; i++) {
    const field = fields[Math.floor(r.next() * fields.length)];
    // Not both generation limits: that would generate up to the whole context.
    if ((field === 'max_tokens' && labels.some((l) => l.startsWith('max_completion_tokens'))) || (field === 'max_completion_tokens' && labels.some((l) => l.startsWith('max_tokens')))) continue;
    const v = nasty(r);
    labels.push(`${field}=${v.label}`);
    if (v.raw !== undefined) {
      raws.set(field, v.raw);
      body[field] = `@@RAW_${field}@@`;
    } else if (v.value === undefined) delete body[field];
    else body[field] = v.value;
  }
  let text = JSON.stringify(body);
  for (const [field, raw] of raws) text = text.replace(`"@@RAW_${field}@@"`, () => raw);
  return { text, label: labels.join(', ') };
}
