// The demo model's tokenizer, built here rather than copied: a Llama/Mistral-style
// byte-fallback BPE (<unk>=0, <s>=1, </s>=2, the 256 byte tokens <0x00>..<0xFF>),
// then the characters and BPE merges learned from a small built-in English text,
// then the two ChatML markers. Same normalizer / decoder / post-processor layout
// as the released checkpoints' tokenizer.json, so it exercises the same paths.

/** Words and sentences the merges are learned from (original text, written for this file). */
const TRAINING_TEXT = `
The model reads a prompt, turns it into tokens, and predicts the next token one step at a time.
Each layer of the network has an attention block and a mixture of experts. The router looks at the
hidden state of every token and picks two experts out of eight. Before an expert runs, a small
predictor guesses which of its neurons will be active, so that only those rows of the weight
matrices are read from memory. Most neurons stay silent for most tokens, and that is where the
speed comes from: the work done for each token is a small fraction of the work a dense model does.

In the morning the town was quiet. The baker opened the shop at six, and the smell of fresh bread
drifted down the street. A few people walked their dogs by the river, where the water was high after
the rain of the night before. Children were on their way to school, talking about the game they had
played the day before and the test they would have in the afternoon. By eight o'clock the first
buses were full, and the cafe on the corner had a line of people who wanted coffee and something
warm to eat before work.

She took the old map from the shelf and spread it out on the table. The paper was thin and the
colours had faded, but the roads and the hills were still clear. "We could follow the valley to the
north," she said, "and cross the bridge before it gets dark." He looked at the map for a long time
and then agreed. They packed water, bread, cheese, a warm jacket and a small light, and they left the
house just after noon. The weather was kind to them for most of the day.

A good recipe for soup starts with onions cooked slowly in butter until they are soft and sweet.
Add carrots, potatoes and a little salt, then cover everything with water or stock and let it simmer
for about thirty minutes. When the vegetables are tender, blend the soup until it is smooth, taste it,
and add pepper, herbs or a spoon of cream. It keeps well for two or three days, and many people think
it tastes even better on the second day than on the first.

Computers store numbers in binary, as long strings of ones and zeros. A number with a fraction is
kept as a sign, an exponent and a mantissa, and the number of bits given to each part decides how
precise the value can be. Machine learning often uses short formats with sixteen bits, because they
halve the memory a model needs and let the hardware move twice as many values in the same time,
while the loss in precision is small enough that the results hardly change.

There are many ways to learn a new language. Some people read books and write down every word they
do not know; others listen to music, watch films, or talk with friends who speak it at home. What
matters most is to use the language a little every day, to make mistakes without fear, and to notice
how the sounds and the order of the words differ from those of the language you grew up with.

The history of the city goes back more than a thousand years. It began as a small market where
farmers from the hills came to sell wool, grain and animals, and it grew because it stood at the
place where two rivers meet. Over the centuries it was ruled by kings, by bishops and by merchants,
and each of them left something behind: a castle, a church, a hall, a bridge, a garden or a school.
Today visitors come from all over the world to see the old streets and the museums.

Questions, answers, numbers and names: one, two, three, four, five, six, seven, eight, nine, ten,
hundred, thousand, first, second, third, Monday, Tuesday, Wednesday, Thursday, Friday, Saturday,
Sunday, January, March, April, June, July, October, December, yes, no, please, thank you, hello,
goodbye, what, where, when, why, who, which, how, because, however, therefore, although, during.
`;

/** Tokens at fixed ids, as in Llama/Mistral tokenizers. */
const UNK = '<unk>';
const BOS = '<s>';
const EOS = '</s>';
export const IM_START = '<|im_start|>';
export const IM_END = '<|im_end|>';
const SPACE = '\u2581'; // '▁', SentencePiece's visible space

/** The smallest vocabulary: 3 specials, 256 bytes, '▁', 2 chat markers. */
export const MIN_DEMO_VOCAB = 3 + 256 + 1 + 2;

export const CHATML_TEMPLATE =
  "{% for message in messages %}{{ '<|im_start|>' + message['role'] + '\\n' + message['content'] + '<|im_end|>' + '\\n' }}{% endfor %}" +
  "{% if add_generation_prompt %}{{ '<|im_start|>assistant\\n' }}{% endif %}";

function byteToken(b: number): string {
  return `<0x${b.toString(16).toUpperCase().padStart(2, '0')}>`;
}

function addedToken(id: number, content: string) {
  return { id, content, single_word: false, lstrip: false, rstrip: false, normalized: false, special: true };
}

/**
 * Learns BPE merges on the training words (each word with its leading '▁', the way
 * the normalizer presents text) until `slots` new tokens exist. Pairs are ranked by
 * frequency, ties broken by the pair's text, so the result is deterministic.
 */
