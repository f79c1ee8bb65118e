// An expert node process: bind (health NOT_SERVING), load only its pairs'
// weights, then SERVING; SIGTERM/SIGINT (or the parent of a local cluster
// going away) drains and stops. `turbosparse expert-node` (cli/expert-node.ts) calls runExpertNode.
import os from 'node:os';
import path from 'node:path';
import { UserError } from '../core/errors';
import { type ExpertPair, type ModelDims, parseExpertSpec } from '../core/expert-spec';
import { loadShardMap } from '../core/shard-map';
import { isLoopbackAddress, loadTlsFiles } from '../core/tls-files';
import { ModelFolder } from '../core/model-folder';
import { native, type Device, type NativeBackend, type StoreDType } from '../core/native';
import type { NodeStartupMessage } from '../core/node-startup-message';
import { ExpertStore, pairStoredBytes } from './expert-store';
import { selfBenchmark } from './self-benchmark';
import { createServer, type ExpertNodeHooks, type ExpertNodeServer } from './server';
import { createNodeTelemetry, startMetricsServer, type MetricsServer, type NodeTelemetry } from './telemetry';
import { EXPERT_NODE_SERVICE, setupTelemetry, shutdownTelemetry } from '../core/telemetry';

export interface ExpertNodeOptions {
  model: string;
  /** The pairs to hold as a SPEC, or `shardMap` + `shardIndex` (entry N of a shard-map file). */
  experts?: string;
  shardMap?: string;
  shardIndex?: number;
  port: number;
  host: string;
  device: Device | 'auto';
  threads: number;
  weights: StoreDType | 'auto';
  /** Dense-with-mask FFN instead of sparse. */
  dense?: boolean;
  /** Drain time on SIGTERM before streams are cut. */
  graceMs: number;
  /** Request MiB that may wait in the queue before more are refused RESOURCE_EXHAUSTED (default 1024). */
  maxQueueMb?: number;
  /** A name for log lines and Info's node_name ("node1"). */
  name?: string;
  /** Memory budget for expert weights in GiB (Info's memory_budget_bytes; LoadExperts past it is refused); absent: none. */
  memoryGib?: number;
  /** Benchmark option: answer as a node F >= 1 times slower (waits (F - 1) x each compute's time). Default 1. */
  slowdown?: number;
  /** Time the FFN at start for Info's ffn_bytes_per_s (default true; false reports 0: tests that start many nodes). */
  selfBenchmark?: boolean;
  hooks?: ExpertNodeHooks;
  /** Serve Prometheus metrics on this port (0 = any free port); absent: no metrics server. */
  metricsPort?: number;
  /** Also serve the gRPC health service alone, in plaintext, on this port (0 = any free port); for kubelet probes. */
  healthPort?: number;
  /** PEM files: TLS with cert + key; with a CA too, clients must present a certificate it signed (mTLS). */
  tlsCert?: string;
  tlsKey?: string;
  tlsCa?: string;
  log?: (line: string) => void;
}


export interface RunningExpertNode {
  port: number;
  /** The plaintext health port, when --health-port was given. */
  healthPort?: number;
  server: ExpertNodeServer;
  /** Drains and frees everything; resolves when the process may exit. */
  stop(): Promise<void>;
}

