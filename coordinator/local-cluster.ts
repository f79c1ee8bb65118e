// `--experts cluster:N`: N expert-node child processes on free loopback ports,
// holding a balanced shard map of the model, stopped with the coordinator.
//
// No orphans: each child is spawned with an IPC channel and exits when it
// closes (the parent exited, even by SIGKILL); the parent also kills its
// children on 'exit'; stop() drains them with SIGTERM, then SIGKILL.
import { type ChildProcess, spawn } from 'node:child_process';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { UserError } from '../core/errors';
import { formatExpertSpec } from '../core/expert-spec';
import type { Device, StoreDType } from '../core/native';
import type { NodeStartupMessage } from '../core/node-startup-message';
import { balancedShardMap, expertBytes, type ShardMap, uniformPairs } from '../core/shard-map';
import { EXPERT_NODE_SERVICE } from '../core/telemetry';
import { traceConfigFromEnv } from '../core/telemetry/config';
import { SPAN_LINE_PREFIX } from '../core/telemetry/jsonl-exporter';
import type { RemoteModelDims } from './remote-experts';

export interface LocalClusterOptions {
  modelDir: string;
  dims: RemoteModelDims;
  nodes: number;
  /** Copies of every (layer, expert), on different nodes (default 1). */
  replicas?: number;
  weights?: StoreDType | 'auto';
  device?: Device | 'auto';
  /** CPU threads per node; 0 or absent: the machine's cores shared evenly between the nodes. */
  threads?: number;
  dense?: boolean;
  host?: string;
  /** How long to wait for every node to load and report SERVING (default 10 min). */
  startTimeoutMs?: number;
  /**
   * The program and leading arguments that run the `expert-node` command.
   * Default: this Node binary and the built `cli/expert-node.js` next to this file.
   */
  nodeCommand?: string[];
  /** Extra environment for the children (wins over this process's, OTEL_SERVICE_NAME included). */
  env?: NodeJS.ProcessEnv;
  /** Arguments every node gets after the cluster's own (e.g. ['--no-self-benchmark'] for tests that start many). */
  nodeArgs?: string[];
  /** Settings of node i (benches start nodes of different speeds); missing entries and fields: the cluster's. */
  perNode?: LocalNodeOptions[];
  /** Progress lines ("cluster: node1 SERVING 0-1:1,0-1:3 ..."). */
  log?: (line: string) => void;
  /** Every stderr line of every node, prefixed with its name (verbose mode). */
  nodeLog?: (line: string) => void;
}

/** One node's own settings in a local cluster. */
export interface LocalNodeOptions {
  /** CPU threads (instead of the cluster's --threads share). */
  threads?: number;
  /** `expert-node --slowdown F`: answers as a node F >= 1 times slower (mixed-speed emulation). */
  slowdown?: number;
  /** More arguments for this node only (after the cluster's and nodeArgs; a repeated flag's last value wins). */
  args?: string[];
}

export interface LocalNode {
  name: string;
  address: string;
  spec: string;
  pid: number;
  child: ChildProcess;
  exited: boolean;
  exitCode: number | null;
  stderrTail: string[];
}


/**
 * A node's environment: this process's, except that a user's OTEL_SERVICE_NAME names the
 * coordinator, so the nodes get their own service name; `extra` (settings meant for the nodes) wins.
 * A service.instance.id in OTEL_RESOURCE_ATTRIBUTES is left out (the user's other attributes
 * stay): N nodes sharing one id would be one instance, so each names its own (`nodeI@host`).
 */
export function nodeEnv(parent: NodeJS.ProcessEnv, extra: NodeJS.ProcessEnv = {}): NodeJS.ProcessEnv {
  const env: NodeJS.ProcessEnv = { ...parent, OTEL_SERVICE_NAME: EXPERT_NODE_SERVICE, ...extra };
  const attrs = env.OTEL_RESOURCE_ATTRIBUTES;
  if (attrs !== undefined) {
    // Parts kept as written (percent-encoding and all); a malformed one is the node's to report.
    const kept = attrs.split(',').filter((part) => part.split('=', 1)[0].trim() !== 'service.instance.id');
    if (kept.some((part) => part.trim())) env.OTEL_RESOURCE_ATTRIBUTES = kept.join(',');
    else delete env.OTEL_RESOURCE_ATTRIBUTES;
  }
  return env;
}

