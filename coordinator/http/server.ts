// The OpenAI-compatible HTTP API on Node's `http` module (no framework):
//
//   POST /v1/completions, POST /v1/chat/completions   (stream: true -> server-sent events)
//   GET  /v1/models, /health, /ready, /metrics
//   POST /tokenize, /detokenize (vLLM's; behind the API key like /v1/*)
//
// `createHttpServer` is apart from the CLI so tests bind port 0. Every failure
// becomes an OpenAI error object with its status; nothing a client sends can
// crash the process (guard.ts) or hold a connection for long (timeouts, a
// connection cap). A client that goes away cancels its sequences.
import http from 'node:http';
import { createBoundedServer, listenHttp } from '../../core/http-listen';
import { timingSafeEqual } from 'node:crypto';
import { metrics as globalMetrics, PROMETHEUS_CONTENT_TYPE, type Registry } from '../../core/metrics';
import { ApiError, badTarget, expertsUnavailable, methodNotAllowed, routePath, toApiError } from '../api/errors';
import { guarded } from './guard';
import { routeLabel } from '../telemetry/route-label';
import { OpenAIApi, type OpenAIApiOptions } from '../api/openai-api';
import type { Endpoint } from '../api/schemas';

export interface HttpServerOptions extends OpenAIApiOptions {
  /** When set, /v1/*, /tokenize, /detokenize, /status.json and /metrics need `Authorization: Bearer <apiKey>`. */
  apiKey?: string;
  /** With apiKey: /metrics stays open (for a Prometheus scraper without the key). */
  publicMetrics?: boolean;
  /** A request's headers must arrive within this (default 10 s); then 408 and the connection closes. */
  headersTimeoutMs?: number;
  /** A whole request (headers and body) must arrive within this (default 30 s). Responses may take longer. */
  requestTimeoutMs?: number;
  /** Open connections at most (default 1024); one more is closed at once. */
  maxConnections?: number;
  /** True once every expert is reachable; /ready and generation answer 503 until then. Default: always ready. */
  ready?: () => boolean | Promise<boolean>;
  /** Where /metrics reads from (and HTTP counters go); default the process-wide registry. */
  metrics?: Registry;
  /** Largest request body accepted (413 beyond). Default: what a full context's prompts can need (OpenAIApi.bodyLimit). */
  maxBodyBytes?: number;
  /** One line per server-side failure (500s). */
  log?: (line: string) => void;
  /**
   * Extra routes tried before 404, e.g. the status page (coordinator/telemetry/status-routes.ts):
   * each answers and returns true, or returns false. Paths under /v1/ need the API key first.
   */
  routes?: ((req: http.IncomingMessage, res: http.ServerResponse, pathname: string) => boolean)[];
}

export interface HttpServer {
  readonly server: http.Server;
  readonly api: OpenAIApi;
  /** Binds (port 0 = any free port); resolves with the address and base URL. */
  listen(port?: number, host?: string): Promise<{ port: number; host: string; url: string }>;
  /**
   * Stops accepting; /ready turns 503 and new generation requests get 503 while requests in
   * flight get up to `graceMs` to finish; then open connections are ended (their sequences cancelled).
   */
  close(graceMs?: number): Promise<void>;
}

const ROUTES: Record<string, Endpoint> = { '/v1/completions': 'completions', '/v1/chat/completions': 'chat.completions' };

