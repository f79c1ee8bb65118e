// The OpenAI completions API on top of the scheduler, transport-free: `prepare`
// turns a body into token-id prompts and sampling settings (or a 400),
// `run` generates every choice through the shared scheduler and returns the
// response object, emitting stream chunks on the way when asked. The HTTP
// server and the BullMQ worker both call it, so a job's return value is exactly
// what the endpoint would have answered.
import { randomUUID } from 'node:crypto';
import { ChatTemplate, type ChatMessage } from '../../core/chat-template';
import type { EncodeOptions, TextTokenizer } from '../../core/tokenizer';
import type { SamplingParams } from '../sampler';
import type { GenerationRequest, GenerationResult, Scheduler, SequenceHandle } from '../scheduler';
import type { SequenceOptions } from '../sequence';
import { contextExceeded, RequestLimitError } from '../request-limits';
import { ApiError, badRequest, quoteValue } from './errors';
import type { LogprobEntry } from '../logprobs';
import { chatLogprobs, completionLogprobs, tokenTexts, type CompletionLogprobs, type TokenTexts } from './logprobs-format';
import {
  chatBody,
  completionBody,
  detokenizeBody,
  messageText,
  parseBody,
  parsePrompt,
  tokenizeBody,
  type ChatBody,
  type CompletionBody,
  type Endpoint,
} from './schemas';

export interface OpenAIApiOptions {
  scheduler: Scheduler;
  tokenizer: TextTokenizer;
  /** The id clients pass as `model` (GET /v1/models lists it). */
  modelName: string;
  chatTemplate?: ChatTemplate;
  /** Runs around every `run` (`run` is the request itself): telemetry's requestTracing. */
  onRequest?: <T>(p: Prepared, run: () => Promise<T>) => Promise<T>;
}

/**
 * A validated request: the prompts as ids, how many choices each, the SequenceOptions every
 * choice's GenerationRequest carries as they are (sampling, max tokens, stop criteria, prompt
 * logprobs), and how to answer.
 */
export interface Prepared extends SequenceOptions {
  endpoint: Endpoint;
  prompts: number[][];
  n: number;
  stream: boolean;
  includeUsage: boolean;
  returnTokenIds: boolean;
  /** Log-probabilities of generated tokens with this many alternatives; null: none. */
  logprobs: number | null;
  /** completions `echo`: each prompt's text (as given, or decoded from ids) starts its choices' text. */
  echo: string[] | null;
}

export interface RunOptions {
  /** Aborting cancels every sequence of the request. */
  signal?: AbortSignal;
  /** Stream chunks (OpenAI's chunk objects), in order. */
  onChunk?: (chunk: object) => void;
  /** Tokens generated so far over all choices. */
  onProgress?: (tokens: number) => void;
}

export interface TokenizeResult {
  count: number;
  max_model_len: number;
  tokens: number[];
}

/** The request's sequences were cancelled (client gone, job released) before they finished. */
export class RequestCancelledError extends Error {
  constructor() {
    super('the request was cancelled before it finished');
    this.name = 'RequestCancelledError';
  }
}

/** Tokens one request may bias (each costs work per sampled token). */
const MAX_LOGIT_BIAS = 1024;
/** Body bytes beside the prompts (sampling fields, logit_bias, message roles). */
const BODY_SLACK_BYTES = 2 ** 20;
/** Largest body whatever the context. */
const MAX_BODY_BYTES = 16 * 2 ** 20;

/** Texts to tokenize, and what to make of their ids: tokenizing may happen in place or off the event loop. */
interface Plan<T> {
  texts: { text: string; opts?: EncodeOptions }[];
  finish(ids: number[][]): T;
}

type Choice = { index: number; result: GenerationResult; promptIds: number[]; echo: string | null };

export class OpenAIApi {
  readonly scheduler: Scheduler;
  readonly tokenizer: TextTokenizer;
  readonly modelName: string;
  readonly chatTemplate: ChatTemplate;
  readonly contextLength: number;
  private readonly texts: TokenTexts;
  /** Token id of the template's end-of-turn marker when it is one token (e.g. <|im_end|>). */
  private readonly endOfTurnId: number | null;
  private readonly onRequest: OpenAIApiOptions['onRequest'];

