// Whether a request fits the model and the server, checked in one place: a non-empty prompt of
// vocabulary ids shorter than the context, max_tokens a count, and prompt + max_tokens within
// the KV budget (a sequence may grow to that). The engine checks the prompt before it allocates
// a cache, the scheduler the whole request before it queues it, and the OpenAI API the same
// before the scheduler does, with the client's field names and OpenAI's codes (the scheduler
// cannot know which field was sent) and OpenAI's rule that prompt + max_tokens fits the context
// (the scheduler itself stops a sequence at the context instead).
import type { ModelConfig } from '../core/config';
import { UserError } from '../core/errors';
import type { Engine } from './engine';

/** What the checks read of the engine. */
export type LimitsEngine = Pick<Engine, 'config' | 'kvBytesFor' | 'kvTokensLimit'>;

/** The client's names for the fields (the API's messages name them). */
export interface RequestFields {
  /** Where the prompt came from: 'prompt', 'prompt[2]' or 'messages'. */
  prompt: string;
  /** Where max tokens came from: 'max_tokens' or 'max_completion_tokens'. */
  maxTokens: string;
}

/** A request beyond a limit: a UserError (a 400), with OpenAI's error code where it has one. */
export class RequestLimitError extends UserError {
  constructor(
    message: string,
    param: string | null = null,
    readonly code: 'context_length_exceeded' | null = null,
  ) {
    super(message, param);
  }
}

/** OpenAI's context_length_exceeded for a prompt of `tokens` tokens (a count, or e.g. "at least 5000" from its bytes). */
export function contextExceeded(field: string, context: number, tokens: number | string): RequestLimitError {
  return new RequestLimitError(
    `${field}: this model's maximum context length is ${context} tokens, but the prompt has ${tokens} tokens: shorten it`,
    field,
    'context_length_exceeded',
  );
}

/**
 * Throws RequestLimitError for a prompt no sequence can take: empty, an id outside the
 * vocabulary, or no shorter than the context. `field`: the client's name for it (the API).
 */
export function checkPrompt(config: Pick<ModelConfig, 'vocabSize' | 'maxPositionEmbeddings'>, promptIds: readonly number[], field?: string): void {
  const ctx = config.maxPositionEmbeddings;
  const vocab = config.vocabSize;
  if (promptIds.length === 0) {
    throw field ? new RequestLimitError(`${field}: the prompt is empty`, field) : new RequestLimitError('prompt is empty: give at least one token');
  }
  const bad = promptIds.findIndex((id) => !Number.isInteger(id) || id < 0 || id >= vocab);
  if (bad >= 0) {
    const id = promptIds[bad];
    throw field
      ? new RequestLimitError(`${field}: token id ${id} is outside the vocabulary (0..${vocab - 1})`, field)
      : new RequestLimitError(`prompt token id ${id} is outside the vocabulary (0..${vocab - 1})`);
  }
  if (promptIds.length >= ctx) {
    throw field
      ? contextExceeded(field, ctx, promptIds.length)
      : new RequestLimitError(`prompt has ${promptIds.length} tokens; the model's context is ${ctx}: shorten the prompt`);
  }
}

/** The limits of one server: the model's (vocabulary, context) and its KV budget. */
export class RequestLimits {
  constructor(
    private readonly engine: LimitsEngine,
    /** Bytes of KV cache all running sequences may hold together: one request alone must fit. */
    readonly kvBudgetBytes: number,
  ) {}

  /** KV bytes a request can hold at most: prompt + max tokens, capped at the context. */
  requestBytes(promptTokens: number, maxTokens: number): number {
    return this.engine.kvBytesFor(this.engine.kvTokensLimit(promptTokens, maxTokens));
  }

  /**
   * The most tokens a request with this prompt may generate and still fit the KV budget alone
   * (capped at the context); -1 when the prompt by itself does not fit.
   */
  maxTokensFitting(promptTokens: number): number {
    const room = this.engine.config.maxPositionEmbeddings - promptTokens;
    // KV bytes are linear in the positions.
    const fit = Math.floor(this.kvBudgetBytes / this.engine.kvBytesFor(1)) - promptTokens;
    return room < 0 || fit < 0 ? -1 : Math.min(room, fit);
  }

  /**
   * Throws RequestLimitError for a request that can never run: its prompt (checkPrompt),
   * max_tokens not a count, or prompt + max_tokens beyond the KV budget. With `fields` (the
   * API), prompt + max_tokens beyond the context too, and the messages name those fields.
   */
  check(promptIds: readonly number[], maxTokens: number, fields?: RequestFields): void {
    const ctx = this.engine.config.maxPositionEmbeddings;
    const n = promptIds.length;
    checkPrompt(this.engine.config, promptIds, fields?.prompt);
    const maxField = fields?.maxTokens ?? 'max_tokens';
    if (!Number.isInteger(maxTokens) || maxTokens < 0) throw new RequestLimitError(`${maxField} must be a non-negative integer, got ${maxTokens}`, fields ? maxField : null);
    if (fields && n + maxTokens > ctx) {
      throw new RequestLimitError(
        `${maxField}: this model's maximum context length is ${ctx} tokens; you requested ${n + maxTokens} ` +
          `(${n} in the prompt, ${maxTokens} to generate): lower ${maxField}`,
        maxField,
        'context_length_exceeded',
      );
    }
    // Alone it must be able to finish: it may grow to prompt + max_tokens.
    const bytes = this.requestBytes(n, maxTokens);
    if (bytes <= this.kvBudgetBytes) return;
    if (!fields) {
      throw new RequestLimitError(
        `max_tokens: the request needs ${mb(bytes)} of KV cache (prompt ${n} + max_tokens ${maxTokens} tokens) ` +
          `but the server's KV budget is ${mb(this.kvBudgetBytes)}: lower max_tokens or shorten the prompt`,
      );
    }
    const fitting = this.maxTokensFitting(n);
    if (fitting < 0) {
      throw new RequestLimitError(`${fields.prompt}: the prompt's ${n} tokens alone need more KV cache than the server's budget holds: shorten it`, fields.prompt);
    }
    throw new RequestLimitError(
      `${maxField}: the server's KV cache budget holds ${fitting} generated tokens after this prompt of ${n} tokens, ` +
        `but ${maxTokens} were requested: lower ${maxField} or shorten the prompt`,
      maxField,
    );
  }
}

function mb(bytes: number): string {
  return `${(bytes / 2 ** 20).toFixed(1)} MiB`;
}
