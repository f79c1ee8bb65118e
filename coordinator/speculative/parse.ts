// `--speculative SPEC` (generate, serve, worker) to a proposer.
import { UserError } from '../../core/errors';
import { NgramProposer } from './ngram';
import type { DraftProposer } from './proposer';
import { SuffixProposer } from './suffix';

export const MAX_SPECULATIVE_K = 16;
export const MAX_NGRAM_N = 8;

const FORMS = `ngram[:K[:N]], suffix[:K] or draft:DIR[:K] (K 1..${MAX_SPECULATIVE_K}, default 4; N 1..${MAX_NGRAM_N}, default 3)`;

function bad(spec: string, why: string): UserError {
  return new UserError(`--speculative ${JSON.stringify(spec)}: ${why}; use ${FORMS}`);
}

/** A number field of the spec, an integer in lo..hi. */
function field(spec: string, name: string, text: string | undefined, lo: number, hi: number, dflt: number): number {
  if (text === undefined) return dflt;
  if (!/^\d+$/.test(text)) return fail(spec, `${name} must be an integer`);
  const v = Number(text);
  if (v < lo || v > hi) return fail(spec, `${name} must be in ${lo}..${hi}, got ${v}`);
  return v;
}

function fail(spec: string, why: string): never {
  throw bad(spec, why);
}

/** What `--speculative` asks for: a proposer made now, or a draft model folder to load next to the model. */
export type SpeculativeChoice = { proposer: DraftProposer } | { draft: { dir: string; k: number } };

/** `ngram[:K[:N]]`, `suffix[:K]`, `draft:DIR[:K]` (a trailing `:K` of digits is K; the rest is the folder). */
export function parseSpeculativeChoice(spec: string): SpeculativeChoice {
  const s = spec.trim();
  if (!s.startsWith('draft:')) return { proposer: parseSpeculative(s) };
  const m = /^draft:(.+?)(?::(\d+))?$/.exec(s);
  if (!m || m[1].trim() === '') return fail(spec, 'draft needs a model folder');
  return { draft: { dir: m[1], k: field(spec, 'K', m[2], 1, MAX_SPECULATIVE_K, 4) } };
}

/** `ngram`, `ngram:K`, `ngram:K:N`, `suffix`, `suffix:K` (draft:DIR needs the model: parseSpeculativeChoice). */
export function parseSpeculative(spec: string): DraftProposer {
  const s = spec.trim();
  const parts = s.split(':');
  switch (parts[0]) {
    case 'ngram': {
      if (parts.length > 3) fail(spec, 'too many fields');
      const k = field(spec, 'K', parts[1], 1, MAX_SPECULATIVE_K, 4);
      const n = field(spec, 'N', parts[2], 1, MAX_NGRAM_N, 3);
      return new NgramProposer({ k, n });
    }
    case 'suffix': {
      if (parts.length > 2) fail(spec, 'too many fields');
      return new SuffixProposer({ k: field(spec, 'K', parts[1], 1, MAX_SPECULATIVE_K, 4) });
    }
    case 'draft':
      return fail(spec, 'a draft model is loaded with the model (parseSpeculativeChoice)');
    default:
      return fail(spec, 'unknown proposer');
  }
}