  constructor(opts: OpenAIApiOptions) {
    this.scheduler = opts.scheduler;
    this.tokenizer = opts.tokenizer;
    this.modelName = opts.modelName;
    this.onRequest = opts.onRequest;
    this.chatTemplate = opts.chatTemplate ?? ChatTemplate.chatml();
    this.contextLength = opts.scheduler.engine.config.maxPositionEmbeddings;
    this.texts = tokenTexts(opts.tokenizer);
    const eot = this.chatTemplate.endOfTurn;
    const ids = eot ? this.tokenizer.encode(eot, { addBos: false }) : [];
    this.endOfTurnId = ids.length === 1 ? ids[0] : null;
  }

  /**
   * The largest request body worth reading: a full context of text at the most bytes a token
   * can cover, every byte JSON-escaped (\u00XX, 6 bytes), or of token ids (24 bytes each leaves
   * room for pretty-printing), plus room for the other fields; at most 16 MiB.
   */
  get bodyLimit(): number {
    const perToken = Math.max(6 * this.tokenizer.maxBytesPerToken, 24);
    return Math.min(MAX_BODY_BYTES, this.contextLength * perToken + BODY_SLACK_BYTES);
  }

  /** Validates and tokenizes a body; throws ApiError (400/404) naming the field. */
  prepare(endpoint: Endpoint, body: unknown): Prepared {
    return this.inPlace(this.preparePlan(endpoint, body));
  }

  /** prepare() with long prompts tokenized off the event loop (what a server calls). */
  prepareAsync(endpoint: Endpoint, body: unknown): Promise<Prepared> {
    return this.offLoop(this.preparePlan(endpoint, body));
  }

  private inPlace<T>(plan: Plan<T>): T {
    return plan.finish(plan.texts.map((t) => this.tokenizer.encode(t.text, t.opts)));
  }

  private async offLoop<T>(plan: Plan<T>): Promise<T> {
    return plan.finish(await this.tokenizer.encodeAsync(plan.texts));
  }

  private preparePlan(endpoint: Endpoint, body: unknown): Plan<Prepared> {
    checkLogitBiasSize(body);
    if (endpoint === 'completions') {
      const b = parseBody(completionBody, body);
      this.checkModel(b.model);
      const given = parsePrompt(b.prompt);
      if (b.best_of != null && b.best_of !== (b.n ?? 1)) throw badRequest('best_of: only best_of equal to n is supported', 'best_of');
      this.checkSequences(given.length * (b.n ?? 1));
      const texts = given.flatMap((p, i) => {
        if (typeof p !== 'string') return [];
        this.checkTextLength(p, given.length > 1 ? `prompt[${i}]` : 'prompt');
        return [{ text: p }];
      });
      return {
        texts,
        finish: (ids) => {
          let k = 0;
          const prompts = given.map((p) => (typeof p === 'string' ? ids[k++] : p));
          const prepared = this.finish(endpoint, b, prompts, b.max_tokens ?? 16, 'max_tokens', [], []);
          prepared.logprobs = b.logprobs ?? null;
          if (b.echo) {
            prepared.echo = given.map((p) => (typeof p === 'string' ? p : this.tokenizer.decode(p)));
            // Echoed prompts come with their logprobs when logprobs are asked for.
            if (b.logprobs != null) prepared.promptLogprobs = b.logprobs;
          }
          return prepared;
        },
      };
    }
    const b = parseBody(chatBody, body);
    this.checkModel(b.model);
    if (b.top_logprobs && b.logprobs !== true) throw badRequest('top_logprobs: set logprobs to true to use top_logprobs', 'top_logprobs');
    this.checkSequences(b.n ?? 1);
    return {
      texts: [this.chatText(b.messages)],
      finish: ([ids]) => {
        const field = b.max_completion_tokens != null ? 'max_completion_tokens' : 'max_tokens';
        // OpenAI's default is "the rest of the context"; here also no more than the KV budget holds,
        // so a request without max_tokens runs (finish_reason "length" at that point) instead of a 400.
        const maxTokens = b.max_completion_tokens ?? b.max_tokens ?? Math.max(0, this.scheduler.limits.maxTokensFitting(ids.length));
        const eot = this.chatTemplate.endOfTurn;
        const prepared = this.finish(
          endpoint,
          b,
          [ids],
          maxTokens,
          field,
          this.endOfTurnId !== null ? [this.endOfTurnId] : [],
          eot && this.endOfTurnId === null ? [eot] : [],
        );
        prepared.logprobs = b.logprobs ? (b.top_logprobs ?? 0) : null;
        return prepared;
      },
    };
  }