/**
 * Whether the nodes export spans to the console (OTEL_TRACES_EXPORTER lists `console`). They
 * write them to their stderr as JSON lines; the cluster passes those on to this process's
 * stderr, so a console trace holds the nodes' SERVER spans next to the coordinator's.
 */
export function nodesTraceToConsole(env: NodeJS.ProcessEnv): boolean {
  try {
    return traceConfigFromEnv(env).exporters.includes('console');
  } catch {
    return false; // a bad setting is reported by the process that parses it for itself
  }
}

/** A console span line (core/telemetry/jsonl-exporter: one JSON object per line, traceId first). */
export function isSpanLine(line: string): boolean {
  return line.startsWith(SPAN_LINE_PREFIX);
}

export function defaultNodeCommand(): string[] {
  const entry = path.resolve(__dirname, '..', 'cli', 'expert-node.js');
  if (!fs.existsSync(entry)) {
    throw new UserError(`cluster:N needs the built expert-node command (${entry}): run \`npm run build\``);
  }
  return [process.execPath, entry];
}

export class LocalCluster {
  private stopping: Promise<void> | null = null;
  private readonly onExit = () => this.killAll('SIGKILL');

  private constructor(readonly shardMap: ShardMap, readonly nodes: LocalNode[]) {
    process.on('exit', this.onExit);
  }

