// ExpertBackend over gRPC expert nodes (`--experts cluster:N | FILE`).
//
// Per layer of a step: pick one healthy replica per routed (layer, expert),
// group the (token, expert) routes by node (a token whose experts share a node
// crosses the network once), send one message per node, all nodes in parallel,
// then add the nodes' pre-combined rows in node order (never arrival order).
// A node that fails or times out is marked unhealthy, its routes are retried
// on replicas, and a background health check brings it back once it reports
// SERVING. No replica left: the step fails naming the pairs and the nodes.
import * as grpc from '@grpc/grpc-js';
import { UserError } from '../core/errors';
import type { ExpertBackend, ExpertBatch, ExpertOutput, StepContext } from '../core/expert-backend';
import { type ExpertPair, type ModelDims, formatExpertSpec, pairKey } from '../core/expert-spec';
import { missingPairs, replicaTable, type ShardMap, validateShardMap } from '../core/shard-map';
import type { InfoResponse__Output } from '../core/wire/expert-proto';
import { encodeMask } from '../core/wire/masks';
import { decodeRows, encodeRows, toProtoEncoding, type WireEncoding } from '../core/wire/rows';
import { type ChannelFactory, ExpertClient, insecureChannel, NodeCallError } from './expert-client';
import { type NodeStats, NodeStatsAccumulator } from './node-stats';

export interface RemoteModelDims extends ModelDims {
  hiddenSize: number;
  intermediateSize: number;
}

/** One node call, as hooks see it (tracing and metrics wrap these; see issue 7). */
export interface ExpertCallInfo {
  /** Unique per backend. */
  callId: number;
  stepId?: number;
  layer: number;
  node: string;
  nodeIndex: number;
  nodeName?: string;
  /** Expert ids of this layer in the call, ascending. */
  experts: number[];
  tokens: number;
  routes: number;
  wire: WireEncoding;
  /** 0 for the first try of a layer, 1+ for retries on replicas. */
  attempt: number;
  /** Serialised request size; filled in just before sending. */
  bytesOut: number;
}

export interface ExpertCallResult {
  ok: boolean;
  error?: Error;
  /** Round trip seen by the coordinator, and the node's own queue and compute time. */
  latencyUs: number;
  queueUs: number;
  computeUs: number;
  activeNeurons: number;
  bytesIn: number;
}

export interface ExpertCallObserver {
  /**
   * At the start of a node call. May return a trace context (e.g. W3C
   * `traceparent`) sent inside the request, and an `end` called when it settles.
   */
  onCallStart?(call: ExpertCallInfo): { traceContext?: Record<string, string>; end?(result: ExpertCallResult): void } | void;
  /** When a node call settled, with its timings and sizes. */
  onCallEnd?(call: ExpertCallInfo, result: ExpertCallResult): void;
  /** A node was marked unhealthy (failover) or came back. */
  onNodeHealth?(node: string, healthy: boolean, reason: string): void;
}

export interface RemoteExpertsOptions {
  shardMap: ShardMap;
  /** The coordinator's model; every node's Info must agree. */
  model: RemoteModelDims;
  /** Encoding of hidden and output rows (default f32, bit-exact). */
  wire?: WireEncoding;
  /** A node call's deadline; past it the node is failed over (default 30 s). */
  callTimeoutMs?: number;
  /** How long connect() waits for every node to be reachable and SERVING (default 120 s). */
  connectTimeoutMs?: number;
  /** How often unhealthy nodes are re-checked (default 1 s). */
  healthCheckIntervalMs?: number;
  /** Credentials and channel options per node (mTLS plugs in here). */
  channelFactory?: ChannelFactory;
  observers?: ExpertCallObserver[];
  /** For logs ("cluster:2", a shard-map file name). */
  name?: string;
  log?: (line: string) => void;
  /** Runs after close() (a local cluster stops its nodes here). */
  onClose?: () => Promise<void>;
}

/** A step could not run: some routed pairs have no healthy node left. */
export class ExpertsUnavailableError extends Error {
  constructor(readonly layer: number, readonly pairs: ExpertPair[], readonly nodeErrors: string[]) {
    super(`layer ${layer}: no healthy expert node holds ${formatExpertSpec(pairs)}` +
      (nodeErrors.length ? ` (${nodeErrors.join('; ')})` : ''));
    this.name = 'ExpertsUnavailableError';
  }
}

