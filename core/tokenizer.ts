// Text <-> token ids with the model's own tokenizer.json (via @huggingface/tokenizers),
// and a streaming detokenizer that turns generated ids into text one token at a
// time without ever emitting half a UTF-8 character.
import { UserError } from './errors';
import type { ModelFolder } from './model-folder';
import { maxBytesPerToken } from './token-length-bound';
import { TokenizerThread } from './tokenizer-thread';

// The package is ESM-first; its CommonJS build is what our commonjs output can load.
// eslint-disable-next-line @typescript-eslint/no-require-imports
const { Tokenizer } = require('@huggingface/tokenizers') as typeof import('@huggingface/tokenizers');
type HfTokenizer = InstanceType<typeof Tokenizer>;

const BYTE_TOKEN_RE = /^<0x[0-9A-Fa-f]{2}>$/;
/** Texts up to this many characters (together) are encoded in place by encodeAsync: a few ms at most. */
const INLINE_CHARS = 2048;
const REPLACEMENT = '\uFFFD';

function isObject(v: unknown): v is Record<string, unknown> {
  return typeof v === 'object' && v !== null && !Array.isArray(v);
}

/** tokenizer_config.json writes special tokens as "<s>" or as {"content": "<s>", ...}. */
function tokenString(v: unknown): string | null {
  if (typeof v === 'string') return v;
  if (isObject(v) && typeof v.content === 'string') return v.content;
  return null;
}

export interface EncodeOptions {
  /** Default: whatever the tokenizer does (its post-processor or tokenizer_config add_bos_token). */
  addBos?: boolean;
}

export interface DecodeOptions {
  /** Drop control tokens (BOS, EOS, UNK, PAD, chat markers). Byte-fallback tokens are always kept. Default true. */
  skipSpecial?: boolean;
}

export class TextTokenizer {
  readonly bosId: number | null;
  readonly eosIds: number[];
  /** One more than the largest token id. */
  readonly vocabSize: number;
  /** Whether encode() adds BOS when not told otherwise. */
  readonly addsBosByDefault: boolean;
  /**
   * The most UTF-8 bytes of text one token covers, so a text of B bytes has at least
   * ceil(B / maxBytesPerToken) tokens; Infinity when this tokenizer has no such bound.
   */
  readonly maxBytesPerToken: number;
  private readonly tok: HfTokenizer;
  /** Special added tokens other than byte-fallback ones: what skipSpecial drops. */
  private readonly controlIds: Set<number>;
  private readonly postProcessorAddsBos: boolean;
  private readonly cleanUpSpaces: boolean;
  /** What the encoding thread builds its own copy of the tokenizer from. */
  private readonly source: { json: object; config: object };
  private thread: TokenizerThread | null = null;

  private constructor(tok: HfTokenizer, tokenizerJson: Record<string, unknown>, cfg: Record<string, unknown>, extraEos: number[], fallbackBos: number | null) {
    this.tok = tok;
    this.source = { json: tokenizerJson, config: cfg };
    const id = (t: string | null): number | null => (t === null ? null : (tok.token_to_id(t) ?? null));

    const vocab = tok.get_vocab(true);
    let maxId = -1;
    for (const v of vocab.values()) maxId = Math.max(maxId, v);
    this.vocabSize = maxId + 1;
    this.maxBytesPerToken = maxBytesPerToken(tokenizerJson, vocab.keys());

    this.controlIds = new Set();
    for (const [tid, added] of tok.get_added_tokens_decoder()) {
      if (added.special && !BYTE_TOKEN_RE.test(added.content)) this.controlIds.add(tid);
    }

    this.bosId = id(tokenString(cfg.bos_token)) ?? id(templateBos(tokenizerJson)) ?? id('<s>') ?? fallbackBos;
    const eos = new Set<number>();
    const cfgEos = id(tokenString(cfg.eos_token)) ?? id('</s>');
    if (cfgEos !== null) eos.add(cfgEos);
    for (const e of extraEos) eos.add(e);
    this.eosIds = [...eos];
    for (const t of [this.bosId, ...this.eosIds, id(tokenString(cfg.unk_token)), id(tokenString(cfg.pad_token))]) {
      if (t !== null) this.controlIds.add(t);
    }

    const withSpecial = tok.encode('a').ids;
    const without = tok.encode('a', { add_special_tokens: false }).ids;
    this.postProcessorAddsBos = this.bosId !== null && withSpecial[0] === this.bosId && without[0] !== this.bosId;
    this.addsBosByDefault = this.postProcessorAddsBos || (cfg.add_bos_token === true && this.bosId !== null);
    // transformers honours tokenizer_config's clean_up_tokenization_spaces; tokenizers.js would
    // default it to true, which breaks round trips (" ." -> "."), so only an explicit true turns it on.
    this.cleanUpSpaces = cfg.clean_up_tokenization_spaces === true;
  }