  /** Spawns the nodes and resolves once every one is SERVING (or rejects, leaving nothing running). */
  static async start(opts: LocalClusterOptions): Promise<LocalCluster> {
    const n = opts.nodes;
    if (!Number.isInteger(n) || n < 1) throw new UserError(`cluster:${n}: needs at least 1 node`);
    const { dims } = opts;
    const host = opts.host ?? '127.0.0.1';
    const weights = opts.weights ?? 'auto';
    const bytes = expertBytes(dims.hiddenSize, dims.intermediateSize, weights === 'auto' ? 'bf16' : weights);
    const names = Array.from({ length: n }, (_, i) => `node${i}`);
    const plan = balancedShardMap(uniformPairs(dims, bytes), names, { replicas: opts.replicas ?? 1 });
    // More nodes than copies of pairs: some would hold nothing (and fail on an empty --experts).
    const pairCopies = dims.numLayers * dims.numExperts * (opts.replicas ?? 1);
    if (n > pairCopies) {
      throw new UserError(`cluster:${n}: the model has only ${dims.numLayers * dims.numExperts} (layer, expert) pairs` +
        `${(opts.replicas ?? 1) > 1 ? ` x ${opts.replicas} replicas` : ''}, so at most ${pairCopies} nodes can hold experts; use cluster:${pairCopies} or fewer`);
    }
    const command = opts.nodeCommand ?? defaultNodeCommand();
    const threads = opts.threads || Math.max(1, Math.floor(os.availableParallelism() / n));
    const timeoutMs = opts.startTimeoutMs ?? 600_000;
    const log = opts.log ?? (() => undefined);

    const nodes: LocalNode[] = [];
    const ready: Promise<void>[] = [];
    for (let i = 0; i < n; i++) {
      const spec = formatExpertSpec(plan.nodes[i].experts);
      const own = opts.perNode?.[i] ?? {};
      const args = [...command.slice(1), '--model', opts.modelDir, '--experts', spec, '--port', '0', '--host', host,
        '--device', opts.device ?? 'auto', '--threads', String(own.threads || threads), '--weights', weights, '--name', names[i],
        ...(opts.dense ? ['--dense'] : []), ...(own.slowdown !== undefined ? ['--slowdown', String(own.slowdown)] : []),
        ...(opts.nodeArgs ?? []), ...(own.args ?? [])];
      const env = nodeEnv(process.env, opts.env);
      const spans = nodesTraceToConsole(env);
      const child = spawn(command[0], args, { stdio: ['ignore', 'ignore', 'pipe', 'ipc'], env });
      const node: LocalNode = { name: names[i], address: '', spec, pid: child.pid ?? -1, child, exited: false, exitCode: null, stderrTail: [] };
      nodes.push(node);
      let partial = '';
      child.stderr!.setEncoding('utf8');
      child.stderr!.on('data', (chunk: string) => {
        const lines = (partial + chunk).split('\n');
        partial = lines.pop()!;
        for (const line of lines) {
          if (spans && isSpanLine(line)) {
            process.stderr.write(line + '\n');
            continue;
          }
          node.stderrTail.push(line);
          if (node.stderrTail.length > 20) node.stderrTail.shift();
          opts.nodeLog?.(`[${node.name}] ${line}`);
        }
      });
      child.on('exit', (code, signal) => {
        node.exited = true;
        node.exitCode = code ?? (signal ? 128 : null);
      });
      // A command that cannot be spawned emits 'error' and never 'exit': nothing to wait for.
      child.on('error', () => {
        if (child.pid === undefined) node.exited = true;
      });
      ready.push(new Promise<void>((resolve, reject) => {
        const why = () => node.stderrTail.filter((l) => l.trim()).slice(-3).join(' | ') || 'no output';
        child.on('message', (m: NodeStartupMessage) => {
          if (m.event === 'listening') node.address = `${host.includes(':') ? `[${host}]` : host}:${m.port}`;
          else if (m.event === 'serving') {
            log(`cluster: ${node.name} SERVING ${m.experts} on ${node.address} (${(m.weightBytes / 1e6).toFixed(1)} MB)`);
            resolve();
          } else if (m.event === 'failed') reject(new UserError(`cluster: expert node ${node.name} failed to start: ${m.message}`));
        });
        child.on('error', (e) => reject(new Error(`cluster: cannot start ${command[0]}: ${e.message}`)));
        // A 'failed' message says it better; give one still in the pipe a moment to arrive. Unref'd:
        // it fires after every exit, also a normal stop long after start() resolved, and must not
        // hold the process (start() itself is held by its own timeout while it waits).
        child.on('exit', (code, signal) => setTimeout(() => reject(new UserError(
          `cluster: expert node ${node.name} exited (${signal ?? `code ${code}`}) before serving: ${why()}`)), 100).unref());
      }));
    }
    const cluster = new LocalCluster(plan, nodes);
    let timer: NodeJS.Timeout | undefined;
    try {
      await Promise.race([
        Promise.all(ready),
        new Promise<never>((_, reject) => {
          timer = setTimeout(() => reject(new UserError(`cluster: the expert nodes were not all SERVING within ${timeoutMs / 1000} s`)), timeoutMs);
        }),
      ]);
    } catch (e) {
      await cluster.stop(0);
      throw e;
    } finally {
      clearTimeout(timer);
    }
    plan.nodes.forEach((p, i) => {
      p.address = nodes[i].address;
      p.name = nodes[i].name;
    });
    return cluster;
  }

  /** Sends `signal` to one node (tests kill a replica mid-generation). */
  kill(index: number, signal: NodeJS.Signals = 'SIGKILL'): void {
    const node = this.nodes[index];
    if (node && !node.exited) node.child.kill(signal);
  }

  /** SIGTERM (drain) every node, SIGKILL whatever is left after `graceMs`; resolves when all have exited. */
  stop(graceMs = 5_000): Promise<void> {
    this.stopping ??= (async () => {
      const live = this.nodes.filter((n) => !n.exited);
      const exited = live.map((n) => new Promise<void>((resolve) => {
        if (n.exited) resolve();
        else n.child.once('exit', () => resolve());
      }));
      this.killAll(graceMs > 0 ? 'SIGTERM' : 'SIGKILL');
      const timer = setTimeout(() => this.killAll('SIGKILL'), graceMs);
      await Promise.all(exited);
      clearTimeout(timer);
      process.off('exit', this.onExit);
      for (const n of this.nodes) {
        if (n.child.connected) n.child.disconnect();
        n.child.stderr?.destroy();
      }
    })();
    return this.stopping;
  }

  private killAll(signal: NodeJS.Signals): void {
    for (const n of this.nodes) {
      if (!n.exited) {
        try {
          n.child.kill(signal);
        } catch {
          // already gone
        }
      }
    }
  }
}