interface NodeState {
  index: number;
  address: string;
  name?: string;
  client: ExpertClient;
  pairs: ExpertPair[];
  spec: string;
  healthy: boolean;
  lastError?: string;
  checking: boolean;
  stats: NodeStatsAccumulator;
}

/** A successful node call: its rows of the batch and their pre-combined outputs. */
interface Partial {
  node: number;
  seq: number;
  rows: number[];
  out: Float32Array;
}

/** Codes that mean "this request is wrong", not "this node is unwell": no failover. */
const FATAL_CODES = new Set<number>([grpc.status.INVALID_ARGUMENT]);

const DEFAULTS = { wire: 'f32' as WireEncoding, callTimeoutMs: 30_000, connectTimeoutMs: 120_000, healthCheckIntervalMs: 1_000 };

export class RemoteExperts implements ExpertBackend {
  readonly name: string;
  readonly wire: WireEncoding;
  private readonly nodes: NodeState[];
  private readonly replicas: number[][][];
  private readonly opts: RemoteExpertsOptions & typeof DEFAULTS;
  private readonly log: (line: string) => void;
  private readonly observers: ExpertCallObserver[];
  private healthTimer: NodeJS.Timeout | null = null;
  private nextCallId = 1;
  private closed = false;

  private constructor(opts: RemoteExpertsOptions) {
    this.opts = { ...DEFAULTS, ...Object.fromEntries(Object.entries(opts).filter(([, v]) => v !== undefined)) } as
      RemoteExpertsOptions & typeof DEFAULTS;
    for (const key of ['callTimeoutMs', 'connectTimeoutMs', 'healthCheckIntervalMs'] as const) {
      const v = this.opts[key];
      if (!Number.isFinite(v) || v <= 0) throw new UserError(`remote experts: ${key} must be a positive number of milliseconds, got ${v}`);
    }
    if (!['f32', 'bf16', 'int8'].includes(this.opts.wire)) throw new UserError(`remote experts: unknown wire encoding "${this.opts.wire}" (use f32, bf16 or int8)`);
    this.name = opts.name ?? `remote:${opts.shardMap.nodes.length}`;
    this.wire = this.opts.wire;
    this.log = opts.log ?? (() => undefined);
    this.observers = [...(opts.observers ?? [])];
    const factory = opts.channelFactory ?? insecureChannel;
    this.nodes = opts.shardMap.nodes.map((n, index) => ({
      index,
      address: n.address,
      name: n.name,
      client: new ExpertClient(n.address, factory),
      pairs: n.experts,
      spec: formatExpertSpec(n.experts),
      healthy: false,
      checking: false,
      stats: new NodeStatsAccumulator(),
    }));
    this.replicas = replicaTable(opts.shardMap, opts.model);
  }

  /**
   * Validates the shard map, connects to every node, waits until each is
   * SERVING and checks its Info (model sizes, experts held). Unreachable nodes
   * start unhealthy if replicas cover their pairs; otherwise this fails.
   */
  static async connect(opts: RemoteExpertsOptions): Promise<RemoteExperts> {
    validateShardMap(opts.shardMap, opts.model, opts.name ?? '(cluster)');
    const re = new RemoteExperts(opts);
    try {
      await re.start();
    } catch (e) {
      await re.close();
      throw e;
    }
    return re;
  }

  /** Adds hooks after construction (tracing, metrics). */
  addObserver(o: ExpertCallObserver): void {
    this.observers.push(o);
  }

  private async start(): Promise<void> {
    const deadline = Date.now() + this.opts.connectTimeoutMs;
    const results = await Promise.allSettled(this.nodes.map((n) => this.connectNode(n, deadline)));
    const down: string[] = [];
    results.forEach((r, i) => {
      const n = this.nodes[i];
      if (r.status === 'fulfilled') {
        n.healthy = true;
        return;
      }
      if (r.reason instanceof UserError) throw r.reason;
      n.lastError = (r.reason as Error).message;
      down.push(n.lastError);
    });
    const healthy = this.nodes.filter((n) => n.healthy).map((n) => n.index);
    const missing = missingPairs(this.opts.shardMap, this.opts.model, healthy);
    if (missing.length) {
      throw new UserError(`expert nodes unavailable, no node left for ${formatExpertSpec(missing)}: ${down.join('; ')}`);
    }
    if (down.length) {
      this.log(`starting without ${down.length} node(s), their replicas serve: ${down.join('; ')}`);
      this.ensureHealthChecks();
    }
  }