function learnMerges(alphabet: Set<string>, slots: number): { merges: [string, string][]; tokens: string[] } {
  const freq = new Map<string, number>();
  for (const w of TRAINING_TEXT.split(/\s+/)) {
    if (w) freq.set(SPACE + w, (freq.get(SPACE + w) ?? 0) + 1);
  }
  const words = [...freq].map(([w, n]) => ({ syms: Array.from(w), n }));
  const merges: [string, string][] = [];
  const tokens: string[] = [];
  const known = new Set(alphabet);
  while (tokens.length < slots) {
    const counts = new Map<string, number>();
    for (const { syms, n } of words) {
      for (let i = 0; i + 1 < syms.length; i++) {
        // A character outside the vocabulary becomes byte tokens, which never merge.
        if (!known.has(syms[i]) || !known.has(syms[i + 1])) continue;
        const key = `${syms[i]}\u0000${syms[i + 1]}`;
        counts.set(key, (counts.get(key) ?? 0) + n);
      }
    }
    let best: string | null = null;
    let bestN = 0;
    for (const [k, n] of counts) {
      if (n > bestN || (n === bestN && best !== null && k < best)) {
        best = k;
        bestN = n;
      }
    }
    if (best === null) break; // every word is one token
    const [a, b] = best.split('\u0000') as [string, string];
    const merged = a + b;
    merges.push([a, b]);
    if (!known.has(merged)) {
      known.add(merged);
      tokens.push(merged);
    }
    for (const w of words) {
      const out: string[] = [];
      for (let i = 0; i < w.syms.length; i++) {
        if (i + 1 < w.syms.length && w.syms[i] === a && w.syms[i + 1] === b) {
          out.push(merged);
          i++;
        } else {
          out.push(w.syms[i]);
        }
      }
      w.syms = out;
    }
  }
  return { merges, tokens };
}

export interface DemoTokenizer {
  tokenizerJson: Record<string, unknown>;
  tokenizerConfig: Record<string, unknown>;
  imStartId: number;
  imEndId: number;
}

/** Builds a tokenizer.json + tokenizer_config.json with exactly `vocabSize` ids. */
export function makeDemoTokenizer(vocabSize: number, modelMaxLength = 4096): DemoTokenizer {
  if (!Number.isInteger(vocabSize) || vocabSize < MIN_DEMO_VOCAB) {
    throw new Error(`demo tokenizer: vocab size must be an integer >= ${MIN_DEMO_VOCAB}, got ${vocabSize}`);
  }
  const vocab: Record<string, number> = {};
  let next = 0;
  for (const t of [UNK, BOS, EOS]) vocab[t] = next++;
  for (let b = 0; b < 256; b++) vocab[byteToken(b)] = next++;
  const free = vocabSize - 2 - next; // ids left between the bytes and the two chat markers

  // Single characters, most frequent first ('▁' included); '\n' and other control
  // characters are left to the byte tokens, as Llama does.
  const charCount = new Map<string, number>([[SPACE, 1e9]]);
  for (const ch of TRAINING_TEXT) {
    if (/\s/.test(ch)) continue;
    charCount.set(ch, (charCount.get(ch) ?? 0) + 1);
  }
  const chars = [...charCount]
    .sort((x, y) => y[1] - x[1] || (x[0] < y[0] ? -1 : 1))
    .map(([c]) => c)
    .slice(0, free);
  for (const c of chars) vocab[c] = next++;

  const { merges, tokens } = learnMerges(new Set(chars), free - chars.length);
  for (const t of tokens) vocab[t] = next++;
  // A vocabulary larger than the text supports gets unreachable filler tokens, as real ones have.
  for (let i = 0; next < vocabSize - 2; i++) vocab[`<unused_${i}>`] = next++;
  const imStartId = next++;
  const imEndId = next++;
  vocab[IM_START] = imStartId;
  vocab[IM_END] = imEndId;

  const tokenizerJson = {
    version: '1.0',
    truncation: null,
    padding: null,
    added_tokens: [addedToken(0, UNK), addedToken(1, BOS), addedToken(2, EOS), addedToken(imStartId, IM_START), addedToken(imEndId, IM_END)],
    normalizer: {
      type: 'Sequence',
      normalizers: [
        { type: 'Prepend', prepend: SPACE },
        { type: 'Replace', pattern: { String: ' ' }, content: SPACE },
      ],
    },
    pre_tokenizer: null,
    post_processor: {
      type: 'TemplateProcessing',
      single: [{ SpecialToken: { id: BOS, type_id: 0 } }, { Sequence: { id: 'A', type_id: 0 } }],
      pair: [
        { SpecialToken: { id: BOS, type_id: 0 } },
        { Sequence: { id: 'A', type_id: 0 } },
        { SpecialToken: { id: BOS, type_id: 0 } },
        { Sequence: { id: 'B', type_id: 0 } },
      ],
      special_tokens: { [BOS]: { id: BOS, ids: [1], tokens: [BOS] } },
    },
    decoder: {
      type: 'Sequence',
      decoders: [
        { type: 'Replace', pattern: { String: SPACE }, content: ' ' },
        { type: 'ByteFallback' },
        { type: 'Fuse' },
        { type: 'Strip', content: ' ', start: 1, stop: 0 },
      ],
    },
    model: {
      type: 'BPE',
      dropout: null,
      unk_token: UNK,
      continuing_subword_prefix: null,
      end_of_word_suffix: null,
      fuse_unk: true,
      byte_fallback: true,
      ignore_merges: false,
      vocab,
      merges,
    },
  };

  const addedTokensDecoder: Record<string, unknown> = {};
  for (const t of tokenizerJson.added_tokens) {
    const { id, ...rest } = t;
    addedTokensDecoder[String(id)] = rest;
  }
  const tokenizerConfig = {
    add_bos_token: true,
    add_eos_token: false,
    added_tokens_decoder: addedTokensDecoder,
    bos_token: BOS,
    eos_token: EOS,
    unk_token: UNK,
    pad_token: null,
    additional_special_tokens: [IM_START, IM_END],
    chat_template: CHATML_TEMPLATE,
    clean_up_tokenization_spaces: false,
    legacy: false,
    model_max_length: modelMaxLength,
    tokenizer_class: 'LlamaTokenizer',
  };
  return { tokenizerJson, tokenizerConfig, imStartId, imEndId };
}