  /** Builds the tokenizer of a model folder; EOS ids from config.json are added to the tokenizer's. */
  static fromModel(folder: ModelFolder): TextTokenizer {
    return TextTokenizer.build(folder.tokenizerJson, folder.tokenizerConfig, folder.config.eosTokenIds, folder.config.bosTokenId, `${folder.dir}/tokenizer.json`);
  }

  static fromJson(tokenizerJson: object, tokenizerConfig?: object | null): TextTokenizer {
    return TextTokenizer.build(tokenizerJson, tokenizerConfig ?? null, [], null, 'tokenizer.json');
  }

  private static build(json: object, config: object | null, extraEos: number[], fallbackBos: number | null, where: string): TextTokenizer {
    if (!isObject(json) || !isObject(json.model)) throw new UserError(`${where}: not a Hugging Face tokenizer.json (no "model" object)`);
    const cfg: Record<string, unknown> = isObject(config) ? { ...config } : {};
    // tokenizers.js expects additional_special_tokens as strings; transformers may write objects.
    if (Array.isArray(cfg.additional_special_tokens)) {
      cfg.additional_special_tokens = cfg.additional_special_tokens.map(tokenString).filter((s): s is string => s !== null);
    }
    // tokenizers.js requires these keys to exist (null is fine).
    const full: Record<string, unknown> = { normalizer: null, pre_tokenizer: null, post_processor: null, decoder: null, added_tokens: [], ...json };
    let tok: HfTokenizer;
    try {
      tok = new Tokenizer(full, cfg);
    } catch (err) {
      throw new UserError(`${where}: cannot build the tokenizer (${(err as Error).message})`);
    }
    return new TextTokenizer(tok, full, cfg, extraEos, fallbackBos);
  }

  encode(text: string, opts: EncodeOptions = {}): number[] {
    const wantBos = opts.addBos ?? this.addsBosByDefault;
    const addSpecial = this.postProcessorAddsBos ? wantBos : undefined;
    const ids = addSpecial === undefined ? this.tok.encode(text).ids : this.tok.encode(text, { add_special_tokens: addSpecial }).ids;
    return this.withBos([...ids], wantBos);
  }

  /**
   * encode() for each text, off the event loop when they are long (a worker thread),
   * so a server keeps answering while a long prompt is tokenized.
   */
  async encodeAsync(items: readonly { text: string; opts?: EncodeOptions }[]): Promise<number[][]> {
    if (items.reduce((n, it) => n + it.text.length, 0) <= INLINE_CHARS) return items.map((it) => this.encode(it.text, it.opts));
    const wants = items.map((it) => it.opts?.addBos ?? this.addsBosByDefault);
    this.thread ??= new TokenizerThread(this.source.json, this.source.config);
    const ids = await this.thread.encode(items.map((it, i) => ({ text: it.text, addSpecial: this.postProcessorAddsBos ? wants[i] : undefined })));
    return ids.map((x, i) => this.withBos(x, wants[i]));
  }

  /** Stops the encoding thread, if one runs (it does not keep the process alive; tests close it). */
  async close(): Promise<void> {
    const t = this.thread;
    this.thread = null;
    await t?.close();
  }

  /** BOS first when wanted and the post-processor did not add it. */
  private withBos(ids: number[], wantBos: boolean): number[] {
    if (!this.postProcessorAddsBos && wantBos && this.bosId !== null && ids[0] !== this.bosId) ids.unshift(this.bosId);
    return ids;
  }