  private async connectNode(n: NodeState, deadline: number): Promise<void> {
    const left = () => Math.max(1, deadline - Date.now());
    await n.client.waitForReady(left());
    for (;;) {
      let status: string;
      try {
        status = await n.client.health(Math.min(left(), 5_000));
      } catch (e) {
        status = (e as Error).message;
      }
      if (status === 'SERVING') break;
      if (Date.now() >= deadline) {
        throw new NodeCallError(n.address, grpc.status.UNAVAILABLE, `not SERVING within ${this.opts.connectTimeoutMs} ms (last: ${status})`);
      }
      await sleep(100);
    }
    this.checkInfo(n, await n.client.info(left()));
  }

  /** The node must serve our model and hold at least what the shard map says. */
  private checkInfo(n: NodeState, info: InfoResponse__Output): void {
    const m = this.opts.model;
    const theirs = `${info.numLayers} layers x ${info.numExperts} experts, hidden ${info.hiddenSize}, intermediate ${info.intermediateSize}`;
    const ours = `${m.numLayers} layers x ${m.numExperts} experts, hidden ${m.hiddenSize}, intermediate ${m.intermediateSize}`;
    if (theirs !== ours) {
      throw new UserError(`expert node ${n.address} serves a model of ${theirs}, but the coordinator's has ${ours}: start it with the same --model`);
    }
    const held = new Set(info.experts.map((p) => pairKey(p.layer, p.expert)));
    const lacking = n.pairs.filter((p) => !held.has(pairKey(p.layer, p.expert)));
    if (lacking.length) {
      throw new UserError(`expert node ${n.address} holds ${info.expertsSpec || 'nothing'}, but the shard map also gives it ` +
        `${formatExpertSpec(lacking)}: fix the shard map or the node's --experts`);
    }
  }

  async runExperts(batch: ExpertBatch, ctx?: StepContext): Promise<ExpertOutput> {
    const { layer, nRows, topK } = batch;
    const H = this.opts.model.hiddenSize;
    if (this.closed) throw new Error('remote experts: backend closed');
    if (layer < 0 || layer >= this.opts.model.numLayers) throw new Error(`runExperts: layer ${layer} out of range`);
    if (batch.hidden.length !== nRows * H) throw new Error(`runExperts: hidden has ${batch.hidden.length} values, expected ${nRows} x ${H}`);

    const active = new Int32Array(nRows * topK);
    const partials: Partial[] = [];
    const excluded = new Set<number>();
    const nodeErrors: string[] = [];
    let todo: number[] = [];
    for (let s = 0; s < nRows * topK; s++) if (batch.experts[s] >= 0) todo.push(s);

    for (let attempt = 0, seq = 0; todo.length > 0; attempt++) {
      const plan = this.plan(batch, todo, excluded, nodeErrors);
      const calls = [...plan].map(([node, slots]) => this.callNode(node, batch, slots, active, attempt, ctx));
      const settled = await Promise.allSettled(calls);
      todo = [];
      let i = 0;
      for (const [node, slots] of plan) {
        const r = settled[i++];
        if (r.status === 'fulfilled') {
          partials.push({ ...r.value, node, seq: seq++ });
          continue;
        }
        const err = r.reason as Error;
        if (err instanceof NodeCallError && FATAL_CODES.has(err.code)) {
          throw new Error(`layer ${layer}: expert node rejected the request: ${err.message}`);
        }
        excluded.add(node);
        nodeErrors.push(err.message);
        this.markUnhealthy(this.nodes[node], err.message);
        todo.push(...slots);
      }
    }

    // Fixed order: by node index, then by try; so results never depend on which answer came first.
    partials.sort((a, b) => a.node - b.node || a.seq - b.seq);
    const out = new Float32Array(nRows * H);
    for (const p of partials) {
      p.rows.forEach((row, j) => {
        const o = row * H;
        const src = j * H;
        for (let c = 0; c < H; c++) out[o + c] += p.out[src + c];
      });
    }
    return { out, active };
  }

