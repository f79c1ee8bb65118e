// `--speculative SPEC` (generate, serve, worker) to a proposer.
import { UserError } from '../../core/errors';
import { NgramProposer } from './ngram';
import type { DraftProposer } from './proposer';
import { SuffixProposer } from './suffix';

export const MAX_SPECULATIVE_K = 16;
export const MAX_NGRAM_N = 8;

const FORMS = `ngram[:K[:N]] or suffix[:K] (K 1..${MAX_SPECULATIVE_K}, default 4; N 1..${MAX_NGRAM_N}, default 3)`;

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

/** `ngram`, `ngram:K`, `ngram:K:N`, `suffix`, `suffix:K`; `draft:DIR[:K]` is not built yet. */
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
      throw new UserError(`--speculative ${JSON.stringify(spec)}: draft-model speculation (draft:DIR[:K]) is not built yet; use ${FORMS}`);
    default:
      return fail(spec, 'unknown proposer');
  }
}
