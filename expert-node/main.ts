// An expert node process: bind (health NOT_SERVING), load only its pairs'
// weights, then SERVING; SIGTERM/SIGINT (or the parent of a local cluster
// going away) drains and stops. `turbosparse expert-node` (cli/expert-node.ts) calls runExpertNode.
import path from 'node:path';
import { UserError } from '../core/errors';
import { parseExpertSpec } from '../core/expert-spec';
import { ModelFolder } from '../core/model-folder';
import { native, type Device, type NativeBackend, type StoreDType } from '../core/native';
import { ExpertStore } from './expert-store';
import { createServer, type ExpertNodeHooks, type ExpertNodeServer } from './server';

export interface ExpertNodeOptions {
  model: string;
  experts: string;
  port: number;
  host: string;
  device: Device | 'auto';
  threads: number;
  weights: StoreDType | 'auto';
  /** Dense-with-mask FFN instead of sparse. */
  dense?: boolean;
  /** Drain time on SIGTERM before streams are cut. */
  graceMs: number;
  /** A name for log lines ("node1"). */
  name?: string;
  hooks?: ExpertNodeHooks;
  log?: (line: string) => void;
}

/** Messages a node sends its parent over IPC when a local cluster spawned it. */
export type NodeParentMessage =
  | { event: 'listening'; port: number }
  | { event: 'serving'; experts: string; weightBytes: number }
  | { event: 'failed'; message: string };

export interface RunningExpertNode {
  port: number;
  server: ExpertNodeServer;
  /** Drains and frees everything; resolves when the process may exit. */
  stop(): Promise<void>;
}

export async function runExpertNode(opts: ExpertNodeOptions): Promise<RunningExpertNode> {
  const tag = opts.name ? `expert-node ${opts.name}` : 'expert-node';
  const log = opts.log ?? ((line: string) => process.stderr.write(`${tag}: ${line}\n`));
  const folder = await ModelFolder.open(opts.model);
  const c = folder.config;
  let backend: NativeBackend | undefined;
  let server: ExpertNodeServer | undefined;
  let store: ExpertStore | undefined;
  let port = 0;
  try {
    const pairs = parseExpertSpec(opts.experts, c, '--experts');
    const mod = native();
    if (opts.device === 'cuda' && !mod.deviceAvailable('cuda')) {
      throw new UserError('--device cuda: no usable CUDA device (or the addon was built without CUDA); use --device cpu');
    }
    backend = mod.createBackend(opts.device, opts.threads);
    server = createServer({ modelId: path.basename(path.resolve(opts.model)), version: mod.version(), hooks: opts.hooks, log });
    port = await server.listen(opts.host, opts.port);
    log(`listening on ${opts.host}:${port} (NOT_SERVING until weights load); device ${backend.description}`);
    process.send?.({ event: 'listening', port } satisfies NodeParentMessage);

    const t0 = Date.now();
    let lastLog = 0;
    store = await ExpertStore.load({
      source: folder,
      dims: c,
      pairs,
      backend,
      weights: opts.weights,
      mode: opts.dense ? 'dense' : 'sparse',
      onLoaded: (done, total) => {
        if (Date.now() - lastLog > 2000 || done === total) {
          lastLog = Date.now();
          log(`loaded ${done}/${total} experts`);
        }
      },
    });
    await folder.close();
    server.setStore(store);
    log(`SERVING ${pairs.length} experts (${store.spec}), ${(backend.weightBytes() / 1e6).toFixed(1)} MB ${store.dtype}, ` +
      `loaded in ${((Date.now() - t0) / 1000).toFixed(1)} s`);
    process.send?.({ event: 'serving', experts: store.spec, weightBytes: backend.weightBytes() } satisfies NodeParentMessage);
  } catch (e) {
    server?.forceShutdown();
    store?.close();
    backend?.close();
    await folder.close();
    throw e;
  }

  let stopping: Promise<void> | undefined;
  const srv = server;
  const st = store;
  const be = backend;
  return {
    port,
    server: srv,
    stop: () => {
      stopping ??= (async () => {
        await srv.shutdown(opts.graceMs);
        st.close();
        be.close();
      })();
      return stopping;
    },
  };
}

/**
 * Runs a node until SIGTERM/SIGINT, or until the parent that spawned it with
 * an IPC channel (coordinator/local-cluster.ts) exits: no orphan processes.
 */
export async function serveUntilStopped(opts: ExpertNodeOptions): Promise<void> {
  const log = (line: string) => process.stderr.write(`${opts.name ? `expert-node ${opts.name}` : 'expert-node'}: ${line}\n`);
  // The parent may vanish while weights load: exit at once then.
  const orphaned = () => process.exit(0);
  if (process.send) process.once('disconnect', orphaned);
  let node: RunningExpertNode;
  try {
    node = await runExpertNode({ ...opts, log });
  } catch (e) {
    process.send?.({ event: 'failed', message: (e as Error).message } satisfies NodeParentMessage);
    throw e;
  }
  if (process.send) process.off('disconnect', orphaned);
  const signals = ['SIGTERM', 'SIGINT'] as const;
  let onSignal: Record<string, () => void> = {};
  let onDisconnect = () => undefined as void;
  await new Promise<void>((resolve) => {
    const stop = (why: string) => {
      log(`${why}: draining (grace ${opts.graceMs} ms)`);
      node.stop().then(resolve, resolve);
    };
    onSignal = Object.fromEntries(signals.map((s) => [s, () => stop(s)]));
    for (const s of signals) process.once(s, onSignal[s]);
    onDisconnect = () => stop('parent exited');
    if (process.send) process.once('disconnect', onDisconnect);
  });
  for (const s of signals) process.off(s, onSignal[s]);
  process.off('disconnect', onDisconnect);
  // The IPC channel to a local-cluster parent would keep this process alive.
  if (process.connected) process.disconnect();
  log('stopped');
}
