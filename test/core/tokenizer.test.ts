import fs from 'node:fs';
import path from 'node:path';
import { TextTokenizer, StreamingDetokenizer } from '../../core/tokenizer';
import { makeDemoTokenizer } from '../../core/demo-tokenizer';
import { GOLDEN, describeGolden } from './fixtures';

interface GoldenCase {
  text: string;
  ids: number[];
  decoded: string;
}

/** Streams `ids` one at a time; returns the chunks. */
function stream(tok: TextTokenizer, ids: number[], promptIds: number[] = []): string[] {
  const d = new StreamingDetokenizer(tok, promptIds);
  const chunks = ids.map((id) => d.push(id));
  chunks.push(d.flush());
  return chunks;
}

const MULTIBYTE = [
  'Crème brûlée, naïve café — déjà vu.',
  'Emoji: 🙂🚀 and flags 🇫🇷, math ∑∫√ ✓',
  '日本語のテキストと한국어',
  '  two leading spaces and trailing  ',
  'tabs\tand\nnew lines\n\n',
];

describeGolden('tokenizer golden (tokenize_golden.json)', () => {
  const dir = path.join(GOLDEN, 'tokenizer');
  let tok: TextTokenizer;
  let cases: GoldenCase[];
  beforeAll(() => {
    tok = TextTokenizer.fromJson(JSON.parse(fs.readFileSync(path.join(dir, 'tokenizer.json'), 'utf8')));
    cases = JSON.parse(fs.readFileSync(path.join(dir, 'tokenize_golden.json'), 'utf8')).cases;
  });

  test('ids match the tokenizers library, BOS included', () => {
    expect(cases.length).toBeGreaterThan(0);
    for (const c of cases) expect(tok.encode(c.text)).toEqual(c.ids);
    expect(tok.bosId).toBe(1);
    expect(tok.eosIds).toEqual([2]);
    expect(tok.vocabSize).toBe(512);
    expect(tok.addsBosByDefault).toBe(true);
    expect(tok.encode('Hello world', { addBos: false })).toEqual(cases[0].ids.slice(1));
  });

  test('decode round-trips the text; golden `decoded` equals it minus byte-fallback tokens', () => {
    // The golden tokenizer marks its <0xNN> byte tokens "special", so the tokenizers
    // library's decode(skip_special_tokens=True) dropped them ("ünïcødé" -> "ncd").
    // We keep byte tokens (the user's text must survive) and skip only control tokens.
    for (const c of cases) {
      expect(tok.decode(c.ids)).toBe(c.text);
      const noBytes = c.ids.filter((id) => tok.byteValue(id) === null);
      expect(tok.decode(noBytes)).toBe(c.decoded);
    }
    expect(tok.decode([1, 342, 294, 2], { skipSpecial: false })).toBe('<s> H</s>');
    expect(tok.decode([])).toBe('');
  });

  test('streaming: chunks concatenate to decode(all) and never hold a broken character', () => {
    for (const text of [...cases.map((c) => c.text), ...MULTIBYTE]) {
      const ids = tok.encode(text);
      const chunks = stream(tok, ids);
      expect(chunks.join('')).toBe(tok.decode(ids));
      expect(chunks.join('')).toBe(text);
      for (const ch of chunks) expect(ch).not.toContain('\uFFFD');
    }
  });
});

