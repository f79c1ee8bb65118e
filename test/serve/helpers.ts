// A real server on a free loopback port: engine (local experts) -> scheduler -> HTTP.
import { ChatTemplate } from '../../core/chat-template';
import { Registry } from '../../core/metrics';
import { TextTokenizer } from '../../core/tokenizer';
import type { Engine } from '../../coordinator/engine';
import { loadEngine } from '../../coordinator/load-engine';
import { Scheduler, type SchedulerOptions } from '../../coordinator/scheduler';
import { createHttpServer, type HttpServer } from '../../coordinator/http/server';

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
  opts: { scheduler?: SchedulerOptions; apiKey?: string; ready?: () => boolean; modelName?: string } = {},
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
