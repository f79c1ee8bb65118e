// ExpertBackend over gRPC expert nodes (`--experts cluster:N | FILE`).
//
// Per layer of a step: pick one healthy replica per routed (layer, expert),
// group the (token, expert) routes by node (a token whose experts share a node
// crosses the network once), send one message per node, all nodes in parallel,
// then add the nodes' pre-combined rows in plan order (never arrival order).
// A call gets a deadline from its node's measured latency (call-latency.ts);
// one still unanswered past the node's p99 is hedged: the same routes go to a
// replica and the first answer wins. A node that fails, times out or answers
// NaN is marked unhealthy and its routes are retried on replicas; a background
// health check of every node (traffic or not) takes nodes out and brings them
// back. No replica left: the step fails naming the pairs and the nodes.
//
// The shard map may name the coordinator itself (address "local"): the groups
// planned there run in this process (local-experts.ts), no network; their part
// joins the sum in plan order like any node's, so results stay bit-identical.
// applyShardMap() changes the map live (rebalancing): loads first, routing
// switches per node once its load answered, removals last. A node that gained
// pairs live and then restarted (kill -9, OOM, a pod restart) comes back with
// only its start-up pairs: the health check loads the missing ones again
// (reloadLostPairs) before it takes the node back.
import * as grpc from '@grpc/grpc-js';
import { UserError } from '../core/errors';
import type { ExpertBackend, ExpertBatch, ExpertCallInfo, ExpertCallObserver, ExpertCallResult, ExpertOutput, StepContext } from '../core/expert-backend';
import { type ExpertPair, type ModelDims, comparePairs, formatExpertSpec, pairKey, uniquePairs } from '../core/expert-spec';
import { LOCAL_ADDRESS } from '../core/placement/node-descriptions';
import { missingPairs, replicaTable, type ShardMap, validateShardMap } from '../core/shard-map';
import type { InfoResponse__Output } from '../core/wire/expert-proto';
import { type ExpertGroup, routeCount, routedRowCount, routeOffsets } from '../core/routed-batch';
import { decodeExpertResponse } from '../core/wire/expert-messages';
import { planExpertRequest } from '../core/wire/expert-request-bytes';
import type { WireEncoding } from '../core/wire/rows';
import { type CallPolicy, callDeadlineMs, DEFAULT_CALL_POLICY, hedgeDelayMs, LatencyWindow } from './call-latency';
import { type ChannelFactory, ExpertClient, insecureChannel, NodeCallError, type RunTransport } from './expert-client';
import { firstNonFinite } from './finite';
import type { LocalExperts } from './local-experts';
import { type NodeStats, NodeStatsAccumulator } from './telemetry/expert-stats';

export interface RemoteModelDims extends ModelDims {
  hiddenSize: number;
  intermediateSize: number;
}

// The call observer types are declared with ExpertBackend.addObserver (core/expert-backend.ts).
export type { ExpertCallInfo, ExpertCallObserver, ExpertCallResult } from '../core/expert-backend';

export interface RemoteExpertsOptions {
  shardMap: ShardMap;
  /** The coordinator's model; every node's Info must agree. */
  model: RemoteModelDims;
  /** Encoding of hidden and output rows (default f32, bit-exact). */
  wire?: WireEncoding;
  /**
   * The longest a node call may take (default 30 s): the deadline while the
   * node's latency is unmeasured, or when no replica could take its routes over.
   * Otherwise the deadline is k x the node's p99 (at least a floor), and past it the node is failed over.
   */
  callTimeoutMs?: number;
  /** Send a late call's routes to a replica too, first answer wins (default true). */
  hedge?: boolean;
  /** The deadline's and the hedge's tuning (call-latency.ts; tests shorten it). */
  callPolicy?: Partial<Omit<CallPolicy, 'ceilingMs'>>;
  /** How long connect() waits for every node to be reachable and SERVING (default 120 s). */
  connectTimeoutMs?: number;
  /** How often every node's health is checked (default 1 s). */
  healthCheckIntervalMs?: number;
  /** Credentials and channel options per node (mTLS plugs in here). */
  channelFactory?: ChannelFactory;
  /** How Run's calls travel (expert-client.ts RunTransport; default auto: a run socket where the node serves one). */
  transport?: RunTransport;
  observers?: ExpertCallObserver[];
  /** For logs ("cluster:2", a shard-map file name). */
  name?: string;
  log?: (line: string) => void;
  /** Runs after close() (a local cluster stops its nodes here). */
  onClose?: () => Promise<void>;
  /** The coordinator's own experts, for the shard map's "local" node (its pairs loaded); closed with this backend. */
  local?: LocalExperts;
  /** How long a node may take to load or unload pairs when the map changes (default 10 min). */
  adminTimeoutMs?: number;
}

