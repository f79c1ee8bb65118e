// The token-count lower bound a server refuses long prompts by (ceil(bytes / maxBytesPerToken)
// never exceeds the real count), and encodeAsync (the worker thread) giving encode()'s ids.
import fs from 'node:fs';
import path from 'node:path';
import { Rng } from '../../coordinator/sampler';
import { makeDemoTokenizer } from '../../core/demo-tokenizer';
import { maxBytesPerToken } from '../../core/token-length-bound';
import { TextTokenizer } from '../../core/tokenizer';
import { GOLDEN, haveGolden } from './fixtures';

const SEED = Number(process.env.FUZZ_SEED ?? Math.floor(Math.random() * 2 ** 31));

function demo(vocab = 1024): TextTokenizer {
  const t = makeDemoTokenizer(vocab);
  return TextTokenizer.fromJson(t.tokenizerJson, t.tokenizerConfig);
}

/** Random text from pieces that tokenize long (runs of spaces, merged words, markers) and short (bytes, CJK, emoji). */
function randomText(r: Rng, pieces: number): string {
  const parts = [' ', '        ', 'the ', 'model', ' reads a prompt', '<|im_start|>', '</s>', '\n', 'ä', '中文', '🦄', '\u0000', 'x'];
  let s = '';
  for (let i = 0; i < pieces; i++) s += parts[Math.floor(r.next() * parts.length)];
  return s;
}

const tokenizers: [string, () => TextTokenizer][] = [['demo 300', () => demo(300)], ['demo 1024', () => demo(1024)]];
if (haveGolden) {
  tokenizers.push(['golden', () => TextTokenizer.fromJson(JSON.parse(fs.readFileSync(path.join(GOLDEN, 'tokenizer', 'tokenizer.json'), 'utf8')))]);
}

test.each(tokenizers)('%s: ceil(bytes / maxBytesPerToken) never exceeds the token count', (_name, make) => {
  const tok = make();
  expect(Number.isFinite(tok.maxBytesPerToken)).toBe(true);
  const r = new Rng(SEED);
  for (let i = 0; i < 300; i++) {
    const text = randomText(r, 1 + Math.floor(r.next() * 60));
    const ids = tok.encode(text, { addBos: false });
    const bound = Math.ceil(Buffer.byteLength(text) / tok.maxBytesPerToken);
    if (bound > ids.length) throw new Error(`FUZZ_SEED=${SEED}: ${JSON.stringify(text)} has ${ids.length} tokens, bound ${bound}`);
  }
});

test('tokenizers that can make text shorter have no bound (Infinity)', () => {
  const base = makeDemoTokenizer(300).tokenizerJson as Record<string, unknown>;
  const tokens = ['a', 'bb'];
  expect(maxBytesPerToken(base, tokens)).toBe(2);
  const variants: Record<string, unknown>[] = [
    { ...base, normalizer: { type: 'NFC' } },
    { ...base, normalizer: { type: 'Sequence', normalizers: [{ type: 'Prepend', prepend: '▁' }, { type: 'Strip', strip_left: true, strip_right: true }] } },
    { ...base, normalizer: { type: 'Replace', pattern: { String: '  ' }, content: ' ' } },
    { ...base, normalizer: { type: 'Replace', pattern: { Regex: '\\s+' }, content: ' ' } },
    { ...base, pre_tokenizer: { type: 'WhitespaceSplit' } },
    { ...base, pre_tokenizer: { type: 'Split', pattern: { String: ' ' }, behavior: 'Removed' } },
    { ...base, model: { ...(base.model as object), byte_fallback: false, fuse_unk: true } },
    { ...base, model: { type: 'WordPiece', vocab: {} } },
    { ...base, added_tokens: [{ id: 0, content: '<mask>', lstrip: true, rstrip: false }] },
  ];
  for (const v of variants) expect([v.normalizer, v.pre_tokenizer, v.model, v.added_tokens, maxBytesPerToken(v, tokens)]).toEqual([v.normalizer, v.pre_tokenizer, v.model, v.added_tokens, Infinity]);
  // Splitting and byte mapping keep every byte.
  const kept = { ...base, pre_tokenizer: { type: 'Sequence', pretokenizers: [{ type: 'Split', pattern: { Regex: '\\d' }, behavior: 'Isolated' }, { type: 'ByteLevel' }] } };
  expect(maxBytesPerToken(kept, tokens)).toBe(2);
});

test.each(tokenizers)('%s: encodeAsync (a worker thread for long texts) gives encode()\'s ids, BOS or not', async (_name, make) => {
  const tok = make();
  try {
    const r = new Rng(SEED);
    const long = randomText(r, 3000);
    const short = randomText(r, 20);
    const items = [{ text: long }, { text: long, opts: { addBos: false } }, { text: short }, { text: '' }];
    const got = await tok.encodeAsync(items);
    expect(got).toEqual(items.map((it) => tok.encode(it.text, it.opts)));
    // Closed, it starts a thread again on the next long text.
    await tok.close();
    expect(await tok.encodeAsync([{ text: long }])).toEqual([tok.encode(long)]);
  } finally {
    await tok.close();
  }
});
