// Request bodies of /v1/completions and /v1/chat/completions, validated with zod.
// Fields OpenAI defines that this server cannot honour are refused by name
// (rather than silently ignored) unless they carry their neutral value; unknown
// fields are ignored, as vLLM does, so job data may carry extra keys.
import { z } from 'zod';
import { MAX_TOP_LOGPROBS } from '../logprobs';
import { badRequest } from './errors';

const tokenId = z.number().int().nonnegative();

/** Accepted only at their neutral value. */
const neutral = <T extends z.ZodType>(schema: T, ok: (v: z.infer<T>) => boolean, what: string) =>
  schema.nullish().refine((v) => v === null || v === undefined || ok(v as z.infer<T>), { message: `${what} is not supported by this server` });

const common = {
  model: z.string().nullish(),
  max_tokens: z.number().int().nonnegative().nullish(),
  temperature: z.number().min(0).max(2).nullish(),
  top_p: z.number().gt(0).max(1).nullish(),
  /** vLLM extension: -1 or 0 = off. */
  top_k: z.number().int().min(-1).nullish(),
  /** vLLM extension: drop tokens less likely than min_p times the most likely one. */
  min_p: z.number().min(0).max(1).nullish(),
  /** vLLM extensions: more token ids that end generation; stop ids and EOS not before min_tokens. */
  stop_token_ids: z.array(tokenId).max(64).nullish(),
  min_tokens: z.number().int().nonnegative().nullish(),
  n: z.number().int().min(1).max(128).nullish(),
  stop: z.union([z.string(), z.array(z.string()).max(16)]).nullish(),
  seed: z.number().int().min(Number.MIN_SAFE_INTEGER).max(Number.MAX_SAFE_INTEGER).nullish(),
  stream: z.boolean().nullish(),
  stream_options: z.object({ include_usage: z.boolean().nullish() }).nullish(),
  /** vLLM extension: add the generated ids to each choice. */
  return_token_ids: z.boolean().nullish(),
  /** vLLM extension: keep generating past EOS. */
  ignore_eos: z.boolean().nullish(),
  user: z.string().nullish(),
  presence_penalty: z.number().min(-2).max(2).nullish(),
  frequency_penalty: z.number().min(-2).max(2).nullish(),
  /** vLLM extension: > 1 discourages tokens already in the prompt or output, 1 = off. */
  repetition_penalty: z.number().gt(0).max(10).nullish(),
  /** Token id (as a string) -> bias added to its logit. */
  logit_bias: z.record(z.string(), z.number().min(-100).max(100)).nullish(),
};

export const completionBody = z.object({
  ...common,
  prompt: z.unknown(),
  echo: z.boolean().nullish(),
  /** Log-probabilities of each token with this many alternatives (0: the token's own only). */
  logprobs: z.number().int().min(0).max(MAX_TOP_LOGPROBS).nullish(),
  best_of: z.number().int().min(1).nullish(),
  suffix: neutral(z.string(), (v) => v === '', 'suffix'),
});

const textPart = z.object({ type: z.literal('text'), text: z.string() });
const message = z.object({
  role: z.enum(['system', 'developer', 'user', 'assistant', 'tool']),
  content: z.union([z.string(), z.array(z.unknown()), z.null()]).optional(),
  name: z.string().optional(),
});

export const chatBody = z.object({
  ...common,
  messages: z.array(message).min(1),
  max_completion_tokens: z.number().int().nonnegative().nullish(),
  logprobs: z.boolean().nullish(),
  top_logprobs: z.number().int().min(0).max(MAX_TOP_LOGPROBS).nullish(),
  tools: neutral(z.array(z.unknown()), (v) => v.length === 0, 'tools'),
  tool_choice: neutral(z.unknown(), (v) => v === 'none', 'tool_choice'),
  response_format: neutral(z.object({ type: z.string() }), (v) => v.type === 'text', 'response_format other than text'),
});

/** vLLM's POST /tokenize: a prompt, or chat messages (through the chat template). */
export const tokenizeBody = z.object({
  model: z.string().nullish(),
  prompt: z.string().nullish(),
  messages: z.array(message).min(1).nullish(),
  /** prompt only: add BOS as generation does (default true). */
  add_special_tokens: z.boolean().nullish(),
});

/** vLLM's POST /detokenize. */
export const detokenizeBody = z.object({
  model: z.string().nullish(),
  tokens: z.array(tokenId),
});

export type CompletionBody = z.infer<typeof completionBody>;
export type ChatBody = z.infer<typeof chatBody>;
export type Endpoint = 'completions' | 'chat.completions';

/** "messages[0].content" from a zod path. */
function fieldName(p: readonly PropertyKey[]): string {
  let s = '';
  for (const k of p) s += typeof k === 'number' ? `[${k}]` : s ? `.${String(k)}` : String(k);
  return s;
}

/** Validates a body; throws a 400 ApiError naming the first bad field. */
export function parseBody<T extends z.ZodType>(schema: T, body: unknown): z.infer<T> {
  if (typeof body !== 'object' || body === null || Array.isArray(body)) {
    throw badRequest('the request body must be a JSON object');
  }
  const r = schema.safeParse(body);
  if (!r.success) {
    const issue = r.error.issues[0];
    const field = fieldName(issue.path);
    let msg = issue.message;
    if (issue.code === 'invalid_type' && (body as Record<string, unknown>)[field] === undefined && issue.path.length === 1) {
      msg = 'this field is required';
    }
    throw badRequest(`${field || 'body'}: ${msg}`, field || null);
  }
  return r.data;
}

/** The prompt field: text, token ids, or a list of either (one choice set per prompt). */
export function parsePrompt(prompt: unknown): (string | number[])[] {
  const bad = (why: string, param = 'prompt') =>
    badRequest(`${param}: ${why} (expected a string, an array of strings, an array of token ids, or an array of arrays of token ids)`, param);
  if (prompt === undefined || prompt === null) throw badRequest('prompt: this field is required', 'prompt');
  if (typeof prompt === 'string') return [prompt];
  if (!Array.isArray(prompt)) throw bad(`got ${typeof prompt}`);
  if (prompt.length === 0) throw bad('must not be empty');
  if (prompt.every((p) => typeof p === 'string')) return prompt as string[];
  if (prompt.every((p) => typeof p === 'number')) {
    checkIds(prompt as number[], 'prompt');
    return [prompt as number[]];
  }
  if (prompt.every((p) => Array.isArray(p))) {
    return (prompt as unknown[][]).map((p, i) => {
      if (p.length === 0 || !p.every((x) => typeof x === 'number')) throw bad('each token-id list must be a non-empty array of integers', `prompt[${i}]`);
      checkIds(p as number[], `prompt[${i}]`);
      return p as number[];
    });
  }
  throw bad('mixed element types');
}

function checkIds(ids: number[], param: string): void {
  for (let i = 0; i < ids.length; i++) {
    if (!tokenId.safeParse(ids[i]).success) throw badRequest(`${param}[${i}]: token ids must be non-negative integers, got ${ids[i]}`, `${param}[${i}]`);
  }
}

/** A message's content as text; only text parts are supported. */
export function messageText(content: unknown, index: number): string {
  if (content === undefined || content === null) return '';
  if (typeof content === 'string') return content;
  const parts = content as unknown[];
  return parts
    .map((p, j) => {
      const r = textPart.safeParse(p);
      if (!r.success) throw badRequest(`messages[${index}].content[${j}]: only {"type": "text", "text": ...} parts are supported`, `messages[${index}].content[${j}]`);
      return r.data.text;
    })
    .join('');
}