  decode(ids: readonly number[], opts: DecodeOptions = {}): string {
    const keep = opts.skipSpecial === false ? [...ids] : ids.filter((i) => !this.controlIds.has(i));
    for (const i of keep) {
      if (!Number.isInteger(i) || i < 0) throw new UserError(`token id ${i} is not a non-negative integer`);
    }
    if (keep.length === 0) return '';
    return this.tok.decode(keep, { skip_special_tokens: false, clean_up_tokenization_spaces: this.cleanUpSpaces });
  }

  /** True for BOS/EOS/UNK/PAD and other special non-byte tokens (what decode skips). */
  isControl(id: number): boolean {
    return this.controlIds.has(id);
  }

  isEos(id: number): boolean {
    return this.eosIds.includes(id);
  }

  /** The vocabulary entry of `id` ("▁the", "<0x0A>", "<s>"), or "" for an unknown id. */
  tokenText(id: number): string {
    return this.tok.id_to_token(id) ?? '';
  }

  /** The byte a byte-fallback token "<0xNN>" stands for, else null. */
  byteValue(id: number): number | null {
    const t = this.tokenText(id);
    return BYTE_TOKEN_RE.test(t) ? parseInt(t.slice(3, 5), 16) : null;
  }
}

/** The first SpecialToken of a TemplateProcessing post-processor's "single" template, if any. */
function templateBos(json: Record<string, unknown>): string | null {
  const pp = json.post_processor;
  const procs = isObject(pp) && pp.type === 'Sequence' && Array.isArray(pp.processors) ? pp.processors : [pp];
  for (const p of procs) {
    if (isObject(p) && p.type === 'TemplateProcessing' && Array.isArray(p.single) && isObject(p.single[0])) {
      const st = p.single[0].SpecialToken;
      if (isObject(st) && typeof st.id === 'string') return st.id;
    }
  }
  return null;
}

/**
 * Turns generated ids into text incrementally. Each push decodes a small window
 * that starts a few tokens back (so SentencePiece-style '▁' spaces and the
 * decoder's leading-space strip come out as in a full decode) and returns only
 * the new part; while the window's text ends in U+FFFD (an incomplete UTF-8
 * sequence from byte-fallback tokens) the text is held back. Control tokens
 * (EOS, ...) produce no text. The concatenation of push() and flush() outputs
 * equals decode(all generated ids) appended to the prompt's text.
 */
export class StreamingDetokenizer {
  private readonly tok: TextTokenizer;
  private readonly ids: number[];
  /** Start of the decode window. */
  private prefixOffset: number;
  /** End of the text already returned. */
  private readOffset: number;

  constructor(tok: TextTokenizer, promptIds: readonly number[] = []) {
    this.tok = tok;
    this.ids = promptIds.filter((i) => !tok.isControl(i));
    this.readOffset = this.ids.length;
    // Start the window a few tokens into the prompt, but never on a UTF-8 continuation byte.
    let p = Math.max(0, this.ids.length - 5);
    while (p > 0 && isContinuationByte(tok.byteValue(this.ids[p]))) p--;
    this.prefixOffset = p;
  }

  /** Adds one generated id; returns the text it completes ('' while a character is incomplete). */
  push(id: number): string {
    if (this.tok.isControl(id)) return '';
    this.ids.push(id);
    const prefixText = this.decodeRange(this.prefixOffset, this.readOffset);
    const newText = this.decodeRange(this.prefixOffset, this.ids.length);
    if (newText.length > prefixText.length && !newText.endsWith(REPLACEMENT)) {
      this.prefixOffset = this.readOffset;
      this.readOffset = this.ids.length;
      return diff(prefixText, newText);
    }
    return '';
  }

  /** Returns any held-back text (an incomplete character comes out as U+FFFD, as in a full decode). */
  flush(): string {
    if (this.readOffset === this.ids.length) return '';
    const prefixText = this.decodeRange(this.prefixOffset, this.readOffset);
    const newText = this.decodeRange(this.prefixOffset, this.ids.length);
    this.prefixOffset = this.readOffset = this.ids.length;
    return diff(prefixText, newText);
  }

  private decodeRange(from: number, to: number): string {
    return from >= to ? '' : this.tok.decode(this.ids.slice(from, to), { skipSpecial: false });
  }
}

function isContinuationByte(b: number | null): boolean {
  return b !== null && b >= 0x80 && b < 0xc0;
}

function diff(prefixText: string, newText: string): string {
  return newText.length > prefixText.length ? newText.slice(prefixText.length) : '';
}