export async function runExpertNode(opts: ExpertNodeOptions): Promise<RunningExpertNode> {
  const tag = opts.name ? `expert-node ${opts.name}` : 'expert-node';
  const log = opts.log ?? ((line: string) => process.stderr.write(`${tag}: ${line}\n`));
  // Certificates first: a wrong path is one line before anything loads.
  const tls = loadTlsFiles(opts, 'server');
  const folder = await ModelFolder.open(opts.model);
  const c = folder.config;
  let backend: NativeBackend | undefined;
  let server: ExpertNodeServer | undefined;
  let store: ExpertStore | undefined;
  let nodeTel: NodeTelemetry | undefined;
  let metricsServer: MetricsServer | undefined;
  let port = 0;
  let healthPort: number | undefined;
  try {
    const { pairs, name: entryName } = shardToHold(opts, c);
    const slowdown = opts.slowdown ?? 1;
    if (!(slowdown >= 1) || !Number.isFinite(slowdown)) throw new UserError(`--slowdown ${slowdown}: must be a number >= 1 (1 = full speed)`);
    const budgetBytes = memoryBudgetBytes(opts.memoryGib);
    if (budgetBytes > 0) {
      const need = pairs.reduce((s, p) => s + pairStoredBytes(folder, c, opts.weights, p), 0);
      if (need > budgetBytes) {
        throw new UserError(`--memory-gib ${opts.memoryGib}: the ${pairs.length} experts to hold need ${(need / 2 ** 20).toFixed(1)} MiB ` +
          `as stored (--weights ${opts.weights}), more than the ${(budgetBytes / 2 ** 20).toFixed(1)} MiB budget; give a larger --memory-gib or fewer experts`);
      }
    }
    const mod = native();
    if (opts.device === 'cuda' && !mod.deviceAvailable('cuda')) {
      throw new UserError('--device cuda: no usable CUDA device (or the addon was built without CUDA); use --device cpu');
    }
    backend = mod.createBackend(opts.device, opts.threads);
    // A one-row call (one sequence decoding) runs on this thread: its compute is shorter than the libuv pool's
    // two thread hand-offs, and a node's JS thread has nothing else to do meanwhile. Larger batches stay on the
    // pool, so the next request is read and decoded while one computes.
    backend.setInlineRows(1);
    // Spans (when tracing is set up) and Prometheus metrics of every request; see telemetry.ts.
    // Spans and labels name the node as the coordinator does: --name, else its shard-map entry's name.
    const telName = opts.name ?? entryName;
    nodeTel = createNodeTelemetry({ node: telName ?? `${opts.host}:${opts.port}`, intermediateSize: c.intermediateSize });
    const hooks = combineHooks(nodeTel.hooks, opts.hooks);
    server = createServer({ modelId: path.basename(path.resolve(opts.model)), version: mod.version(), hooks, log,
      nodeName: opts.name ?? entryName ?? '', memoryBudgetBytes: budgetBytes,
      tls: tls && { cert: tls.cert!, key: tls.key!, ca: tls.ca },
      ...(opts.maxQueueMb !== undefined ? { maxQueuedBytes: opts.maxQueueMb * 2 ** 20 } : {}) });
    port = await server.listen(opts.host, opts.port);
    if (opts.healthPort !== undefined) healthPort = await server.listenHealth(opts.host, opts.healthPort);
    if (!telName) nodeTel.setNode(`${opts.host}:${port}`);
    if (opts.metricsPort !== undefined) {
      metricsServer = await startMetricsServer(opts.metricsPort, opts.host, nodeTel.registry);
      log(`metrics on ${metricsServer.url}`);
    }
    const security = !tls ? 'plaintext' : tls.ca ? `mTLS, clients verified against ${opts.tlsCa}` : 'TLS, no client certificates checked';
    log(`listening on ${opts.host}:${port} (gRPC and the run socket, ${security}; NOT_SERVING until weights load); device ${backend.description}`);
    if (healthPort !== undefined) log(`gRPC health (plaintext) on ${opts.host}:${healthPort}`);
    if (!tls?.ca && !isLoopbackAddress(opts.host)) {
      log(!tls
        ? `warning: plaintext gRPC on ${opts.host}:${port}, not loopback: anyone who reaches the port may call this node ` +
          'and read its traffic; give --tls-cert, --tls-key and --tls-ca for mTLS'
        : `warning: TLS without --tls-ca on ${opts.host}:${port}, not loopback: any client may call this node; ` +
          'give --tls-ca to require client certificates');
    }
    process.send?.({ event: 'listening', port, healthPort } satisfies NodeStartupMessage);

    const t0 = Date.now();
    let lastLog = 0;
    store = await ExpertStore.load({
      source: folder,
      dims: c,
      pairs,
      backend,
      weights: opts.weights,
      mode: opts.dense ? 'dense' : 'sparse',
      slowdown,
      onLoaded: (done, total) => {
        if (Date.now() - lastLog > 2000 || done === total) {
          lastLog = Date.now();
          log(`loaded ${done}/${total} experts`);
        }
      },
    });
    // The folder stays open: LoadExperts reads more pairs from it.
    let ffnBytesPerS = 0;
    if (opts.selfBenchmark !== false) {
      const b = await selfBenchmark(store);
      ffnBytesPerS = b.ffnBytesPerS;
      log(`self-benchmark: sparse FFN reads ${(ffnBytesPerS / 1e9).toFixed(3)} GB/s of active weights (layer ${b.layer}, ` +
        `${b.rows} experts x 1 token, ~15% active, ${b.calls} calls in ${b.ms.toFixed(0)} ms${slowdown > 1 ? `, --slowdown ${slowdown}` : ''})`);
    }
    server.setStore(store, { ffnBytesPerS });
    log(`SERVING ${pairs.length} experts (${store.spec}), ${(backend.weightBytes() / 1e6).toFixed(1)} MB ${store.dtype}, ` +
      `loaded in ${((Date.now() - t0) / 1000).toFixed(1)} s`);
    process.send?.({ event: 'serving', experts: store.spec, weightBytes: backend.weightBytes() } satisfies NodeStartupMessage);
  } catch (e) {
    await metricsServer?.close();
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
    healthPort,
    server: srv,
    stop: () => {
      stopping ??= (async () => {
        await srv.shutdown(opts.graceMs);
        await metricsServer?.close();
        st.close();
        be.close();
        await folder.close();
      })();
      return stopping;
    },
  };
}