export function createHttpServer(opts: HttpServerOptions): HttpServer {
  const api = new OpenAIApi(opts);
  const reg = opts.metrics ?? globalMetrics;
  const ready = opts.ready ?? (() => true);
  const maxBody = opts.maxBodyBytes ?? api.bodyLimit;
  const log = opts.log ?? ((line: string) => process.stderr.write(line + '\n'));
  const requests = reg.counter({ name: 'turbosparse_http_requests_total', help: 'HTTP requests by route and status', labelNames: ['route', 'status'] });
  const latency = reg.histogram({
    name: 'turbosparse_http_request_seconds',
    help: 'HTTP request duration (to the last byte) by route',
    labelNames: ['route'],
    buckets: [0.01, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120],
  });
  const promptTokens = reg.counter({ name: 'turbosparse_prompt_tokens_total', help: 'Prompt tokens of accepted requests' });

  let draining = false;
  const isReady = async (): Promise<boolean> => {
    if (draining) return false;
    try {
      return await ready();
    } catch {
      return false;
    }
  };

  const authorized = (req: http.IncomingMessage): boolean => {
    if (!opts.apiKey) return true;
    const m = /^Bearer\s+(.+)$/i.exec(req.headers.authorization ?? '');
    if (!m) return false;
    const a = Buffer.from(m[1].trim());
    const b = Buffer.from(opts.apiKey);
    return a.length === b.length && timingSafeEqual(a, b);
  };

  async function generate(endpoint: Endpoint, req: http.IncomingMessage, res: http.ServerResponse): Promise<void> {
    // The client going away (socket closed before we finished) cancels everything, also while
    // its prompt is still being tokenized.
    const abort = new AbortController();
    res.on('close', () => {
      if (!res.writableFinished) abort.abort();
    });
    const body = await readJson(req, maxBody);
    const prepared = await api.prepareAsync(endpoint, body);
    if (abort.signal.aborted) return; // nobody to answer: generate nothing
    if (draining) throw new ApiError(503, 'the server is shutting down: retry on another instance', 'service_unavailable', null, 'shutting_down');
    if (!(await isReady())) throw expertsUnavailable();
    promptTokens.inc(undefined, prepared.prompts.reduce((s, p) => s + p.length, 0));

    if (!prepared.stream) {
      const out = await api.run(prepared, { signal: abort.signal });
      sendJson(res, 200, out);
      return;
    }
    let started = false;
    const write = (data: string): void => {
      if (!started) {
        started = true;
        res.writeHead(200, { 'content-type': 'text/event-stream; charset=utf-8', 'cache-control': 'no-cache', connection: 'keep-alive' });
        res.flushHeaders();
      }
      if (!res.writableEnded && !res.destroyed) res.write(`data: ${data}\n\n`);
    };
    try {
      await api.run(prepared, { signal: abort.signal, onChunk: (c) => write(JSON.stringify(c)) });
    } catch (e) {
      if (!started) throw e; // still a plain JSON error response
      const err = toApiError(e, await isReady());
      if (err.status >= 500) log(`stream failed: ${e instanceof Error ? (e.stack ?? e.message) : String(e)}`);
      write(JSON.stringify(err.toJSON()));
    }
    write('[DONE]');
    res.end();
  }

  async function handle(req: http.IncomingMessage, res: http.ServerResponse): Promise<number | void> {
    const path = routePath(req.url);
    if (path === null) throw badTarget();
    const method = req.method ?? 'GET';
    if (path === '/health') return method === 'GET' ? sendJson(res, 200, { status: 'ok' }) : notAllowed(method, path);
    if (path === '/ready') {
      if (method !== 'GET') return notAllowed(method, path);
      const ok = await isReady();
      const reason = draining ? 'shutting down' : 'not every expert is reachable';
      return sendJson(res, ok ? 200 : 503, ok ? { status: 'ready' } : { status: 'not ready', reason });
    }
    const tokenizing = path === '/tokenize' || path === '/detokenize';
    const metricsPath = path === '/metrics';
    // The status JSON and the metrics name nodes, the shard layout and recent errors.
    const secret = path.startsWith('/v1/') || tokenizing || path === '/status.json' || (metricsPath && !opts.publicMetrics);
    if (secret && !authorized(req)) {
      throw new ApiError(401, 'Incorrect or missing API key: send "Authorization: Bearer <key>"', 'invalid_request_error', null, 'invalid_api_key');
    }
    if (metricsPath) {
      if (method !== 'GET') return notAllowed(method, path);
      res.writeHead(200, { 'content-type': PROMETHEUS_CONTENT_TYPE });
      res.end(reg.text());
      return;
    }
    for (const route of opts.routes ?? []) if (route(req, res, path)) return;
    if (path === '/v1/models') return method === 'GET' ? sendJson(res, 200, api.models()) : notAllowed(method, path);
    if (tokenizing) {
      if (method !== 'POST') return notAllowed(method, path);
      const body = await readJson(req, maxBody);
      return sendJson(res, 200, path === '/tokenize' ? await api.tokenizeAsync(body) : api.detokenize(body));
    }
    const endpoint = ROUTES[path];
    if (endpoint) return method === 'POST' ? generate(endpoint, req, res) : notAllowed(method, path);
    throw new ApiError(404, `no route ${method} ${path}`, 'invalid_request_error', null, 'not_found');
  }

  const server = createBoundedServer(
    { requestTimeoutMs: opts.requestTimeoutMs ?? 30_000, headersTimeoutMs: opts.headersTimeoutMs, maxConnections: opts.maxConnections ?? 1024 },
    guarded(
      (req, res) => {
        const t0 = performance.now();
        const route = routeLabel(req.url);
        res.on('close', () => {
          // A response the client did not wait for counts as cancelled.
          requests.inc({ route, status: res.writableFinished ? res.statusCode : 'cancelled' });
          latency.observe({ route }, (performance.now() - t0) / 1000);
          // Draining: a keep-alive connection that just went idle is closed, so close() ends early.
          if (draining) setImmediate(() => server.closeIdleConnections());
        });
        return handle(req, res);
      },
      {
        toError: async (e) => toApiError(e, await isReady()),
        onError: (req, e, err) => {
          if (err.status >= 500 && err.code !== 'experts_unavailable' && err.code !== 'shutting_down') {
            log(`${req.method} ${req.url} failed: ${e instanceof Error ? (e.stack ?? e.message) : String(e)}`);
          }
        },
      },
    ),
  );

  return {
    server,
    api,
    listen(port = 0, host = '127.0.0.1') {
      return listenHttp(server, port, host);
    },
    close(graceMs = 0) {
      draining = true;
      return new Promise<void>((resolve) => {
        server.close(() => resolve());
        server.closeIdleConnections();
        const timer = setTimeout(() => server.closeAllConnections(), graceMs);
        timer.unref();
      });
    },
  };
}