  /** Chat messages through the template, as generation tokenizes them. */
  private chatText(messages: ChatBody['messages']): { text: string; opts: EncodeOptions } {
    const text = this.chatTemplate.render(
      messages.map((m, i): ChatMessage => ({
        role: m.role,
        content: messageText(m.content, i),
        ...(m.name !== undefined ? { name: m.name } : {}),
      })),
    );
    this.checkTextLength(text, 'messages');
    // A template that writes BOS itself must not get a second one from the tokenizer.
    const bos = this.chatTemplate.bosToken;
    return { text, opts: bos && text.startsWith(bos) ? { addBos: false } : {} };
  }

  /**
   * A 400 context_length_exceeded, without tokenizing, for a text whose bytes alone prove it has
   * more tokens than the context holds (tokenizing megabytes takes seconds).
   */
  private checkTextLength(text: string, where: string): void {
    const ctx = this.contextLength;
    // Cheap first: no character is more than 3 UTF-8 bytes per UTF-16 unit.
    if (text.length * 3 <= (ctx - 1) * this.tokenizer.maxBytesPerToken) return;
    const atLeast = Math.ceil(Buffer.byteLength(text) / this.tokenizer.maxBytesPerToken);
    if (atLeast >= ctx) throw limitError(contextExceeded(where, ctx, `at least ${atLeast}`));
  }

  /** A 400 for more sequences than the scheduler can ever hold at once (not a 429: retrying cannot help). */
  private checkSequences(count: number): void {
    const most = this.scheduler.opts.maxRunning + this.scheduler.opts.maxQueue;
    if (count > most) {
      throw badRequest(
        `n: the request has ${count} sequences (prompts x n) but the server holds at most ${most} at once (running and waiting): send fewer prompts or a lower n`,
        'n',
      );
    }
  }

  /** POST /tokenize (vLLM): the ids a prompt, or chat messages, become. */
  tokenize(body: unknown): TokenizeResult {
    return this.inPlace(this.tokenizePlan(body));
  }

  /** tokenize() with a long text tokenized off the event loop. */
  tokenizeAsync(body: unknown): Promise<TokenizeResult> {
    return this.offLoop(this.tokenizePlan(body));
  }

  private tokenizePlan(body: unknown): Plan<TokenizeResult> {
    const b = parseBody(tokenizeBody, body);
    this.checkModel(b.model);
    if ((b.prompt == null) === (b.messages == null)) throw badRequest('prompt: give either prompt or messages', 'prompt');
    if (b.prompt != null) this.checkTextLength(b.prompt, 'prompt');
    const text = b.messages ? this.chatText(b.messages) : { text: b.prompt!, opts: b.add_special_tokens === false ? { addBos: false } : {} };
    return { texts: [text], finish: ([tokens]) => ({ count: tokens.length, max_model_len: this.contextLength, tokens }) };
  }

  /** POST /detokenize (vLLM): the text of ids, at most a context's worth. */
  detokenize(body: unknown): { prompt: string } {
    const tokens = (body as { tokens?: unknown } | null)?.tokens;
    if (Array.isArray(tokens) && tokens.length > this.contextLength) {
      throw badRequest(`tokens: at most ${this.contextLength} ids (the model's context length), got ${tokens.length}`, 'tokens');
    }
    const b = parseBody(detokenizeBody, body);
    this.checkModel(b.model);
    this.checkVocab(b.tokens, (i) => `tokens[${i}]`);
    return { prompt: this.tokenizer.decode(b.tokens) };
  }

  /** A 400 naming `field(i)` for the first id outside the vocabulary. */
  private checkVocab(ids: readonly number[], field: (i: number) => string): void {
    const vocab = this.scheduler.engine.config.vocabSize;
    const i = ids.findIndex((id) => id >= vocab);
    if (i >= 0) throw badRequest(`${field(i)}: token id ${ids[i]} is outside the vocabulary (0..${vocab - 1})`, field(i));
  }

