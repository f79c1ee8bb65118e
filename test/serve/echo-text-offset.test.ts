// completions echo + logprobs: text_offset counts into the text the choice returns (the prompt as
// given, then the generated text), not into the tokens' texts, which include "<s>".
import OpenAI from 'openai';
import { useDemoModel } from './helpers';

const demo = useDemoModel(undefined, { modelName: 'demo' });

const PROMPT = 'the quick brown fox';
type Logprobs = { tokens: string[]; text_offset: number[] };

/** Every token but the special ones is found at its offset, and the offsets end at the text's end. */
function expectOffsetsInto(text: string, lp: Logprobs, special: Set<string>): void {
  let last = 0;
  lp.tokens.forEach((t, i) => {
    const at = lp.text_offset[i];
    expect(at).toBeGreaterThanOrEqual(last);
    last = at;
    if (special.has(t)) return;
    // The decoder strips the space a text starts with: the first token's '▁' is not in the text.
    const shown = at === 0 ? t.trimStart() : t;
    expect({ i, at, found: text.slice(at, at + shown.length) }).toEqual({ i, at, found: shown });
  });
  const n = lp.tokens.length;
  const lastShown = special.has(lp.tokens[n - 1]) ? '' : lp.tokens[n - 1];
  expect(lp.text_offset[n - 1] + lastShown.length).toBe(text.length);
}

test('echo + logprobs: offsets point into the returned text; the first generated token starts after the prompt', async () => {
  const body = { model: 'demo', prompt: PROMPT, max_tokens: 5, temperature: 0, logprobs: 1, echo: true, ignore_eos: true };
  const r = await demo.client.completions.create(body as never);
  const c = r.choices[0];
  const lp = c.logprobs as unknown as Logprobs;
  const bos = demo.tokenizer.decode([demo.tokenizer.encode('x')[0]], { skipSpecial: false });
  expect(lp.tokens[0]).toBe(bos); // the echoed prompt starts with <s>, which is not in the text
  expect(c.text.startsWith(PROMPT)).toBe(true);
  expect(lp.text_offset[0]).toBe(0);
  expect(lp.text_offset[1]).toBe(0); // "the" is the text's first word, not 4 characters in
  const promptTokens = r.usage!.prompt_tokens;
  expect(lp.text_offset[promptTokens]).toBe(PROMPT.length);
  expectOffsetsInto(c.text, lp, new Set([bos]));

  // Streamed: the same offsets, chunk by chunk.
  const stream = await demo.client.completions.create({ ...body, stream: true } as never);
  const offsets: number[] = [];
  for await (const chunk of stream as unknown as AsyncIterable<OpenAI.Completion>) {
    offsets.push(...(((chunk.choices[0]?.logprobs as unknown as Logprobs | null)?.text_offset) ?? []));
  }
  expect(offsets).toEqual(lp.text_offset);
});

test('a prompt of token ids echoes their decoded text, and offsets point into it', async () => {
  const ids = demo.tokenizer.encode('brown fox the quick');
  const r = await demo.client.completions.create({ model: 'demo', prompt: ids, max_tokens: 3, temperature: 0, logprobs: 0, echo: true, ignore_eos: true } as never);
  const c = r.choices[0];
  const bos = demo.tokenizer.decode([ids[0]], { skipSpecial: false });
  expectOffsetsInto(c.text, c.logprobs as unknown as Logprobs, new Set([bos]));
});