function notAllowed(method: string, path: string): never {
  throw methodNotAllowed(method, path);
}

export function sendJson(res: http.ServerResponse, status: number, body: unknown): void {
  const text = JSON.stringify(body);
  res.writeHead(status, { 'content-type': 'application/json', 'content-length': Buffer.byteLength(text) });
  res.end(text);
}

/** Reads a body: 413 beyond `limit` bytes (`why`, when given, says what the limit is for). */
export async function readBody(req: http.IncomingMessage, limit: number, why?: string): Promise<Buffer> {
  const declared = Number(req.headers['content-length'] ?? NaN);
  if (declared > limit) throw tooLarge(limit, why);
  const chunks: Buffer[] = [];
  let size = 0;
  for await (const chunk of req) {
    size += (chunk as Buffer).length;
    if (size > limit) throw tooLarge(limit, why);
    chunks.push(chunk as Buffer);
  }
  return Buffer.concat(chunks);
}

/** Reads and parses a JSON body: 413 beyond `limit` bytes, 400 when it is not JSON. */
export async function readJson(req: http.IncomingMessage, limit: number, why?: string): Promise<unknown> {
  const text = (await readBody(req, limit, why)).toString('utf8');
  if (text.trim() === '') throw new ApiError(400, 'the request body is empty: send a JSON object', 'invalid_request_error');
  try {
    return JSON.parse(text);
  } catch (e) {
    throw new ApiError(400, `the request body is not valid JSON (${(e as Error).message})`, 'invalid_request_error');
  }
}

function tooLarge(limit: number, why?: string): ApiError {
  return new ApiError(413, `the request body is larger than ${limit} bytes${why ? `: ${why}` : ''}`, 'invalid_request_error', null, 'request_too_large');
}