/** --memory-gib G as bytes (0 = no budget). */
function memoryBudgetBytes(gib: number | undefined): number {
  if (gib === undefined) return 0;
  if (!Number.isFinite(gib) || gib <= 0) throw new UserError(`--memory-gib ${gib}: must be a number of GiB > 0 (leave it out for no budget)`);
  return Math.floor(gib * 2 ** 30);
}

/** `--experts SPEC`, or entry `--shard-index` of `--shard-map FILE` (how a StatefulSet pod picks its shard). */
export function pairsToHold(opts: Pick<ExpertNodeOptions, 'experts' | 'shardMap' | 'shardIndex'>, dims: ModelDims): ExpertPair[] {
  return shardToHold(opts, dims).pairs;
}

/** The pairs to hold and, from a shard map, the entry's name (the map is read once). */
function shardToHold(opts: Pick<ExpertNodeOptions, 'experts' | 'shardMap' | 'shardIndex'>, dims: ModelDims): { pairs: ExpertPair[]; name?: string } {
  if (opts.experts !== undefined && opts.shardMap !== undefined) {
    throw new UserError('give either --experts SPEC or --shard-map FILE with --shard-index N, not both');
  }
  if (opts.experts !== undefined) return { pairs: parseExpertSpec(opts.experts, dims, '--experts') };
  if (opts.shardMap === undefined) throw new UserError('say which experts to hold: --experts SPEC (e.g. "0-31:0-3"), or --shard-map FILE --shard-index N');
  if (opts.shardIndex === undefined) throw new UserError('--shard-map needs --shard-index N (which entry of the map this node is)');
  const map = loadShardMap(opts.shardMap, dims);
  const entry = map.nodes[opts.shardIndex];
  if (!entry) {
    throw new UserError(`--shard-index ${opts.shardIndex}: shard map ${opts.shardMap} has ${map.nodes.length} nodes (0-${map.nodes.length - 1})`);
  }
  return { pairs: entry.experts, name: entry.name };
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
  // Tracing from OTEL_* (off when unset); this process names itself turbosparse-expert-node.
  setupTelemetry({ serviceName: EXPERT_NODE_SERVICE, instanceId: opts.name ? `${opts.name}@${os.hostname()}` : undefined, log });
  let node: RunningExpertNode;
  try {
    node = await runExpertNode({ ...opts, log });
  } catch (e) {
    process.send?.({ event: 'failed', message: (e as Error).message } satisfies NodeStartupMessage);
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
  await shutdownTelemetry();
  log('stopped');
}

/** Both hooks see every request (telemetry first, then the caller's). */
function combineHooks(a: ExpertNodeHooks, b?: ExpertNodeHooks): ExpertNodeHooks {
  if (!b?.onRequest) return a;
  return {
    onRequest: (info) => {
      const x = a.onRequest?.(info);
      const y = b.onRequest?.(info);
      return {
        end: (r) => {
          if (x) x.end?.(r);
          if (y) y.end?.(r);
        },
      };
    },
  };
}