  private checkModel(model: string | null | undefined): void {
    if (model != null && model !== this.modelName) {
      throw new ApiError(404, `model: ${quoteValue(model)} is not served here; this server serves ${quoteValue(this.modelName)}`, 'invalid_request_error', 'model', 'model_not_found');
    }
  }

  private finish(
    endpoint: Endpoint,
    b: CompletionBody | ChatBody,
    prompts: number[][],
    maxTokens: number,
    maxField: string,
    extraStopIds: number[],
    extraStops: string[],
  ): Prepared {
    prompts.forEach((p, i) => {
      const where = prompts.length > 1 ? `prompt[${i}]` : endpoint === 'completions' ? 'prompt' : 'messages';
      // The scheduler checks the same, but it does not know which field the client sent.
      try {
        this.scheduler.limits.check(p, maxTokens, { prompt: where, maxTokens: maxField });
      } catch (e) {
        throw e instanceof RequestLimitError ? limitError(e) : e;
      }
    });
    const stop = b.stop == null ? [] : typeof b.stop === 'string' ? [b.stop] : b.stop;
    if (stop.some((s) => s === '')) throw badRequest('stop: stop strings must not be empty', 'stop');
    const topK = b.top_k ?? 0;
    const vocab = this.scheduler.engine.config.vocabSize;
    const logitBias = new Map<number, number>();
    const biases = Object.entries(b.logit_bias ?? {});
    for (const [key, bias] of biases) {
      const id = Number(key);
      if (!/^\d+$/.test(key) || id >= vocab) {
        throw badRequest(`logit_bias: key "${key}" is not a token id (0..${vocab - 1})`, 'logit_bias');
      }
      if (logitBias.has(id)) throw badRequest(`logit_bias: token ${id} is given twice`, 'logit_bias');
      logitBias.set(id, bias);
    }
    const stopTokenIds = b.stop_token_ids ?? [];
    this.checkVocab(stopTokenIds, () => 'stop_token_ids');
    const minTokens = b.min_tokens ?? 0;
    if (minTokens > maxTokens) {
      throw badRequest(`min_tokens: ${minTokens} is more than ${maxField} = ${maxTokens}: lower min_tokens`, 'min_tokens');
    }
    return {
      endpoint,
      prompts,
      n: b.n ?? 1,
      maxTokens,
      sampling: {
        temperature: b.temperature ?? 1,
        topP: b.top_p ?? 1,
        topK: topK < 0 ? 0 : topK,
        minP: b.min_p ?? 0,
        logitBias: logitBias.size ? logitBias : undefined,
        seed: b.seed ?? undefined,
        presencePenalty: b.presence_penalty ?? 0,
        frequencyPenalty: b.frequency_penalty ?? 0,
        repetitionPenalty: b.repetition_penalty ?? 1,
      },
      stopStrings: [...stop, ...extraStops],
      stopIds: [...(b.ignore_eos ? [] : this.tokenizer.eosIds), ...extraStopIds, ...stopTokenIds],
      minTokens,
      stream: b.stream === true,
      includeUsage: b.stream_options?.include_usage === true,
      returnTokenIds: b.return_token_ids === true,
      logprobs: null,
      echo: null,
    };
  }

  /**
   * Generates every choice (prompts x n) together through the scheduler. Throws
   * QueueFullError / UserError before anything starts, StepError if the engine fails.
   */
  run(p: Prepared, opts: RunOptions = {}): Promise<object> {
    return this.onRequest ? this.onRequest(p, () => this.runNow(p, opts)) : this.runNow(p, opts);
  }