/** One pair's move in a live shard-map change: from null = a new copy, to null = a copy removed. */
export interface PairMove {
  layer: number;
  expert: number;
  /** Node names as stats() shows them (name, else address). */
  from: string | null;
  to: string | null;
  phase: 'loading' | 'switching' | 'unloading' | 'done' | 'failed';
  error?: string;
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
  /** null for the "local" node, which runs `local` in process. */
  client: ExpertClient | null;
  local?: LocalExperts;
  /** Calls running on the node now, by call id: a pair is unloaded only once none of them uses it. */
  inflight: Map<number, { layer: number; experts: number[] }>;
  /** Called when one of `inflight` ends, while an unload waits for it (drained()); empty otherwise. */
  drainWaiters: (() => void)[];
  pairs: ExpertPair[];
  spec: string;
  healthy: boolean;
  lastError?: string;
  checking: boolean;
  /** Health checks in a row that got no answer in time. */
  missedChecks: number;
  /** The last failed reload's error, logged once (a restarted node's load is retried every health round). */
  reloadError?: string;
  stats: NodeStatsAccumulator;
  latency: LatencyWindow;
}

/** A successful node call: its groups (indices into batch.groups), batch rows, their pre-combined outputs, active counts (group order). */
interface Part {
  groups: number[];
  rows: Int32Array;
  out: Float32Array;
  active: Int32Array;
}

/** One layer's routing, shared by its calls, retries and hedges. */
interface LayerRun {
  batch: ExpertBatch;
  ctx?: StepContext;
  /** Nodes that failed during this layer: not asked again for it. */
  failed: Set<number>;
  nodeErrors: string[];
}

/** Whether an answer is still wanted: once a hedge race is won, the loser's retries stop. */
interface Race {
  done: boolean;
  parent?: Race;
}

function isDone(r: Race | undefined): boolean {
  for (; r; r = r.parent) if (r.done) return true;
  return false;
}

/** How a unit of routes is tried. */
interface Try {
  /** 0 for the first try, +1 per retry or hedge. */
  attempt: number;
  race: Race;
  /** Nodes not to plan on (a hedge avoids the node it races). */
  avoid: ReadonlySet<number>;
  /** Part of a hedge: hedged no further. */
  hedge: boolean;
}

/** Codes that mean "this request is wrong", not "this node is unwell": no failover. */
const FATAL_CODES = new Set<number>([grpc.status.INVALID_ARGUMENT]);
const REJECTED = 'ExpertRequestRejectedError';

function isRejection(e: Error): boolean {
  return e instanceof NodeCallError && FATAL_CODES.has(e.code);
}

function rejected(layer: number, e: Error): Error {
  const err = new Error(`layer ${layer}: expert node rejected the request: ${e.message}`);
  err.name = REJECTED;
  return err;
}

const DEFAULTS = { wire: 'f32' as WireEncoding, callTimeoutMs: 30_000, connectTimeoutMs: 120_000, healthCheckIntervalMs: 1_000, hedge: true,
  adminTimeoutMs: 600_000 };

export class RemoteExperts implements ExpertBackend {
  readonly name: string;
  readonly wire: WireEncoding;
  /** --hedge and --call-timeout-ms, as given (or defaulted). */
  readonly hedge: boolean;
  readonly callTimeoutMs: number;
  private readonly nodes: NodeState[];
  private readonly replicas: number[][][];
  private readonly opts: RemoteExpertsOptions & typeof DEFAULTS;
  private readonly log: (line: string) => void;
  private readonly observers: ExpertCallObserver[];
  private readonly policy: CallPolicy;
  private healthTimer: NodeJS.Timeout | null = null;
  private nextCallId = 1;
  private closed = false;
  /** A shard-map change is running (one at a time). */
  private changing = false;

