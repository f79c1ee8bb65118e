// One prompt, start to finish: prefill, then decode until a stop (EOS, stop id or string) or max tokens,
// streaming text as it is produced.
import type { Engine } from './engine';
import type { FinishReason, SequenceOptions } from './sequence';
import type { TextTokenizer } from '../core/tokenizer';
import { OutputText } from './output-text';
import { withDefaultStopIds, type StopCriteria } from './stop-criteria';

/** A prompt and its SequenceOptions, which the sequence gets as they are; stopIds default to the tokenizer's EOS ids. */
export interface GenerateRequest extends Omit<SequenceOptions, 'stopIds'>, Partial<Pick<StopCriteria, 'stopIds'>> {
  promptIds: number[];
  /** Called with each new piece of text (never a broken UTF-8 sequence). */
  onText?: (text: string) => void;
}

export interface GenerateStats {
  prompt_tokens: number;
  /** Generated tokens without the stop/EOS token that ended generation (the API's usage.completion_tokens). */
  generated_tokens: number;
  prefill_ms: number;
  decode_ms: number;
  decode_tokens_per_s: number;
  /** Mean fraction of expert neurons computed, over every routed (layer, token, expert). */
  active_fraction: number;
  /** Forward passes (steps) this generation took: with --speculative, fewer than its tokens. */
  forward_passes: number;
  /** --speculative only: tokens proposed and verified, and how many of them the model kept. */
  draft_tokens?: number;
  accepted_tokens?: number;
}

export interface GenerateResult {
  /** The generated ids; when generation stopped at EOS, that EOS id is the last one (as transformers' generate returns it). */
  tokens: number[];
  text: string;
  finishReason: FinishReason;
  stats: GenerateStats;
  promptLogits?: Float32Array[];
}

export async function generate(engine: Engine, tok: TextTokenizer, req: GenerateRequest): Promise<GenerateResult> {
  const opts = withDefaultStopIds(req, tok.eosIds);
  const seq = engine.newSequence(req.promptIds, opts);
  const out = new OutputText(tok, req.promptIds, opts);
  let active = 0;
  let slots = 0;
  let prefillMs = 0;
  let decodeMs = 0;
  let decodeTokens = 0;
  let forwardPasses = 0;
  let draftTokens = 0;
  let acceptedTokens = 0;
  let stopToken: number | null = null;
  try {
    while (!seq.finished) {
      const t0 = performance.now();
      const wasPrefill = seq.pendingPrompt > 0;
      const r = await engine.step([seq]);
      const ms = performance.now() - t0;
      forwardPasses++;
      draftTokens += r.draftTokens ?? 0;
      acceptedTokens += r.acceptedTokens ?? 0;
      if (wasPrefill) prefillMs += ms;
      else {
        decodeMs += ms;
        decodeTokens += r.sampled.length;
      }
      active += r.activeNeurons;
      slots += r.expertSlots;
      for (const s of r.sampled) {
        if (out.stopMatched) break; // a speculative step's tokens after a stop string
        if (s.stop) {
          stopToken = s.token; // ends the output; produces no text
          continue;
        }
        if (out.push(s.token, seq.outputIds.length)) seq.finished = 'stop'; // a stop string matched
        const piece = out.take(false);
        if (piece) req.onText?.(piece);
      }
    }
    if (out.flush(seq.outputIds.length)) seq.finished = 'stop';
    const tail = out.take(true);
    if (tail) req.onText?.(tail);
  } finally {
    engine.release(seq);
  }
  const tokens = stopToken === null ? [...seq.outputIds] : [...seq.outputIds, stopToken];
  return {
    tokens,
    text: out.text,
    finishReason: seq.finished ?? 'error',
    stats: {
      prompt_tokens: req.promptIds.length,
      generated_tokens: seq.outputIds.length,
      prefill_ms: round(prefillMs),
      decode_ms: round(decodeMs),
      decode_tokens_per_s: decodeTokens > 0 ? round((decodeTokens * 1000) / decodeMs) : 0,
      active_fraction: slots > 0 ? active / (slots * engine.config.intermediateSize) : 0,
      forward_passes: forwardPasses,
      ...(engine.proposer ? { draft_tokens: draftTokens, accepted_tokens: acceptedTokens } : {}),
    },
    promptLogits: req.keepPromptLogits ? seq.promptLogits : undefined,
  };
}

function round(x: number): number {
  return Math.round(x * 100) / 100;
}
