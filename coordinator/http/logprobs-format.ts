// Log-probabilities in the two shapes OpenAI's API returns them:
//   completions: { tokens, token_logprobs, top_logprobs: {text: logprob} | null, text_offset }
//   chat:        { content: [{ token, logprob, bytes, top_logprobs: [{ token, logprob, bytes }] }] }
// A token's text is what it adds after the token before it (so SentencePiece's '▁' comes out as a
// space, as in the output text); a byte-fallback token's bytes are its one byte.
import type { TextTokenizer } from '../../core/tokenizer';
import type { LogprobEntry } from '../logprobs';

export interface TokenTexts {
  /** Text of `id` following `prev` (the previous token of the sequence, if any). */
  text(prev: number | undefined, id: number): string;
  bytes(id: number, text: string): number[];
}

export function tokenTexts(tok: TextTokenizer): TokenTexts {
  return {
    text(prev, id) {
      if (prev === undefined) return tok.decode([id], { skipSpecial: false });
      const before = tok.decode([prev], { skipSpecial: false });
      const both = tok.decode([prev, id], { skipSpecial: false });
      return both.startsWith(before) ? both.slice(before.length) : tok.decode([id], { skipSpecial: false });
    },
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
 * before the first, `offset` where the first token's text starts in the choice's text. vLLM's
 * convention: each position's top_logprobs holds its alternatives and the chosen token.
 */
export function completionLogprobs(
  texts: TokenTexts,
  ids: readonly number[],
  entries: readonly (LogprobEntry | null)[],
  prev: number | undefined,
  offset: number,
): CompletionLogprobs {
  const out: CompletionLogprobs = { tokens: [], token_logprobs: [], top_logprobs: [], text_offset: [] };
  ids.forEach((id, i) => {
    const before = i > 0 ? ids[i - 1] : prev;
    const text = texts.text(before, id);
    const e = entries[i];
    out.tokens.push(text);
    out.token_logprobs.push(e ? e.logprob : null);
    if (e) {
      const top: Record<string, number> = {};
      for (const t of [...e.top, e]) top[texts.text(before, t.id)] ??= t.logprob;
      out.top_logprobs.push(top);
    } else out.top_logprobs.push(null);
    out.text_offset.push(offset);
    offset += text.length;
  });
  return out;
}

export interface ChatTokenLogprob {
  token: string;
  logprob: number;
  bytes: number[];
  top_logprobs: { token: string; logprob: number; bytes: number[] }[];
}

export function chatLogprobs(texts: TokenTexts, entries: readonly LogprobEntry[], prev: number | undefined): { content: ChatTokenLogprob[] } {
  const one = (before: number | undefined, id: number, logprob: number) => {
    const token = texts.text(before, id);
    return { token, logprob, bytes: texts.bytes(id, token) };
  };
  return {
    content: entries.map((e, i) => {
      const before = i > 0 ? entries[i - 1].id : prev;
      return { ...one(before, e.id, e.logprob), top_logprobs: e.top.map((t) => one(before, t.id, t.logprob)) };
    }),
  };
}