  private async runNow(p: Prepared, opts: RunOptions): Promise<object> {
    const chat = p.endpoint === 'chat.completions';
    const id = `${chat ? 'chatcmpl' : 'cmpl'}-${randomUUID().replace(/-/g, '')}`;
    const created = Math.floor(Date.now() / 1000);
    const base = { id, object: chat ? 'chat.completion.chunk' : 'text_completion', created, model: this.modelName };
    const stream = opts.onChunk;
    let generated = 0;

    const options = sequenceOptions(p);
    const reqs: GenerationRequest[] = [];
    const promptOf: number[][] = [];
    const echoOf: (string | null)[] = [];
    const logprobs = p.logprobs ?? undefined;
    // Streamed logprobs: per choice, the last token sent (the next one's text follows it) and the text offset.
    const sent: { prev: number | undefined; offset: number; echoed: boolean }[] = [];
    let handles: SequenceHandle[] = [];
    p.prompts.forEach((ids, i) => {
      for (let j = 0; j < p.n; j++) {
        const index = reqs.length;
        promptOf.push(ids);
        echoOf.push(p.echo ? p.echo[i] : null);
        sent.push({ prev: ids[ids.length - 1], offset: 0, echoed: false });
        reqs.push({
          ...options,
          promptIds: ids,
          sampling: choiceSampling(options.sampling, j),
          logprobs,
          onDelta: (d) => {
            generated += d.tokenIds.length;
            if (d.tokenIds.length) opts.onProgress?.(generated);
            if (!stream) return;
            if (!sent[index].echoed) streamEcho(index);
            if (d.text || p.returnTokenIds || d.logprobs) {
              const lp = d.logprobs ? this.deltaLogprobs(chat, d.tokenIds, d.logprobs, sent[index]) : null;
              stream(this.chunk(base, chat, index, d.text, null, p.returnTokenIds ? d.tokenIds : null, lp));
            }
          },
        });
      }
    });

    // completions echo, streamed: the prompt (with its logprobs, known once it is prefilled) goes first.
    const streamEcho = (index: number) => {
      const s = sent[index];
      s.echoed = true;
      if (echoOf[index] === null) return;
      const result = handles[index].seq?.promptLogprobs;
      const lp = logprobs === undefined ? null : this.echoLogprobs(promptOf[index], result ?? []);
      // The generated text's offsets start after the echoed prompt as returned.
      if (lp) s.offset = echoOf[index]!.length;
      stream!(this.chunk(base, chat, index, echoOf[index]!, null, null, lp));
    };

    // Throws (queue full, budget) before anything was streamed; deltas arrive only after the next step.
    handles = this.scheduler.submitAll(reqs);
    if (stream && chat) {
      // OpenAI opens each chat choice with the assistant role.
      reqs.forEach((_, index) => stream({ ...base, choices: [{ index, delta: { role: 'assistant', content: '' }, logprobs: null, finish_reason: null }] }));
    }
    const cancelAll = () => handles.forEach((h) => h.cancel());
    if (opts.signal?.aborted) cancelAll();
    opts.signal?.addEventListener('abort', cancelAll, { once: true });

    let choices: Choice[];
    try {
      choices = await Promise.all(
        handles.map(async (h, index) => {
          const result = await h.result;
          if (stream && result.finishReason !== 'cancelled') {
            if (!sent[index].echoed) streamEcho(index);
            stream(this.chunk(base, chat, index, '', finishReason(result), null));
          }
          return { index, result, promptIds: promptOf[index], echo: echoOf[index] };
        }),
      );
    } catch (e) {
      cancelAll();
      throw e;
    } finally {
      opts.signal?.removeEventListener('abort', cancelAll);
    }

    if (choices.some((c) => c.result.finishReason === 'cancelled')) throw new RequestCancelledError();
    const promptTokens = p.prompts.reduce((s, ids) => s + ids.length, 0);
    const completionTokens = choices.reduce((s, c) => s + c.result.tokenIds.length, 0);
    const usage = { prompt_tokens: promptTokens, completion_tokens: completionTokens, total_tokens: promptTokens + completionTokens };
    if (stream) {
      if (p.includeUsage) stream({ ...base, choices: [], usage });
      return { ...base, usage };
    }
    return {
      id,
      object: chat ? 'chat.completion' : 'text_completion',
      created,
      model: this.modelName,
      choices: choices.map((c) => this.choice(chat, c, p.returnTokenIds, p.logprobs !== null)),
      usage,
    };
  }

