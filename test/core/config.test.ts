import fs from 'node:fs';
import path from 'node:path';
import { parseConfig } from '../../core/config';
import { UserError } from '../../core/errors';
import { GOLDEN, describeGolden } from './fixtures';

/** The fields of a real TurboSparse-Mixtral config.json (tiny shapes). */
function base(): Record<string, unknown> {
  return {
    architectures: ['TurboSparseMixtralForCausalLM'],
    model_type: 'turbosparsemixtral',
    hidden_size: 64,
    intermediate_size: 160,
    num_hidden_layers: 2,
    num_attention_heads: 4,
    num_key_value_heads: 2,
    num_local_experts: 4,
    num_experts_per_tok: 2,
    rope_theta: 1000000.0,
    rms_norm_eps: 1e-5,
    max_position_embeddings: 4096,
    vocab_size: 512,
    tie_word_embeddings: false,
    bos_token_id: 1,
    eos_token_id: 2,
    torch_dtype: 'bfloat16',
    hidden_act: 'relu',
    sliding_window: null,
    some_future_field: { anything: true },
  };
}

function expectUserError(json: unknown, message: string | RegExp): void {
  let err: unknown;
  try {
    parseConfig(json, 'config.json');
  } catch (e) {
    err = e;
  }
  expect(err).toBeInstanceOf(UserError);
  if (typeof message === 'string') expect((err as Error).message).toBe(message);
  else expect((err as Error).message).toMatch(message);
}

describe('parseConfig', () => {
  test('maps the Hugging Face fields', () => {
    expect(parseConfig(base(), 'config.json')).toEqual({
      architecture: 'TurboSparseMixtralForCausalLM',
      hiddenSize: 64,
      intermediateSize: 160,
      numLayers: 2,
      numHeads: 4,
      numKvHeads: 2,
      headDim: 16,
      numExperts: 4,
      topK: 2,
      vocabSize: 512,
      ropeTheta: 1e6,
      rmsNormEps: 1e-5,
      maxPositionEmbeddings: 4096,
      bosTokenId: 1,
      eosTokenIds: [2],
      tieWordEmbeddings: false,
      torchDtype: 'bfloat16',
      hiddenAct: 'relu',
      slidingWindow: null,
    });
  });

  test('explicit head_dim, eos list, null bos, tied embeddings, "dtype" instead of torch_dtype', () => {
    const j: Record<string, unknown> = { ...base(), head_dim: 32, eos_token_id: [2, 7], bos_token_id: null, tie_word_embeddings: true, dtype: 'float32' };
    delete j.torch_dtype;
    const c = parseConfig(j, 'config.json');
    expect(c).toMatchObject({ headDim: 32, eosTokenIds: [2, 7], bosTokenId: null, tieWordEmbeddings: true, torchDtype: 'float32' });
  });

  test('fields transformers defaults get the same defaults', () => {
    const j = base();
    for (const k of ['rope_theta', 'rms_norm_eps', 'max_position_embeddings', 'bos_token_id', 'eos_token_id', 'tie_word_embeddings', 'torch_dtype', 'architectures']) delete j[k];
    expect(parseConfig(j, 'config.json')).toMatchObject({
      architecture: 'turbosparsemixtral',
      ropeTheta: 1e6,
      rmsNormEps: 1e-5,
      maxPositionEmbeddings: 131072,
      bosTokenId: 1,
      eosTokenIds: [2],
      tieWordEmbeddings: false,
      torchDtype: 'float32',
    });
  });

  test('a missing field names the field and the file', () => {
    const j = base();
    delete j.num_local_experts;
    expectUserError(j, "config.json: field 'num_local_experts' is missing (expected a positive integer)");
    const k = base();
    delete k.hidden_size;
    expectUserError(k, "config.json: field 'hidden_size' is missing (expected a positive integer)");
  });

  test('a field of the wrong type or value', () => {
    expectUserError({ ...base(), num_attention_heads: '4' }, `config.json: field 'num_attention_heads' is "4" (expected a positive integer)`);
    expectUserError({ ...base(), vocab_size: 0 }, "config.json: field 'vocab_size' is 0 (expected a positive integer)");
    expectUserError({ ...base(), intermediate_size: 12.5 }, "config.json: field 'intermediate_size' is 12.5 (expected a positive integer)");
    expectUserError({ ...base(), rms_norm_eps: -1 }, "config.json: field 'rms_norm_eps' is -1 (expected a positive number (default 1e-5))");
    expectUserError({ ...base(), eos_token_id: 'eos' }, /^config\.json: field 'eos_token_id' is "eos" \(expected a token id or a non-empty list of token ids/);
    expectUserError({ ...base(), tie_word_embeddings: 'no' }, /field 'tie_word_embeddings' is "no" \(expected true or false/);
  });

  test('cross-checks between fields', () => {
    expectUserError({ ...base(), num_key_value_heads: 3 }, 'config.json: num_attention_heads (4) is not a multiple of num_key_value_heads (3)');
    expectUserError({ ...base(), num_experts_per_tok: 5 }, 'config.json: num_experts_per_tok (5) is larger than num_local_experts (4)');
    expectUserError({ ...base(), hidden_size: 66 }, /hidden_size \(66\) is not a multiple of num_attention_heads \(4\); add a 'head_dim' field/);
    expectUserError({ ...base(), eos_token_id: [2, 600] }, "config.json: field 'eos_token_id' has id 600, outside vocab_size 512");
  });

  test('not an object', () => {
    expectUserError([1, 2], /^config\.json: expected a JSON object/);
    expectUserError(null, /^config\.json: expected a JSON object/);
  });
});

describeGolden('parseConfig on the golden tiny-a config', () => {
  test('reads the released field set', () => {
    const file = path.join(GOLDEN, 'tiny-a', 'model', 'config.json');
    const c = parseConfig(JSON.parse(fs.readFileSync(file, 'utf8')), file);
    expect(c).toMatchObject({ hiddenSize: 64, numHeads: 4, numKvHeads: 2, headDim: 16, intermediateSize: 160, numExperts: 4, topK: 2, numLayers: 2, vocabSize: 512, ropeTheta: 1e6, rmsNormEps: 1e-5 });
  });
});
