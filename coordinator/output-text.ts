// A sequence's output text: tokens decoded as they come (never a broken UTF-8 sequence), cut
// before the first stop string, and handed out in pieces that hold back a tail that could
// still become a stop string. Shared by the scheduler (serving) and generate() (one prompt).
import { StreamingDetokenizer, type TextTokenizer } from '../core/tokenizer';
import { mayStop, type StopCriteria } from './stop-criteria';

export class OutputText {
  /** Everything decoded so far (cut at a stop string once one matched). */
  text = '';
  /** A stop string matched: text is final. */
  stopMatched = false;
  /** Chars of text already handed out by take(). */
  private sent = 0;
  /** Stop strings are searched from here (past the text of the first min_tokens tokens). */
  private stopFrom = 0;
  private readonly detok: StreamingDetokenizer;
  private readonly stops: readonly string[];
  private readonly longestStop: number;

  constructor(
    tokenizer: TextTokenizer,
    promptIds: number[],
    /** Its stop strings; the text of the first minTokens tokens cannot stop it, nor be part of a match. */
    private readonly stop: Pick<StopCriteria, 'stopStrings' | 'minTokens'> = {},
  ) {
    this.detok = new StreamingDetokenizer(tokenizer, promptIds);
    this.stops = stop.stopStrings ?? [];
    this.longestStop = this.stops.reduce((m, s) => Math.max(m, s.length), 0);
  }

  /** Decodes one more token (`tokensOut`: output tokens so far, this one included); true when a stop string now matches. */
  push(token: number, tokensOut: number): boolean {
    return this.append(this.detok.push(token), tokensOut);
  }

  /** At the end: decodes what the detokenizer held (unless a stop string matched); true when a stop string now matches. */
  flush(tokensOut: number): boolean {
    return !this.stopMatched && this.append(this.detok.flush(), tokensOut);
  }

  /** Text not handed out yet, holding back a tail that could still become a stop string (all of it when final). */
  take(final: boolean): string {
    let end = this.text.length;
    if (!final) end -= holdBack(this.text, this.sent, this.stops);
    const text = this.text.slice(this.sent, end);
    this.sent = end;
    return text;
  }

  /** Appends decoded text; true when a stop string now matches (the text is cut before it). */
  private append(piece: string, tokensOut: number): boolean {
    if (!piece) return false;
    if (!mayStop(this.stop, tokensOut)) {
      this.text += piece;
      this.stopFrom = this.text.length;
      return false;
    }
    const from = Math.max(this.stopFrom, this.text.length - this.longestStop + 1);
    this.text += piece;
    let cut = -1;
    for (const s of this.stops) {
      if (!s) continue;
      const i = this.text.indexOf(s, from);
      if (i >= 0 && (cut < 0 || i < cut)) cut = i;
    }
    if (cut < 0) return false;
    this.text = this.text.slice(0, cut);
    this.stopMatched = true;
    return true;
  }
}

/** Length of the longest suffix of text[sent..] that is a proper prefix of a stop string. */
function holdBack(text: string, sent: number, stops: readonly string[]): number {
  let best = 0;
  for (const s of stops) {
    for (let k = Math.min(s.length - 1, text.length - sent); k > best; k--) {
      if (text.endsWith(s.slice(0, k))) {
        best = k;
        break;
      }
    }
  }
  return best;
}
