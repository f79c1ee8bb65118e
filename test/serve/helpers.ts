// A real server on a free loopback port: engine (local experts) -> scheduler -> HTTP.
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import OpenAI from 'openai';
import { ChatTemplate } from '../../core/chat-template';
import { makeDemoModel, type DemoModelOptions } from '../../core/demo-model';
import { Registry } from '../../core/metrics';
import { TextTokenizer } from '../../core/tokenizer';
import type { Engine } from '../../coordinator/engine';
import { loadEngine } from '../../coordinator/load-engine';
import { Scheduler, type SchedulerOptions } from '../../coordinator/scheduler';
import { createHttpServer, type HttpServer, type HttpServerOptions } from '../../coordinator/http/server';

export const quiet = { log: () => undefined };

export interface TestServer {
  url: string;
  engine: Engine;
  scheduler: Scheduler;
  http: HttpServer;
  tokenizer: TextTokenizer;
  metrics: Registry;
  close(): Promise<void>;
}

export async function loadTestEngine(modelDir: string): Promise<Engine> {
  return loadEngine({ modelDir, device: 'cpu', threads: 1, ...quiet });
}

/** Serves `engine` (shared across servers of one test file; closing a server leaves it open). */
export async function serve(
  engine: Engine,
  opts: {
    scheduler?: SchedulerOptions;
    apiKey?: string;
    ready?: () => boolean;
    modelName?: string;
    /** More server options (limits, timeouts, routes). */
    http?: Partial<HttpServerOptions>;
  } = {},
): Promise<TestServer> {
  const metrics = new Registry();
  const tokenizer = TextTokenizer.fromModel(engine.folder);
  const scheduler = new Scheduler(engine, tokenizer, { metrics, ...opts.scheduler });
  const http = createHttpServer({
    scheduler,
    tokenizer,
    modelName: opts.modelName ?? 'tiny',
    chatTemplate: ChatTemplate.fromModel(engine.folder.dir, engine.folder.tokenizerConfig),
    apiKey: opts.apiKey,
    ready: opts.ready,
    metrics,
    log: () => undefined,
    ...opts.http,
  });
  const { url } = await http.listen(0);
  return {
    url,
    engine,
    scheduler,
    http,
    tokenizer,
    metrics,
    async close() {
      await http.close();
      await scheduler.close();
      await tokenizer.close();
    },
  };
}

/** Polls until `cond` holds (or fails the test after `ms`). */
export async function waitFor(cond: () => boolean | Promise<boolean>, ms = 10000, what = 'condition'): Promise<void> {
  const end = Date.now() + ms;
  while (!(await cond())) {
    if (Date.now() > end) throw new Error(`timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 20));
  }
}

/** The small demo model most serving tests run on. */
export const SMALL_DEMO: Partial<DemoModelOptions> = {
  layers: 2, hidden: 64, intermediate: 128, heads: 4, kvHeads: 2, experts: 4, topK: 2, vocab: 300, predictorRank: 16, shards: 1,
};

export interface DemoContext {
  dir: string;
  engine: Engine;
  tokenizer: TextTokenizer;
  /** With `server`: it serves the engine, and `client` (the official OpenAI client) talks to it. */
  server: TestServer;
  client: OpenAI;
}

/**
 * For one test file: writes a demo model to a temp dir and loads it (and, given `server`
 * options, serves it) before the tests; closes everything and removes the dir after.
 * The fields are set once the file's first beforeAll has run.
 */
export function useDemoModel(
  opts: Partial<DemoModelOptions> = SMALL_DEMO,
  server?: { scheduler?: SchedulerOptions; modelName?: string },
): DemoContext {
  const ctx = {} as DemoContext;
  beforeAll(async () => {
    ctx.dir = fs.mkdtempSync(path.join(os.tmpdir(), 'ts-demo-'));
    await makeDemoModel(ctx.dir, opts);
    ctx.engine = await loadTestEngine(ctx.dir);
    ctx.tokenizer = TextTokenizer.fromModel(ctx.engine.folder);
    if (server) {
      ctx.server = await serve(ctx.engine, server);
      ctx.client = new OpenAI({ apiKey: 'unused', baseURL: `${ctx.server.url}/v1`, maxRetries: 0 });
    }
  });
  afterAll(async () => {
    await ctx.server?.close();
    await ctx.engine?.close();
    if (ctx.dir) fs.rmSync(ctx.dir, { recursive: true, force: true });
  });
  return ctx;
}
