// Log-probabilities in the two shapes OpenAI's API returns them:
//   completions: { tokens, token_logprobs, top_logprobs: {text: logprob} | null, text_offset }
//   chat:        { content: [{ token, logprob, bytes, top_logprobs: [{ token, logprob, bytes }] }] }
// A token's text is what it adds after the token before it (so SentencePiece's '▁' comes out as a
// space, as in the output text); a byte-fallback token's bytes are its one byte. A completion's
// text_offset counts into the text the choice returns, which has no special tokens ("<s>") and no
// space the decoder strips at the start: offsets advance by what a token adds to that text.
import type { TextTokenizer } from '../../core/tokenizer';
import type { LogprobEntry } from '../logprobs';

export interface TokenTexts {
  /** Texts of tokens following `prev` (the previous token of the sequence, if any); `prev` is decoded once. */
  after(prev: number | undefined): (id: number) => string;
  /** What a token adds to the returned text after `prev`: like after(), special tokens skipped. */
  shownAfter(prev: number | undefined): (id: number) => string;
  /**
   * shownAfter(prev)(id) given `text` = after(prev)(id): the same string unless `prev` or `id` is a
   * special token (the only ones skipping drops), so it is decoded again only then.
   */
  shown(prev: number | undefined, id: number, text: string): string;
  bytes(id: number, text: string): number[];
}

export function tokenTexts(tok: TextTokenizer): TokenTexts {
  const textsAfter = (skipSpecial: boolean) => (prev: number | undefined) => {
    const decode = (ids: number[]) => tok.decode(ids, { skipSpecial });
    if (prev === undefined) return (id: number) => decode([id]);
    const before = decode([prev]);
    return (id: number) => {
      const both = decode([prev, id]);
      return both.startsWith(before) ? both.slice(before.length) : decode([id]);
    };
  };
  const after = textsAfter(false);
  const shownAfter = textsAfter(true);
  return {
    after,
    shownAfter,
    shown: (prev, id, text) => (tok.isControl(id) || (prev !== undefined && tok.isControl(prev)) ? shownAfter(prev)(id) : text),
    bytes(id, text) {
      const b = tok.byteValue(id);
      return b !== null ? [b] : [...Buffer.from(text, 'utf8')];
    },
  };
}

export interface CompletionLogprobs {
  tokens: string[];
  token_logprobs: (number | null)[];
  top_logprobs: (Record<string, number> | null)[];
  text_offset: number[];
}

/**
 * Entries of consecutive tokens (null: the first prompt token, which has none), `prev` the token
 * before the first, `offset` where the first token's text starts in the choice's text; `end` is
 * where the text after the last token starts (the next part's offset). vLLM's convention: each
 * position's top_logprobs holds its alternatives and the chosen token.
 */
export function completionLogprobs(
  texts: TokenTexts,
  ids: readonly number[],
  entries: readonly (LogprobEntry | null)[],
  prev: number | undefined,
  offset: number,
): { logprobs: CompletionLogprobs; end: number } {
  const out: CompletionLogprobs = { tokens: [], token_logprobs: [], top_logprobs: [], text_offset: [] };
  ids.forEach((id, i) => {
    const before = i > 0 ? ids[i - 1] : prev;
    const after = texts.after(before);
    const text = after(id);
    const e = entries[i];
    out.tokens.push(text);
    out.token_logprobs.push(e ? e.logprob : null);
    if (e) {
      const top: Record<string, number> = {};
      for (const t of e.top) top[t.id === id ? text : after(t.id)] ??= t.logprob;
      top[text] ??= e.logprob;
      out.top_logprobs.push(top);
    } else out.top_logprobs.push(null);
    out.text_offset.push(offset);
    offset += texts.shown(before, id, text).length;
  });
  return { logprobs: out, end: offset };
}

export interface ChatTokenLogprob {
  token: string;
  logprob: number;
  bytes: number[];
  top_logprobs: { token: string; logprob: number; bytes: number[] }[];
}

export function chatLogprobs(texts: TokenTexts, entries: readonly LogprobEntry[], prev: number | undefined): { content: ChatTokenLogprob[] } {
  return {
    content: entries.map((e, i) => {
      const after = texts.after(i > 0 ? entries[i - 1].id : prev);
      const one = (id: number, logprob: number) => {
        const token = after(id);
        return { token, logprob, bytes: texts.bytes(id, token) };
      };
      return { ...one(e.id, e.logprob), top_logprobs: e.top.map((t) => one(t.id, t.logprob)) };
    }),
  };
}
