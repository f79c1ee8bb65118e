// How many bytes of text one token can stand for at most, from a tokenizer.json: then a text
// of B bytes has at least ceil(B / max) tokens, so a server can refuse a prompt that cannot
// fit the context without tokenizing it (tokenizing megabytes takes seconds).
//
// A token stands for at most its vocabulary string's UTF-8 bytes when nothing before the model
// makes text shorter: normalizers that only add (Prepend, Replace by something as long) and
// pre-tokenizers that only split or map bytes to characters. Anything else (NFC, Strip, a
// pre-tokenizer that drops whitespace, added tokens that absorb spaces, unknown runs fused into
// one token) has no such bound: Infinity.

const SPLITTING_PRE_TOKENIZERS = new Set(['ByteLevel', 'Metaspace', 'Digits', 'Punctuation', 'Split']);

type Json = Record<string, unknown>;

function isObject(v: unknown): v is Json {
  return typeof v === 'object' && v !== null && !Array.isArray(v);
}

function neverShortens(normalizer: unknown): boolean {
  if (normalizer === null || normalizer === undefined) return true;
  if (!isObject(normalizer)) return false;
  switch (normalizer.type) {
    case 'Sequence':
      return Array.isArray(normalizer.normalizers) && normalizer.normalizers.every(neverShortens);
    case 'Prepend':
      return true;
    case 'Replace': {
      const from = isObject(normalizer.pattern) ? normalizer.pattern.String : undefined;
      return typeof from === 'string' && typeof normalizer.content === 'string' && Buffer.byteLength(normalizer.content) >= Buffer.byteLength(from);
    }
    default:
      return false;
  }
}

function keepsEveryByte(pre: unknown): boolean {
  if (pre === null || pre === undefined) return true;
  if (!isObject(pre)) return false;
  if (pre.type === 'Sequence') return Array.isArray(pre.pretokenizers) && pre.pretokenizers.every(keepsEveryByte);
  return SPLITTING_PRE_TOKENIZERS.has(String(pre.type)) && pre.behavior !== 'Removed';
}

/** The most UTF-8 bytes of input one token of `tokens` (the vocabulary, added tokens included) can cover; Infinity when unbounded. */
export function maxBytesPerToken(tokenizerJson: Json, tokens: Iterable<string>): number {
  const model = tokenizerJson.model;
  if (!isObject(model) || model.type !== 'BPE') return Infinity;
  if (model.fuse_unk === true && model.byte_fallback !== true) return Infinity;
  if (!neverShortens(tokenizerJson.normalizer) || !keepsEveryByte(tokenizerJson.pre_tokenizer)) return Infinity;
  const added = Array.isArray(tokenizerJson.added_tokens) ? tokenizerJson.added_tokens : [];
  if (added.some((t) => isObject(t) && (t.lstrip === true || t.rstrip === true))) return Infinity;
  let max = 1;
  for (const t of tokens) max = Math.max(max, Buffer.byteLength(t));
  return max;
}
