// config.json of a Hugging Face TurboSparse-Mixtral checkpoint, validated with zod.
// Shape-defining fields are required; fields that transformers' MixtralConfig
// defaults when absent get the same default here, so a folder that loads in
// transformers loads here with the same numbers. Extra fields are allowed.
import { z } from 'zod';
import { UserError } from './errors';

export interface ModelConfig {
  /** architectures[0] (e.g. "TurboSparseMixtralForCausalLM"), else model_type. */
  architecture: string;
  hiddenSize: number;
  intermediateSize: number;
  numLayers: number;
  numHeads: number;
  numKvHeads: number;
  headDim: number;
  numExperts: number;
  topK: number;
  vocabSize: number;
  ropeTheta: number;
  rmsNormEps: number;
  maxPositionEmbeddings: number;
  bosTokenId: number | null;
  eosTokenIds: number[];
  tieWordEmbeddings: boolean;
  /** torch_dtype (or the newer "dtype"), e.g. "bfloat16"; the tensors' own dtypes are authoritative. */
  torchDtype: string;
  /** hidden_act as written ("relu" for TurboSparse); the engine implements relu. */
  hiddenAct: string;
  /** sliding_window, null when absent or null (TurboSparse-Mixtral uses full attention). */
  slidingWindow: number | null;
}

const posInt = z.number().int().positive();
const nonNegInt = z.number().int().nonnegative();
const posNum = z.number().positive().finite();

/** Each field: its schema and how the error message describes a valid value. */
const FIELDS = {
  hidden_size: { schema: posInt, expected: 'a positive integer' },
  intermediate_size: { schema: posInt, expected: 'a positive integer' },
  num_hidden_layers: { schema: posInt, expected: 'a positive integer' },
  num_attention_heads: { schema: posInt, expected: 'a positive integer' },
  num_key_value_heads: { schema: posInt, expected: 'a positive integer' },
  num_local_experts: { schema: posInt, expected: 'a positive integer' },
  num_experts_per_tok: { schema: posInt, expected: 'a positive integer' },
  vocab_size: { schema: posInt, expected: 'a positive integer' },
  head_dim: { schema: posInt.nullish(), expected: 'a positive integer (or absent: hidden_size / num_attention_heads)' },
  rope_theta: { schema: posNum.optional(), expected: 'a positive number (default 1000000)' },
  rms_norm_eps: { schema: posNum.optional(), expected: 'a positive number (default 1e-5)' },
  max_position_embeddings: { schema: posInt.optional(), expected: 'a positive integer (default 131072)' },
  bos_token_id: { schema: nonNegInt.nullable().optional(), expected: 'a token id or null (default 1)' },
  eos_token_id: {
    schema: z.union([nonNegInt, z.array(nonNegInt).min(1)]).nullable().optional(),
    expected: 'a token id or a non-empty list of token ids (default 2)',
  },
  tie_word_embeddings: { schema: z.boolean().optional(), expected: 'true or false (default false)' },
  torch_dtype: { schema: z.string().nullish(), expected: 'a dtype name such as "bfloat16"' },
  dtype: { schema: z.string().nullish(), expected: 'a dtype name such as "bfloat16"' },
  hidden_act: { schema: z.string().optional(), expected: 'an activation name such as "relu"' },
  sliding_window: { schema: posInt.nullish(), expected: 'a positive integer or null' },
  architectures: { schema: z.array(z.string()).optional(), expected: 'a list of architecture names' },
  model_type: { schema: z.string().optional(), expected: 'a string' },
} as const;

type FieldName = keyof typeof FIELDS;

const schema = z
  .object(Object.fromEntries(Object.entries(FIELDS).map(([k, v]) => [k, v.schema])) as {
    [K in FieldName]: (typeof FIELDS)[K]['schema'];
  })
  .loose();

function show(v: unknown): string {
  const s = JSON.stringify(v);
  return s === undefined ? String(v) : s.length > 60 ? `${s.slice(0, 57)}...` : s;
}

/** Validates a parsed config.json; `file` names it in error messages. */
export function parseConfig(json: unknown, file: string): ModelConfig {
  if (typeof json !== 'object' || json === null || Array.isArray(json)) {
    throw new UserError(`${file}: expected a JSON object with the model's fields, got ${show(json)}`);
  }
  const r = schema.safeParse(json);
  if (!r.success) {
    const issue = r.error.issues[0];
    const field = String(issue.path[0] ?? '');
    const expected = (FIELDS as Record<string, { expected: string }>)[field]?.expected ?? 'a valid value';
    const value = (json as Record<string, unknown>)[field];
    if (value === undefined) throw new UserError(`${file}: field '${field}' is missing (expected ${expected})`);
    throw new UserError(`${file}: field '${field}' is ${show(value)} (expected ${expected})`);
  }
  const c = r.data;

  let headDim: number;
  if (c.head_dim != null) {
    headDim = c.head_dim;
  } else if (c.hidden_size % c.num_attention_heads === 0) {
    headDim = c.hidden_size / c.num_attention_heads;
  } else {
    throw new UserError(
      `${file}: hidden_size (${c.hidden_size}) is not a multiple of num_attention_heads (${c.num_attention_heads}); add a 'head_dim' field`,
    );
  }
  if (c.num_attention_heads % c.num_key_value_heads !== 0) {
    throw new UserError(
      `${file}: num_attention_heads (${c.num_attention_heads}) is not a multiple of num_key_value_heads (${c.num_key_value_heads})`,
    );
  }
  if (c.num_experts_per_tok > c.num_local_experts) {
    throw new UserError(
      `${file}: num_experts_per_tok (${c.num_experts_per_tok}) is larger than num_local_experts (${c.num_local_experts})`,
    );
  }
  const bosTokenId = c.bos_token_id === undefined ? 1 : c.bos_token_id;
  const eosTokenIds = c.eos_token_id == null ? (c.eos_token_id === null ? [] : [2]) : Array.isArray(c.eos_token_id) ? [...c.eos_token_id] : [c.eos_token_id];
  for (const [field, ids] of [['bos_token_id', bosTokenId === null ? [] : [bosTokenId]], ['eos_token_id', eosTokenIds]] as const) {
    for (const id of ids) {
      if (id >= c.vocab_size) throw new UserError(`${file}: field '${field}' has id ${id}, outside vocab_size ${c.vocab_size}`);
    }
  }

  return {
    architecture: c.architectures?.[0] ?? c.model_type ?? 'unknown',
    hiddenSize: c.hidden_size,
    intermediateSize: c.intermediate_size,
    numLayers: c.num_hidden_layers,
    numHeads: c.num_attention_heads,
    numKvHeads: c.num_key_value_heads,
    headDim,
    numExperts: c.num_local_experts,
    topK: c.num_experts_per_tok,
    vocabSize: c.vocab_size,
    ropeTheta: c.rope_theta ?? 1e6,
    rmsNormEps: c.rms_norm_eps ?? 1e-5,
    maxPositionEmbeddings: c.max_position_embeddings ?? 4096 * 32,
    bosTokenId,
    eosTokenIds,
    tieWordEmbeddings: c.tie_word_embeddings ?? false,
    torchDtype: c.torch_dtype ?? c.dtype ?? 'float32',
    hiddenAct: c.hidden_act ?? 'relu',
    slidingWindow: c.sliding_window ?? null,
  };
}