  /**
   * Chooses a node for each routed expert among its healthy replicas not
   * excluded (failed in this step): the one with the fewest routes planned so
   * far, then the one already receiving most of its tokens, then shard-map order.
   */
  private plan(batch: ExpertBatch, slots: number[], excluded: Set<number>, nodeErrors: string[]): Map<number, number[]> {
    const byExpert = new Map<number, number[]>();
    for (const s of slots) {
      const e = batch.experts[s];
      if (e >= this.opts.model.numExperts) throw new Error(`runExperts: expert ${e} out of range`);
      let list = byExpert.get(e);
      if (!list) byExpert.set(e, (list = []));
      list.push(s);
    }
    const load = new Map<number, number>();
    const rowsAt = new Map<number, Set<number>>();
    const plan = new Map<number, number[]>();
    const missing: ExpertPair[] = [];
    for (const e of [...byExpert.keys()].sort((a, b) => a - b)) {
      const list = byExpert.get(e)!;
      const candidates = this.replicas[batch.layer][e].filter((i) => this.nodes[i].healthy && !excluded.has(i));
      if (candidates.length === 0) {
        missing.push({ layer: batch.layer, expert: e });
        continue;
      }
      let best = -1;
      let bestLoad = 0;
      let bestOverlap = 0;
      for (const c of candidates) {
        const l = load.get(c) ?? 0;
        const rows = rowsAt.get(c);
        const overlap = rows ? list.filter((s) => rows.has(Math.floor(s / batch.topK))).length : 0;
        if (best < 0 || l < bestLoad || (l === bestLoad && overlap > bestOverlap)) {
          best = c;
          bestLoad = l;
          bestOverlap = overlap;
        }
      }
      load.set(best, (load.get(best) ?? 0) + list.length);
      const rows = rowsAt.get(best) ?? new Set<number>();
      for (const s of list) rows.add(Math.floor(s / batch.topK));
      rowsAt.set(best, rows);
      const planned = plan.get(best) ?? [];
      planned.push(...list);
      plan.set(best, planned);
    }
    if (missing.length) {
      const down = this.nodes.filter((n) => !n.healthy && !nodeErrors.some((m) => m.startsWith(n.address)))
        .map((n) => `${n.address} is unhealthy (${n.lastError ?? 'unknown'})`);
      throw new ExpertsUnavailableError(batch.layer, missing, [...nodeErrors, ...down]);
    }
    for (const list of plan.values()) list.sort((a, b) => a - b);
    return new Map([...plan].sort((a, b) => a[0] - b[0]));
  }

  /** One message to one node for `slots` (sorted); fills `active` for them on success. */
  private async callNode(nodeIndex: number, batch: ExpertBatch, slots: number[], active: Int32Array, attempt: number,
    ctx?: StepContext): Promise<{ rows: number[]; out: Float32Array }> {
    const node = this.nodes[nodeIndex];
    const { topK, maskRowBytes } = batch;
    const { hiddenSize: H, intermediateSize: I } = this.opts.model;
    const rows: number[] = [];
    const local = new Map<number, number>();
    for (const s of slots) {
      const row = Math.floor(s / topK);
      if (!local.has(row)) {
        local.set(row, rows.length);
        rows.push(row);
      }
    }
    const routes = slots.map((s) => ({
      row: local.get(Math.floor(s / topK))!,
      expert: batch.experts[s],
      weight: batch.weights[s],
      mask: encodeMask(batch.masks.subarray(s * maskRowBytes, (s + 1) * maskRowBytes), I),
    }));
    const info: ExpertCallInfo = {
      callId: this.nextCallId++, stepId: ctx?.stepId, layer: batch.layer, node: node.address, nodeIndex, nodeName: node.name,
      experts: [...new Set(routes.map((r) => r.expert))].sort((a, b) => a - b),
      tokens: rows.length, routes: routes.length, wire: this.wire, attempt, bytesOut: 0,
    };
    const scopes = this.observers.map((o) => o.onCallStart?.(info));
    const traceContext = Object.assign({}, ...scopes.map((s) => (s && s.traceContext) || {})) as Record<string, string>;
    const t0 = process.hrtime.bigint();
    const finish = (result: ExpertCallResult) => {
      scopes.forEach((s) => s && s.end?.(result));
      this.observers.forEach((o) => o.onCallEnd?.(info, result));
    };
    try {
      const reply = await node.client.call({
        stepId: ctx?.stepId ?? 0,
        layer: batch.layer,
        hidden: encodeRows(batch.hidden, H, rows, this.wire),
        routes,
        replyEncoding: toProtoEncoding(this.wire),
        timeoutMs: this.opts.callTimeoutMs,
        traceContext,
      }, this.opts.callTimeoutMs);
      info.bytesOut = reply.bytesSent;
      const res = reply.response;
      let out: Float32Array;
      try {
        out = decodeRows(res.out, rows.length, H, 'out');
        if (res.active.length !== slots.length) throw new Error(`${res.active.length} active counts for ${slots.length} routes`);
      } catch (e) {
        throw new NodeCallError(node.address, grpc.status.INTERNAL, `malformed response: ${(e as Error).message}`);
      }
      let activeNeurons = 0;
      slots.forEach((s, j) => {
        active[s] = res.active[j];
        activeNeurons += res.active[j];
      });
      const latencyUs = Number((process.hrtime.bigint() - t0) / 1000n);
      node.stats.addCall({ tokens: rows.length, routes: routes.length, activeNeurons, bytesSent: reply.bytesSent,
        bytesReceived: reply.bytesReceived });
      finish({ ok: true, latencyUs, queueUs: res.queueUs, computeUs: res.computeUs, activeNeurons, bytesIn: reply.bytesReceived });
      return { rows, out };
    } catch (e) {
      node.stats.addFailure();
      finish({ ok: false, error: e as Error, latencyUs: Number((process.hrtime.bigint() - t0) / 1000n), queueUs: 0, computeUs: 0,
        activeNeurons: 0, bytesIn: 0 });
      throw e;
    }
  }