describe('demo tokenizer', () => {
  const demo = makeDemoTokenizer(1024);
  const tok = TextTokenizer.fromJson(demo.tokenizerJson, demo.tokenizerConfig);

  test('layout: <unk> <s> </s>, 256 bytes, word pieces, ChatML markers', () => {
    expect(tok.vocabSize).toBe(1024);
    expect([0, 1, 2].map((i) => tok.tokenText(i))).toEqual(['<unk>', '<s>', '</s>']);
    expect(tok.tokenText(3)).toBe('<0x00>');
    expect(tok.tokenText(258)).toBe('<0xFF>');
    expect(tok.tokenText(1022)).toBe('<|im_start|>');
    expect(tok.tokenText(1023)).toBe('<|im_end|>');
    expect(tok.bosId).toBe(1);
    expect(tok.eosIds).toEqual([2]);
    const vocab = (demo.tokenizerJson.model as { vocab: Record<string, number> }).vocab;
    expect(Object.keys(vocab)).toHaveLength(1024);
    expect(new Set(Object.values(vocab)).size).toBe(1024);
    // same pipeline layout as the released tokenizers
    expect(demo.tokenizerJson.decoder).toEqual(
      JSON.parse(JSON.stringify({ type: 'Sequence', decoders: [{ type: 'Replace', pattern: { String: '▁' }, content: ' ' }, { type: 'ByteFallback' }, { type: 'Fuse' }, { type: 'Strip', content: ' ', start: 1, stop: 0 }] })),
    );
  });

  test('English tokenizes into word pieces and round-trips', () => {
    const text = 'The history of the city goes back more than a thousand years, and the people were happy.';
    const ids = tok.encode(text);
    expect(ids[0]).toBe(1);
    const pieces = ids.slice(1).map((i) => tok.tokenText(i));
    expect(pieces).toEqual(expect.arrayContaining(['▁the', '▁of', '▁and']));
    expect(ids.length).toBeLessThan(text.length / 2.5); // far fewer tokens than characters
    expect(tok.decode(ids)).toBe(text);
  });

  test('anything else falls back to bytes and still round-trips, also streamed', () => {
    for (const text of MULTIBYTE) {
      const ids = tok.encode(text);
      expect(tok.decode(ids)).toBe(text);
      const chunks = stream(tok, ids);
      expect(chunks.join('')).toBe(text);
      for (const ch of chunks) expect(ch).not.toContain('\uFFFD');
    }
    // an emoji is 4 byte tokens: nothing comes out until the last one
    const emoji = tok.encode('🙂', { addBos: false });
    expect(emoji.map((i) => tok.byteValue(i))).toEqual([null, 0xf0, 0x9f, 0x99, 0x82]); // '▁' then bytes
    expect(stream(tok, emoji)).toEqual(['', '', '', '', '🙂', '']);
  });

  test('a prompt window keeps the leading space of the first generated word', () => {
    const prompt = tok.encode('Hello there');
    const gen = tok.encode(' and the world', { addBos: false }).slice(1); // drop the normalizer's leading '▁'
    const whole = tok.decode([...prompt, ...gen]);
    const chunks = stream(tok, gen, prompt);
    expect(tok.decode(prompt) + chunks.join('')).toBe(whole);
    expect(chunks.join('').startsWith(' ')).toBe(true);
    // without a prompt the first word's space is stripped, exactly like decode(gen)
    expect(stream(tok, gen).join('')).toBe(tok.decode(gen));
  });

  test('control tokens produce no text; ChatML markers are single tokens', () => {
    const d = new StreamingDetokenizer(tok);
    expect(d.push(1)).toBe('');
    const a = tok.encode('Hello', { addBos: false });
    const out = a.map((i) => d.push(i)).join('');
    expect(d.push(2)).toBe('');
    expect(out + d.flush()).toBe('Hello');
    const chat = tok.encode('<|im_start|>user\nHi<|im_end|>', { addBos: false });
    expect(chat).toContain(1022);
    expect(chat).toContain(1023);
    expect(tok.decode(chat)).toBe('user\nHi');
    expect(tok.decode(chat, { skipSpecial: false })).toContain('<|im_start|>');
  });

  test('random id sequences: streaming equals decode(all)', () => {
    let s = 12345;
    const rand = () => ((s = (Math.imul(s, 1103515245) + 12345) >>> 0) % 1024);
    for (let trial = 0; trial < 30; trial++) {
      const ids = Array.from({ length: 40 }, rand);
      expect(stream(tok, ids).join('')).toBe(tok.decode(ids));
    }
  });

  test('small and large vocab sizes', () => {
    for (const v of [262, 300, 4000]) {
      const d = makeDemoTokenizer(v);
      const t = TextTokenizer.fromJson(d.tokenizerJson, d.tokenizerConfig);
      expect(t.vocabSize).toBe(v);
      const text = 'Plain English words, ünïcode and 🙂.';
      expect(t.decode(t.encode(text))).toBe(text);
    }
    expect(() => makeDemoTokenizer(200)).toThrow(/vocab size must be an integer >= 262/);
  });
});