  private constructor(opts: RemoteExpertsOptions) {
    this.opts = { ...DEFAULTS, ...Object.fromEntries(Object.entries(opts).filter(([, v]) => v !== undefined)) } as
      RemoteExpertsOptions & typeof DEFAULTS;
    for (const key of ['callTimeoutMs', 'connectTimeoutMs', 'healthCheckIntervalMs', 'adminTimeoutMs'] as const) {
      const v = this.opts[key];
      if (!Number.isFinite(v) || v <= 0) throw new UserError(`remote experts: ${key} must be a positive number of milliseconds, got ${v}`);
    }
    this.policy = { ...DEFAULT_CALL_POLICY, ...opts.callPolicy, ceilingMs: this.opts.callTimeoutMs };
    if (!['f32', 'bf16', 'int8'].includes(this.opts.wire)) throw new UserError(`remote experts: unknown wire encoding "${this.opts.wire}" (use f32, bf16 or int8)`);
    this.name = opts.name ?? `remote:${opts.shardMap.nodes.length}`;
    this.wire = this.opts.wire;
    this.hedge = this.opts.hedge;
    this.callTimeoutMs = this.opts.callTimeoutMs;
    this.log = opts.log ?? (() => undefined);
    this.observers = [...(opts.observers ?? [])];
    const factory = opts.channelFactory ?? insecureChannel;
    const local = opts.shardMap.nodes.find((n) => n.address === LOCAL_ADDRESS);
    if (local && !opts.local) {
      throw new UserError(`shard map ${this.name}: node "${LOCAL_ADDRESS}" (experts run by the coordinator) is not possible here; give its pairs to an expert node`);
    }
    this.nodes = opts.shardMap.nodes.map((n, index) => ({
      index,
      address: n.address,
      name: n.name,
      client: n.address === LOCAL_ADDRESS ? null : new ExpertClient(n.address, factory, opts.transport ?? 'auto'),
      ...(n.address === LOCAL_ADDRESS ? { local: opts.local } : {}),
      inflight: new Map(),
      drainWaiters: [],
      pairs: n.experts,
      spec: formatExpertSpec(n.experts),
      healthy: false,
      checking: false,
      missedChecks: 0,
      stats: new NodeStatsAccumulator(),
      latency: new LatencyWindow(this.policy),
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
    const attempts = this.nodes.map((n) => this.connectNode(n, deadline));
    // A misconfiguration (TLS, another model, the shard map) is final: report it now, not after other nodes' timeouts.
    const misconfigured = new Promise<never>((_, reject) => {
      for (const a of attempts) a.catch((e: unknown) => e instanceof UserError && reject(e));
    });
    const results = await Promise.race([Promise.allSettled(attempts), misconfigured]);
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
    if (down.length) this.log(`starting without ${down.length} node(s), their replicas serve: ${down.join('; ')}`);
    this.startHealthChecks();
  }

  private async connectNode(n: NodeState, deadline: number): Promise<void> {
    if (!n.client) return this.checkLocal(n);
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
    await n.client.prepareRun(Math.min(left(), 5_000));
  }

  /** The coordinator's own experts must hold what the shard map gives "local". */
  private checkLocal(n: NodeState): void {
    const held = new Set(n.local!.pairs().map((p) => pairKey(p.layer, p.expert)));
    const lacking = n.pairs.filter((p) => !held.has(pairKey(p.layer, p.expert)));
    if (lacking.length) throw new Error(`local experts lack ${formatExpertSpec(lacking)} of the shard map`);
  }

  /** The node must serve our model and hold at least what the shard map says. */
  private checkInfo(n: NodeState, info: InfoResponse__Output): void {
    this.checkModel(n, info);
    const lacking = lackingPairs(n, info);
    if (lacking.length) {
      throw new UserError(`expert node ${n.address} holds ${info.expertsSpec || 'nothing'}, but the shard map also gives it ` +
        `${formatExpertSpec(lacking)}: fix the shard map or the node's --experts`);
    }
  }

  private checkModel(n: NodeState, info: InfoResponse__Output): void {
    const m = this.opts.model;
    const theirs = `${info.numLayers} layers x ${info.numExperts} experts, hidden ${info.hiddenSize}, intermediate ${info.intermediateSize}`;
    const ours = `${m.numLayers} layers x ${m.numExperts} experts, hidden ${m.hiddenSize}, intermediate ${m.intermediateSize}`;
    if (theirs !== ours) {
      throw new UserError(`expert node ${n.address} serves a model of ${theirs}, but the coordinator's has ${ours}: start it with the same --model`);
    }
  }

  /**
   * An unhealthy node back SERVING without pairs the live map gives it (it gained them by
   * LoadExperts, then restarted with its start-up pairs only): loads exactly those again, with
   * the admin timeout, never during a shard-map change. Answers the Info to check, or null when
   * the load failed (n.lastError says why; the next health round tries again).
   */
  private async reloadLostPairs(n: NodeState, client: ExpertClient, info: InfoResponse__Output): Promise<InfoResponse__Output | null> {
    this.checkModel(n, info);
    const lacking = lackingPairs(n, info);
    if (lacking.length === 0) {
      n.reloadError = undefined;
      return info;
    }
    const spec = formatExpertSpec(lacking);
    if (this.changing) {
      n.lastError = `lacks ${spec} of the live shard map; loading them again once the running shard-map change ends`;
      return null;
    }
    const t0 = Date.now();
    try {
      const loaded = await client.loadExperts(lacking, this.opts.adminTimeoutMs);
      n.reloadError = undefined;
      this.log(`expert node ${displayName(n)} came back without ${spec} of the live shard map: loaded them again in ${Date.now() - t0} ms`);
      return loaded;
    } catch (e) {
      if (this.closed) return null;
      const why = (e as Error).message;
      n.lastError = `came back without ${spec} of the live shard map, and loading them failed: ${why}`;
      if (n.reloadError !== why) this.log(`expert node ${displayName(n)} stays unhealthy: ${n.lastError} (retried every health check)`);
      n.reloadError = why;
      return null;
    }
  }

  async runExperts(batch: ExpertBatch, ctx?: StepContext): Promise<ExpertOutput> {
    const { layer, nRows, groups } = batch;
    const H = this.opts.model.hiddenSize;
    if (this.closed) throw new Error('remote experts: backend closed');
    if (layer < 0 || layer >= this.opts.model.numLayers) throw new Error(`runExperts: layer ${layer} out of range`);
    if (batch.hidden.length !== nRows * H) throw new Error(`runExperts: hidden has ${batch.hidden.length} values, expected ${nRows} x ${H}`);

    const all = groups.map((_, i) => i);
    const run: LayerRun = { batch, ctx, failed: new Set(), nodeErrors: [] };
    const parts = all.length ? await this.settle(run, all, { attempt: 0, race: { done: false }, avoid: new Set(), hedge: false }) : [];

    // Fixed order: the plan's (node index; a retry or a hedge in place of the call it replaces),
    // never arrival order, so which replica answered first cannot change a bit of the sum.
    const out = new Float32Array(nRows * H);
    const starts = routeOffsets(groups);
    const active = new Int32Array(starts[groups.length]);
    for (const p of parts) {
      let j = 0;
      for (const gi of p.groups) {
        const len = groups[gi].rows.length;
        active.set(p.active.subarray(j, j + len), starts[gi]);
        j += len;
      }
      p.rows.forEach((row, j) => {
        const o = row * H;
        const src = j * H;
        for (let c = 0; c < H; c++) out[o + c] += p.out[src + c];
      });
    }
    return { out, active };
  }

  /** Plans `unit` (group indices) over healthy nodes and runs one call per node (each hedged or retried on its own). */
  private async settle(run: LayerRun, unit: number[], t: Try): Promise<Part[]> {
    const plan = this.plan(run.batch, unit, new Set([...run.failed, ...t.avoid]), run.nodeErrors);
    const parts = await Promise.all([...plan].map(([node, unit]) => this.runUnit(run, node, unit, t)));
    return parts.flat();
  }

  /**
   * One node's share of a layer: its call, with a deadline from the node's
   * measured latency when a replica could take over (else the flag's ceiling);
   * past its p99, the same routes to a replica (a hedge), the first answer
   * wins. A failed call marks the node unhealthy and its routes are re-planned.
   */
  private runUnit(run: LayerRun, node: number, unit: number[], t: Try): Promise<Part[]> {
    const { batch } = run;
    const n = this.nodes[node];
    // In process: no deadline, nothing to hedge; a failure here is a bug, not a sick node.
    if (n.local) return this.callLocal(run, node, unit, t.attempt).then((part) => [part]);
    const rows = routedRowCount(unit.map((gi) => batch.groups[gi]), batch.nRows);
    const experts = unit.map((gi) => batch.groups[gi].expert);
    const elsewhere = new Set([...run.failed, ...t.avoid, node]);
    const movable = experts.every((e) => this.replicas[batch.layer][e].some((i) => !elsewhere.has(i) && this.nodes[i].healthy));
    const expected = n.latency.expectedMs(rows);
    const deadline = movable ? callDeadlineMs(expected, this.policy) : this.policy.ceilingMs;
    const hedgeAfter = this.opts.hedge && movable && !t.hedge ? hedgeDelayMs(expected, this.policy) : null;

    return new Promise<Part[]>((resolve, reject) => {
      const race: Race = { done: false, parent: t.race };
      let primaryFailed = false;
      let hedge: 'none' | 'pending' | 'failed' = 'none';
      let timer: NodeJS.Timeout | undefined;
      const finish = (settle: () => void) => {
        if (race.done) return;
        race.done = true;
        clearTimeout(timer);
        settle();
      };
      const retry = () => {
        if (isDone(t.race)) return finish(() => reject(new Error('answer no longer wanted')));
        this.settle(run, unit, { ...t, attempt: t.attempt + 1, race }).then((p) => finish(() => resolve(p)), (e) => finish(() => reject(e)));
      };
      this.callNode(run, node, unit, t.attempt, deadline, t.hedge).then((part) => finish(() => resolve([part])), (e: Error) => {
        if (isRejection(e)) return finish(() => reject(rejected(batch.layer, e)));
        this.nodeFailed(run, node, e);
        primaryFailed = true;
        clearTimeout(timer);
        if (!race.done && hedge !== 'pending') retry();
      });
      if (hedgeAfter !== null && hedgeAfter < deadline) {
        // setImmediate: after a stall of this process, an answer waiting on the socket goes first.
        timer = setTimeout(() => setImmediate(() => {
          if (isDone(race) || primaryFailed) return;
          hedge = 'pending';
          n.stats.addHedge();
          this.sendHedge(run, node, unit, { attempt: t.attempt + 1, race, avoid: new Set([...t.avoid, node]), hedge: true })
            .then((p) => finish(() => resolve(p)), (e: Error) => {
              hedge = 'failed';
              // A request rejected as malformed would be by every node; otherwise the primary may still answer.
              if (primaryFailed || e.name === REJECTED) finish(() => reject(e));
            });
        }), hedgeAfter);
      }
    });
  }

  /** The routes of a late call, to one other node that holds all their experts when there is one (same sums), else re-planned. */
  private sendHedge(run: LayerRun, late: number, unit: number[], t: Try): Promise<Part[]> {
    const { layer, groups } = run.batch;
    const skip = new Set([...run.failed, ...t.avoid]);
    const holders = unit.reduce<number[] | null>((acc, gi) => {
      const here = this.replicas[layer][groups[gi].expert];
      return acc === null ? [...here] : acc.filter((i) => here.includes(i));
    }, null) ?? [];
    const single = holders.find((i) => i !== late && !skip.has(i) && this.nodes[i].healthy);
    return single === undefined ? this.settle(run, unit, t) : this.runUnit(run, single, unit, t);
  }

  private nodeFailed(run: LayerRun, node: number, e: Error): void {
    run.failed.add(node);
    run.nodeErrors.push(e.message);
    this.markUnhealthy(this.nodes[node], e.message);
  }

  /**
   * Chooses a node for each routed expert among its healthy replicas not
   * excluded (failed in this step): the one with the fewest routes planned so
   * far, then the one already receiving most of its tokens, then shard-map order.
   */
  private plan(batch: ExpertBatch, unit: number[], excluded: Set<number>, nodeErrors: string[]): Map<number, number[]> {
    const load = new Map<number, number>();
    const rowsAt = new Map<number, Uint8Array>();
    const plan = new Map<number, number[]>();
    const missing: ExpertPair[] = [];
    for (const gi of unit) {
      const g = batch.groups[gi];
      if (g.expert < 0 || g.expert >= this.opts.model.numExperts) throw new Error(`runExperts: expert ${g.expert} out of range`);
      const candidates = this.replicas[batch.layer][g.expert].filter((i) => this.nodes[i].healthy && !excluded.has(i));
      if (candidates.length === 0) {
        missing.push({ layer: batch.layer, expert: g.expert });
        continue;
      }
      let best = -1;
      let bestLoad = 0;
      let bestOverlap = 0;
      for (const c of candidates) {
        const l = load.get(c) ?? 0;
        const rows = rowsAt.get(c);
        let overlap = 0;
        if (rows) for (const r of g.rows) overlap += rows[r];
        if (best < 0 || l < bestLoad || (l === bestLoad && overlap > bestOverlap)) {
          best = c;
          bestLoad = l;
          bestOverlap = overlap;
        }
      }
      load.set(best, (load.get(best) ?? 0) + g.rows.length);
      let rows = rowsAt.get(best);
      if (!rows) rowsAt.set(best, (rows = new Uint8Array(batch.nRows)));
      for (const r of g.rows) rows[r] = 1;
      const planned = plan.get(best) ?? [];
      planned.push(gi);
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

  /**
   * The observers' view of one call: its info, their trace context, the time since it started, and how
   * it ends (in-flight bookkeeping included, so an unload waits for it).
   */
  private startCall(run: LayerRun, nodeIndex: number, groups: ExpertGroup[], attempt: number, hedge: boolean) {
    const { batch, ctx } = run;
    const node = this.nodes[nodeIndex];
    const info: ExpertCallInfo = {
      callId: this.nextCallId++, stepId: ctx?.stepId, layer: batch.layer, ...(ctx?.microBatch === undefined ? {} : { microBatch: ctx.microBatch }),
      node: node.address, nodeIndex, nodeName: node.name,
      experts: groups.map((g) => g.expert),
      tokens: routedRowCount(groups, batch.nRows), routes: routeCount(groups), wire: this.wire, attempt, bytesOut: 0, ...(hedge ? { hedge } : {}),
    };
    const scopes = this.observers.map((o) => o.onCallStart?.(info));
    const traceContext = Object.assign({}, ...scopes.map((s) => (s && s.traceContext) || {})) as Record<string, string>;
    const t0 = process.hrtime.bigint();
    const elapsedUs = () => Number((process.hrtime.bigint() - t0) / 1000n);
    node.inflight.set(info.callId, { layer: batch.layer, experts: info.experts });
    const finish = (result: ExpertCallResult) => {
      node.inflight.delete(info.callId);
      if (node.drainWaiters.length) for (const w of node.drainWaiters.splice(0)) w();
      scopes.forEach((s) => s && s.end?.(result));
      this.observers.forEach((o) => o.onCallEnd?.(info, result));
    };
    const fail = (e: Error) => {
      node.stats.addFailure();
      finish({ ok: false, error: e, latencyUs: elapsedUs(), queueUs: 0, computeUs: 0, activeNeurons: 0, bytesIn: 0 });
    };
    return { info, traceContext, elapsedUs, finish, fail };
  }

  /** One message to one node for `unit` (group indices, ascending). */
  private async callNode(run: LayerRun, nodeIndex: number, unit: number[], attempt: number, deadlineMs: number,
    hedge: boolean): Promise<Part> {
    const { batch, ctx } = run;
    const node = this.nodes[nodeIndex];
    const { hiddenSize: H, intermediateSize: I } = this.opts.model;
    const groups = unit.map((gi) => batch.groups[gi]);
    const nRoutes = routeCount(groups);
    const call = this.startCall(run, nodeIndex, groups, attempt, hedge);
    try {
      if (!node.client) throw new Error('callNode: the local node has no client');
      const plan = planExpertRequest(batch, groups, { stepId: ctx?.stepId ?? 0, wire: this.wire,
        timeoutMs: deadlineMs, traceContext: call.traceContext, hiddenSize: H, intermediateSize: I });
      const { rows } = plan;
      const reply = await node.client.callBytes(plan.encode, deadlineMs);
      call.info.bytesOut = reply.bytesSent;
      const res = reply.response;
      let decoded: { out: Float32Array; active: Int32Array };
      try {
        decoded = decodeExpertResponse(res, rows.length, nRoutes, H);
      } catch (e) {
        throw new NodeCallError(node.address, grpc.status.INTERNAL, (e as Error).message);
      }
      const { out, active } = decoded;
      // A node computing NaN or infinity is unwell (its weights or memory): its routes go to a replica.
      const bad = firstNonFinite(out);
      if (bad >= 0) {
        throw new NodeCallError(node.address, grpc.status.INTERNAL, `layer ${batch.layer}: non-finite value (${out[bad]}) in output row ` +
          `${rows[Math.floor(bad / H)]}`);
      }
      const latencyUs = call.elapsedUs();
      node.latency.add(rows.length, latencyUs / 1000);
      const activeNeurons = active.reduce((a, b) => a + b, 0);
      node.stats.addCall({ tokens: rows.length, routes: nRoutes, activeNeurons, computeUs: res.computeUs, bytesSent: reply.bytesSent,
        bytesReceived: reply.bytesReceived });
      call.finish({ ok: true, latencyUs, queueUs: res.queueUs, computeUs: res.computeUs, activeNeurons, bytesIn: reply.bytesReceived });
      return { groups: unit, rows, out, active };
    } catch (e) {
      call.fail(e as Error);
      throw e;
    }
  }

  /**
   * The groups planned on the "local" node, through the native kernels in process: the same
   * moe call an expert node makes for them (a row's result does not depend on the call's other
   * rows), cut to the routed rows like a node's answer, so the sum over parts is the same.
   */
  private async callLocal(run: LayerRun, nodeIndex: number, unit: number[], attempt: number): Promise<Part> {
    const { batch } = run;
    const node = this.nodes[nodeIndex];
    const H = this.opts.model.hiddenSize;
    const groups = unit.map((gi) => batch.groups[gi]);
    const call = this.startCall(run, nodeIndex, groups, attempt, false);
    try {
      const res = await node.local!.runExperts({ ...batch, groups });
      const seen = new Uint8Array(batch.nRows);
      for (const g of groups) for (const r of g.rows) seen[r] = 1;
      const rows = new Int32Array(call.info.tokens);
      let k = 0;
      for (let r = 0; r < batch.nRows; r++) if (seen[r]) rows[k++] = r;
      const out = new Float32Array(rows.length * H);
      rows.forEach((r, j) => out.set(res.out.subarray(r * H, (r + 1) * H), j * H));
      const latencyUs = call.elapsedUs();
      const activeNeurons = res.active.reduce((a, b) => a + b, 0);
      node.stats.addCall({ tokens: rows.length, routes: call.info.routes, activeNeurons, computeUs: latencyUs, bytesSent: 0, bytesReceived: 0 });
      call.finish({ ok: true, latencyUs, queueUs: 0, computeUs: latencyUs, activeNeurons, bytesIn: 0 });
      return { groups: unit, rows, out, active: res.active };
    } catch (e) {
      call.fail(e as Error);
      throw e;
    }
  }

  private markUnhealthy(n: NodeState, reason: string): void {
    n.lastError = reason;
    if (!n.healthy || !n.client) return;
    n.client.reset(`node marked unhealthy: ${reason}`);
    n.healthy = false;
    this.log(`expert node ${n.address} unhealthy (${reason}); its experts go to replicas until it reports SERVING`);
    this.observers.forEach((o) => o.onNodeHealth?.(n.address, false, reason));
  }

  /**
   * Every node's health, every interval, with or without traffic: a healthy
   * node that is not SERVING or cannot be reached is out at once (so ready()
   * turns false while nobody calls it), one that misses two checks in a row
   * too (one miss may be this process's own stall); an unhealthy one is back
   * once SERVING with the right Info.
   */
  private startHealthChecks(): void {
    if (this.healthTimer || this.closed) return;
    const interval = this.opts.healthCheckIntervalMs;
    // Longer than the interval: a busy node's event loop may answer a little late.
    const timeout = Math.min(5_000, Math.max(1_000, 2 * interval));
    this.healthTimer = setInterval(() => {
      for (const n of this.nodes) {
        const client = n.client;
        if (!client || n.checking || this.closed) continue;
        n.checking = true;
        client.health(timeout)
          .then(async (status) => {
            n.missedChecks = 0;
            if (this.closed) return;
            if (status !== 'SERVING') {
              this.markUnhealthy(n, `health check: ${status}`);
              return;
            }
            // auto: a run socket that failed for a passing reason at connect is tried again (a no-op once known).
            if (n.healthy) return void client.prepareRun(timeout).catch(() => undefined);
            const info = await this.reloadLostPairs(n, client, await client.info(timeout));
            if (!info || this.closed || n.healthy) return;
            this.checkInfo(n, info);
            await client.prepareRun(timeout);
            if (this.closed || n.healthy) return;
            n.healthy = true;
            this.log(`expert node ${n.address} is SERVING again`);
            this.observers.forEach((o) => o.onNodeHealth?.(n.address, true, 'SERVING'));
          })
          .catch((e: Error) => {
            const missed = e instanceof NodeCallError && e.code === grpc.status.DEADLINE_EXCEEDED;
            n.missedChecks = missed ? n.missedChecks + 1 : 0;
            if (this.closed || (missed && n.healthy && n.missedChecks < 2)) return;
            this.markUnhealthy(n, `health check failed: ${e.message}`);
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
    return !this.closed && this.replicas.every((layer) => layer.every((holders) => holders.some((i) => this.nodes[i].healthy)));
  }

  /** The shard map as it is now (after any applyShardMap), nodes in their first order; nodes holding nothing left out. */
  shardMap(): ShardMap {
    return { nodes: this.nodes.filter((n) => n.pairs.length > 0).map((n) => ({ address: n.address, ...(n.name ? { name: n.name } : {}), experts: [...n.pairs] })) };
  }

  /** Every node's address, name and health (held pairs or not), in node order. */
  nodeList(): { address: string; name: string; healthy: boolean; transport: 'socket' | 'grpc' | 'local' }[] {
    return this.nodes.map((n) => ({ address: n.address, name: displayName(n), healthy: n.healthy, transport: n.client?.runTransport ?? 'local' }));
  }

  /** Each node's Info (placement reads memory budget and measured speed from it); the local node's is `localInfo`. */
  async nodeInfos(localInfo: (pairs: ExpertPair[]) => InfoResponse__Output, timeoutMs = 5_000): Promise<{ address: string; info: InfoResponse__Output }[]> {
    return Promise.all(this.nodes.map(async (n) => ({ address: n.address, info: n.client ? await n.client.info(timeoutMs) : localInfo(n.pairs) })));
  }

  /**
   * Changes the shard map live (rebalancing). `map` names nodes of this backend only
   * (by address; one left out holds nothing afterwards) and must hold every pair.
   * Each node loads the pairs it gains (LoadExperts; local pairs in process) and,
   * once it answered holding them, takes traffic for them; then the pairs moved away
   * leave the routing, and each old holder unloads them once no call that was planned
   * on it before still runs. A failed load keeps the old copy (that move fails); a
   * pair never loses its last healthy holder. `onMoves` sees the moves at every phase change.
   */
  async applyShardMap(map: ShardMap, onMoves: (moves: PairMove[]) => void = () => undefined): Promise<PairMove[]> {
    if (this.closed) throw new Error('remote experts: backend closed');
    if (this.changing) throw new UserError('a shard-map change is already running: wait for it to finish');
    const byAddress = new Map(this.nodes.map((n) => [n.address, n.index]));
    const target = this.nodes.map(() => new Set<string>());
    const seen = new Set<string>();
    for (const [i, n] of map.nodes.entries()) {
      const index = byAddress.get(n.address);
      if (index === undefined) {
        throw new UserError(`new shard map: nodes.${i}.address ${n.address} is not one of this coordinator's expert nodes ` +
          `(${this.nodes.map((x) => x.address).join(', ')}); live changes move pairs between those only`);
      }
      if (seen.has(n.address)) throw new UserError(`new shard map: address ${n.address} appears twice (list each node once)`);
      seen.add(n.address);
      for (const p of n.experts) {
        if (p.layer < 0 || p.layer >= this.opts.model.numLayers || p.expert < 0 || p.expert >= this.opts.model.numExperts) {
          throw new UserError(`new shard map: nodes.${i} names layer ${p.layer} expert ${p.expert}, outside the model`);
        }
        target[index].add(pairKey(p.layer, p.expert));
      }
    }
    const missing = missingPairs(map, this.opts.model);
    if (missing.length) throw new UserError(`new shard map: no node holds ${formatExpertSpec(missing)}; every pair needs a node`);

    this.changing = true;
    try {
      return await this.changeMap(target, onMoves);
    } finally {
      this.changing = false;
    }
  }

  private async changeMap(target: Set<string>[], onMoves: (moves: PairMove[]) => void): Promise<PairMove[]> {
    // Per pair, the nodes gaining and losing it, paired up into moves.
    interface Move extends PairMove { fromIndex: number | null; toIndex: number | null }
    const gains = new Map<string, number[]>();
    const losses = new Map<string, number[]>();
    this.nodes.forEach((n, i) => {
      const now = new Set(n.pairs.map((p) => pairKey(p.layer, p.expert)));
      for (const k of target[i]) if (!now.has(k)) gains.set(k, [...(gains.get(k) ?? []), i]);
      for (const k of now) if (!target[i].has(k)) losses.set(k, [...(losses.get(k) ?? []), i]);
    });
    const moves: Move[] = [];
    for (const key of new Set([...gains.keys(), ...losses.keys()])) {
      const [layer, expert] = key.split(':').map(Number);
      const g = gains.get(key) ?? [];
      const l = losses.get(key) ?? [];
      for (let j = 0; j < Math.max(g.length, l.length); j++) {
        const fromIndex = l[j] ?? null;
        const toIndex = g[j] ?? null;
        moves.push({ layer, expert, fromIndex, toIndex, from: fromIndex === null ? null : displayName(this.nodes[fromIndex]),
          to: toIndex === null ? null : displayName(this.nodes[toIndex]), phase: toIndex === null ? 'switching' : 'loading' });
      }
    }
    moves.sort(comparePairs);
    const report = () => onMoves(moves.map(({ fromIndex, toIndex, ...m }) => ({ ...m })));
    const fail = (m: Move, error: string) => Object.assign(m, { phase: 'failed' as const, error });
    report();

    // 1. Loads, every node at once; a node's pairs take traffic as soon as it answered holding them.
    await Promise.all(this.nodes.map(async (n, i) => {
      const mine = moves.filter((m) => m.toIndex === i);
      if (mine.length === 0) return;
      const pairs = mine.map((m) => ({ layer: m.layer, expert: m.expert }));
      try {
        if (n.local) {
          await n.local.add(pairs);
        } else {
          const info = await n.client!.loadExperts(pairs, this.opts.adminTimeoutMs);
          const held = new Set(info.experts.map((p) => pairKey(p.layer, p.expert)));
          const lacking = pairs.filter((p) => !held.has(pairKey(p.layer, p.expert)));
          if (lacking.length) throw new Error(`${n.address} answered without ${formatExpertSpec(lacking)}`);
        }
      } catch (e) {
        const why = `load on ${displayName(n)} failed: ${(e as Error).message}`;
        this.log(`rebalance: ${why}; the old copies stay`);
        for (const m of mine) fail(m, why);
        report();
        return;
      }
      if (this.closed) return;
      for (const m of mine) {
        const holders = this.replicas[m.layer][m.expert];
        if (!holders.includes(i)) this.replicas[m.layer][m.expert] = [...holders, i].sort((a, b) => a - b);
        m.phase = m.fromIndex === null ? 'done' : 'switching';
      }
      setPairs(n, [...n.pairs, ...pairs]);
      report();
    }));

    // 2. Removals, once every load is settled: never the last healthy holder, never a copy whose replacement failed.
    const leaving = new Map<number, Move[]>();
    for (const m of moves) {
      if (m.fromIndex === null || m.phase !== 'switching' || this.closed) continue;
      const rest = this.replicas[m.layer][m.expert].filter((i) => i !== m.fromIndex);
      if (!rest.some((i) => this.nodes[i].healthy)) {
        fail(m, `no other healthy node holds layer ${m.layer} expert ${m.expert}: the copy on ${m.from} stays`);
        continue;
      }
      this.replicas[m.layer][m.expert] = rest;
      m.phase = 'unloading';
      leaving.set(m.fromIndex, [...(leaving.get(m.fromIndex) ?? []), m]);
    }
    for (const [i, mine] of leaving) {
      const gone = new Set(mine.map((m) => pairKey(m.layer, m.expert)));
      setPairs(this.nodes[i], this.nodes[i].pairs.filter((p) => !gone.has(pairKey(p.layer, p.expert))));
    }
    report();

    // 3. Unloads, once no call planned on the old holder before the switch still uses the pair.
    await Promise.all([...leaving].map(async ([i, mine]) => {
      const n = this.nodes[i];
      const pairs = mine.map((m) => ({ layer: m.layer, expert: m.expert }));
      try {
        await this.drained(n, pairs);
        if (n.local) await n.local.remove(pairs);
        else await n.client!.unloadExperts(pairs, this.opts.adminTimeoutMs);
        for (const m of mine) m.phase = 'done';
      } catch (e) {
        // The pairs no longer get traffic there; only their memory is not freed.
        const why = `unload on ${displayName(n)} failed: ${(e as Error).message}`;
        this.log(`rebalance: ${why}`);
        for (const m of mine) fail(m, why);
      }
      report();
    }));
    return moves.map(({ fromIndex, toIndex, ...m }) => ({ ...m }));
  }

  /** Resolves once no call running on `n` uses any of `pairs` (calls planned before they left the routing). */
  private async drained(n: NodeState, pairs: ExpertPair[]): Promise<void> {
    const keys = new Set(pairs.map((p) => pairKey(p.layer, p.expert)));
    const busy = () => [...n.inflight.values()].some((c) => c.experts.some((e) => keys.has(pairKey(c.layer, e))));
    if (!busy() || this.closed) return;
    // Woken by each call's end; a call cannot outlive its deadline (the ceiling): past it, something else is wrong.
    await new Promise<void>((resolve, reject) => {
      const timer = setTimeout(() => {
        n.drainWaiters = n.drainWaiters.filter((w) => w !== check);
        reject(new Error(`calls using ${formatExpertSpec(pairs)} still run after ${this.opts.callTimeoutMs} ms`));
      }, this.opts.callTimeoutMs);
      const check = () => {
        if (busy() && !this.closed) return void n.drainWaiters.push(check);
        clearTimeout(timer);
        resolve();
      };
      n.drainWaiters.push(check);
    });
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
      ...(n.client ? { transport: n.client.runTransport } : {}),
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
    for (const n of this.nodes) n.client?.close();
    await this.opts.local?.close();
    const onClose = this.opts.onClose;
    this.opts.onClose = undefined;
    await onClose?.();
  }
}

/** The pairs the map gives `n` that its Info does not hold. */
function lackingPairs(n: NodeState, info: InfoResponse__Output): ExpertPair[] {
  const held = new Set(info.experts.map((p) => pairKey(p.layer, p.expert)));
  return n.pairs.filter((p) => !held.has(pairKey(p.layer, p.expert)));
}

/** A node as tables and moves name it. */
function displayName(n: NodeState): string {
  return n.name ?? n.address;
}

/** Sets a node's pairs (sorted, unique) and its spec. */
function setPairs(n: NodeState, pairs: ExpertPair[]): void {
  n.pairs = uniquePairs(pairs);
  n.spec = formatExpertSpec(n.pairs);
}

function sleep(ms: number): Promise<void> {
  return new Promise((resolve) => setTimeout(resolve, ms));
}