  private choice(chat: boolean, c: Choice, withIds: boolean, withLogprobs: boolean): object {
    const ids = withIds ? { prompt_token_ids: c.promptIds, token_ids: c.result.tokenIds } : {};
    const finish_reason = finishReason(c.result);
    const r = c.result;
    const last = c.promptIds[c.promptIds.length - 1];
    if (chat) {
      const logprobs = withLogprobs ? chatLogprobs(this.texts, r.logprobs ?? [], last) : null;
      return { index: c.index, message: { role: 'assistant', content: r.text }, logprobs, finish_reason, ...ids };
    }
    let logprobs: CompletionLogprobs | null = null;
    if (withLogprobs) {
      const echoed = c.echo !== null ? this.echoLogprobs(c.promptIds, r.promptLogprobs ?? []) : null;
      const gen = completionLogprobs(this.texts, r.tokenIds, r.logprobs ?? [], last, c.echo?.length ?? 0).logprobs;
      logprobs = echoed ? joinLogprobs(echoed, gen) : gen;
    }
    return { index: c.index, text: (c.echo ?? '') + r.text, logprobs, finish_reason, ...ids };
  }

  /** The prompt's tokens as completions logprobs: the first has none. */
  private echoLogprobs(promptIds: number[], entries: LogprobEntry[]): CompletionLogprobs {
    return completionLogprobs(this.texts, promptIds, [null, ...entries], undefined, 0).logprobs;
  }

  /** Logprobs of one streamed delta; advances the choice's previous token and text offset. */
  private deltaLogprobs(chat: boolean, ids: number[], entries: LogprobEntry[], s: { prev: number | undefined; offset: number }): object {
    let lp: object;
    if (chat) lp = chatLogprobs(this.texts, entries, s.prev);
    else ({ logprobs: lp, end: s.offset } = completionLogprobs(this.texts, ids, entries, s.prev, s.offset));
    s.prev = ids[ids.length - 1];
    return lp;
  }

  private chunk(
    base: object,
    chat: boolean,
    index: number,
    text: string,
    finish: string | null,
    tokenIds: number[] | null,
    logprobs: object | null = null,
  ): object {
    const ids = tokenIds ? { token_ids: tokenIds } : {};
    const choice = chat
      ? { index, delta: finish ? {} : { content: text }, logprobs, finish_reason: finish, ...ids }
      : { index, text, logprobs, finish_reason: finish, ...ids };
    return { ...base, choices: [choice] };
  }

  /** GET /v1/models */
  models(): object {
    return {
      object: 'list',
      data: [{ id: this.modelName, object: 'model', created: 0, owned_by: 'turbosparse', max_model_len: this.contextLength }],
    };
  }
}

/** The SequenceOptions of a prepared request: everything but the API's own fields. */
function sequenceOptions(p: Prepared): SequenceOptions {
  const { endpoint, prompts, n, stream, includeUsage, returnTokenIds, logprobs, echo, ...options } = p;
  return options;
}

/** Same seed, different samples: the j-th choice of a prompt draws with seed + j. */
function choiceSampling(sampling: SamplingParams, j: number): SamplingParams {
  return sampling.seed === undefined || j === 0 ? sampling : { ...sampling, seed: sampling.seed + j };
}

/** A request beyond a limit as OpenAI's 400 (with its code, e.g. context_length_exceeded). */
function limitError(e: RequestLimitError): ApiError {
  return badRequest(e.message, e.param, e.code);
}

/** Before the schema reads every key: a huge logit_bias is refused by its size. */
function checkLogitBiasSize(body: unknown): void {
  const bias = (body as { logit_bias?: unknown } | null)?.logit_bias;
  if (typeof bias !== 'object' || bias === null) return;
  const n = Object.keys(bias).length;
  if (n > MAX_LOGIT_BIAS) throw badRequest(`logit_bias: at most ${MAX_LOGIT_BIAS} tokens, got ${n}`, 'logit_bias');
}

/** OpenAI's finish_reason: "stop" (EOS or a stop string) or "length". */
function finishReason(r: GenerationResult): string {
  return r.finishReason === 'length' ? 'length' : 'stop';
}

/** Where the text after these tokens starts. */
function joinLogprobs(a: CompletionLogprobs, b: CompletionLogprobs): CompletionLogprobs {
  return {
    tokens: [...a.tokens, ...b.tokens],
    token_logprobs: [...a.token_logprobs, ...b.token_logprobs],
    top_logprobs: [...a.top_logprobs, ...b.top_logprobs],
    text_offset: [...a.text_offset, ...b.text_offset],
  };
}