  private markUnhealthy(n: NodeState, reason: string): void {
    n.client.reset(`node marked unhealthy: ${reason}`);
    n.lastError = reason;
    if (!n.healthy) return;
    n.healthy = false;
    this.log(`expert node ${n.address} unhealthy (${reason}); its experts go to replicas until it reports SERVING`);
    this.observers.forEach((o) => o.onNodeHealth?.(n.address, false, reason));
    this.ensureHealthChecks();
  }

  /** Background re-checks of unhealthy nodes with the health service; stops when all are back. */
  private ensureHealthChecks(): void {
    if (this.healthTimer || this.closed) return;
    const interval = this.opts.healthCheckIntervalMs;
    this.healthTimer = setInterval(() => {
      const down = this.nodes.filter((n) => !n.healthy);
      if (down.length === 0 || this.closed) {
        if (this.healthTimer) clearInterval(this.healthTimer);
        this.healthTimer = null;
        return;
      }
      for (const n of down) {
        if (n.checking) continue;
        n.checking = true;
        const timeout = Math.max(200, Math.min(interval, 5_000));
        n.client.health(timeout)
          .then(async (status) => {
            if (status !== 'SERVING') return;
            this.checkInfo(n, await n.client.info(timeout));
            if (this.closed || n.healthy) return;
            n.healthy = true;
            this.log(`expert node ${n.address} is SERVING again`);
            this.observers.forEach((o) => o.onNodeHealth?.(n.address, true, 'SERVING'));
          })
          .catch((e: Error) => {
            n.lastError = e.message;
          })
          .finally(() => {
            n.checking = false;
          });
      }
    }, interval);
    this.healthTimer.unref();
  }

  /** True while every (layer, expert) has at least one healthy node (replicas may cover a down node). */
  ready(): boolean {
    const healthy = this.nodes.filter((n) => n.healthy).map((n) => n.index);
    return !this.closed && missingPairs(this.opts.shardMap, this.opts.model, healthy).length === 0;
  }

  /** Per-node numbers since start (or the last resetStats). */
  stats(): NodeStats[] {
    return this.nodes.map((n) => ({
      address: n.address,
      ...(n.name ? { name: n.name } : {}),
      healthy: n.healthy,
      ...(n.lastError && !n.healthy ? { lastError: n.lastError } : {}),
      expertsHeld: n.pairs.length,
      expertsSpec: n.spec,
      ...n.stats.snapshot(this.opts.model.intermediateSize),
    }));
  }

  resetStats(): void {
    for (const n of this.nodes) n.stats = new NodeStatsAccumulator();
  }

  async close(): Promise<void> {
    this.closed = true;
    if (this.healthTimer) clearInterval(this.healthTimer);
    this.healthTimer = null;
    for (const n of this.nodes) n.client.close();
    const onClose = this.opts.onClose;
    this.opts.onClose = undefined;
    await onClose?.();
  }
}

function sleep(ms: number): Promise<void> {
  return new Promise((resolve) => setTimeout(resolve, ms));
}
