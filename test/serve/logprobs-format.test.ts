// completionLogprobs' token texts and text offsets: one decode of the token before and one of the
// pair per token (the shown text is the token's text unless a special token is involved), and the
// same answer as decoding the shown text separately, special tokens (BOS, EOS, ChatML) included.
import { makeDemoTokenizer } from '../../core/demo-tokenizer';
import { TextTokenizer } from '../../core/tokenizer';
import type { LogprobEntry } from '../../coordinator/logprobs';
import { completionLogprobs, tokenTexts, type CompletionLogprobs, type TokenTexts } from '../../coordinator/api/logprobs-format';

const demo = makeDemoTokenizer(1024);
const tok = TextTokenizer.fromJson(demo.tokenizerJson, demo.tokenizerConfig);

/** The reference: the shown text decoded on its own for every token (skipping special tokens). */
function reference(texts: TokenTexts, ids: number[], entries: (LogprobEntry | null)[], prev: number | undefined, offset: number): { logprobs: CompletionLogprobs; end: number } {
  const out: CompletionLogprobs = { tokens: [], token_logprobs: [], top_logprobs: [], text_offset: [] };
  ids.forEach((id, i) => {
    const before = i > 0 ? ids[i - 1] : prev;
    const text = texts.after(before)(id);
    const e = entries[i];
    out.tokens.push(text);
    out.token_logprobs.push(e ? e.logprob : null);
    if (e) {
      const top: Record<string, number> = {};
      for (const t of e.top) top[t.id === id ? text : texts.after(before)(t.id)] ??= t.logprob;
      top[text] ??= e.logprob;
      out.top_logprobs.push(top);
    } else out.top_logprobs.push(null);
    out.text_offset.push(offset);
    offset += texts.shownAfter(before)(id).length;
  });
  return { logprobs: out, end: offset };
}

const entry = (id: number, alts: number[]): LogprobEntry => ({ id, logprob: -0.5, top: alts.map((a, k) => ({ id: a, logprob: -1 - k })) });

test('the same tokens, top_logprobs and offsets as decoding the shown text separately, special tokens included', () => {
  const texts = tokenTexts(tok);
  const words = tok.encode('the quick brown fox, "ünïcödé" 123\n', { addBos: false });
  const bos = tok.bosId!;
  const eos = tok.eosIds[0];
  expect(tok.isControl(bos) && tok.isControl(eos) && tok.isControl(demo.imStartId)).toBe(true);
  const sequences: [number[], number | undefined][] = [
    [[bos, ...words], undefined],
    [[...words, eos], words[0]],
    [[demo.imStartId, ...words.slice(0, 4), demo.imEndId, bos, ...words.slice(4)], bos],
    [words, undefined],
    [[eos, eos, bos], eos],
  ];
  for (const [ids, prev] of sequences) {
    const entries = ids.map((id, i) => (i % 3 === 1 ? null : entry(id, [id, bos, words[i % words.length], eos])));
    for (const offset of [0, 7]) expect(completionLogprobs(texts, ids, entries, prev, offset)).toEqual(reference(texts, ids, entries, prev, offset));
  }
});

test('two decodes per token when no special token is involved; more only around one', () => {
  const texts = tokenTexts(tok);
  const words = tok.encode('a few plain words here', { addBos: false }).filter((id) => !tok.isControl(id));
  expect(words.length).toBeGreaterThan(3);
  const decode = jest.spyOn(tok, 'decode');
  try {
    completionLogprobs(texts, words, words.map(() => null), words[0], 0);
    expect(decode).toHaveBeenCalledTimes(2 * words.length);
    decode.mockClear();
    // Around a BOS both texts are needed: the token's and the shown one (which skips the BOS).
    completionLogprobs(texts, [words[0]], [null], tok.bosId!, 0);
    expect(decode).toHaveBeenCalledTimes(4);
  } finally {
    decode.mockRestore();
  }
});
