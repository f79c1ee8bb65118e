// Live rebalancing: a new shard map from the measured routing and the nodes'
// own Info (placeExperts), applied to the running RemoteExperts without a pause
// (RemoteExperts.applyShardMap: loads first, routing switches, removals last).
// One rebalance at a time; its state and moves go to status.json (`rebalance`).
// Entry points: POST /v1/admin/rebalance (http/admin-routes.ts), `turbosparse
// rebalance`, and `serve --rebalance-every MIN` (periodic, only when it pays).
import { UserError } from '../core/errors';
import type { ExpertBackend } from '../core/expert-backend';
import { comparePairs, pairKey } from '../core/expert-spec';
import { measuredSpeeds, type NodeSpeed, type NodeTraffic } from '../core/placement/measured-speeds';
import { describeNodesFromInfo, type LayerPrediction, placeExperts, type PlacementInput, predictLayers } from '../core/placement/placement';
import type { RoutingStats } from '../core/placement/routing-stats';
import type { PairWithBytes, ShardMap } from '../core/shard-map';
import type { InfoResponse__Output } from '../core/wire/expert-proto';
import type { Engine } from './engine';
import { registerRebalanceStatus, type RebalanceStatus } from './rebalance-status';
import { RemoteExperts } from './remote-experts';

export type { RebalanceState, RebalanceStatus } from './rebalance-status';

export interface RebalanceRequest {
  /** Absent: the coordinator's own routing statistics (when it collects them), else every expert equally hot. */
  routing?: RoutingStats;
  dryRun?: boolean;
  /** Minimum copies of every pair (default: the fewest copies any pair has now). */
  replicas?: number;
}

/** What a rebalance would do: the moves and the predicted per-token layer times before and after. */
export interface RebalancePlan {
  dry_run: boolean;
  routing: 'request' | 'collected' | 'uniform';
  replicas: number;
  moves: { layer: number; expert: number; from: string | null; to: string | null }[];
  before: LayerPrediction[];
  after: LayerPrediction[];
  /** Sums over layers of the slowest node's time per token (ms), and 1 - after/before. */
  predicted: { before_ms: number; after_ms: number; gain: number };
  /** Lines the planner had to say (a node without a memory budget or a measured speed). */
  warnings: string[];
  /** Each node's speed: Info's, measured from the traffic served since the current map took effect, and the one used. */
  speeds: NodeSpeed[];
}

/** A rebalance is already running (HTTP 409). */
export class RebalanceBusyError extends Error {
  constructor() {
    super('a rebalance is already running: wait for it (GET /v1/admin/rebalance shows its progress)');
    this.name = 'RebalanceBusyError';
  }
}

/** The nodes cannot be planned for now (one unhealthy, or its Info does not answer): HTTP 503. */
export class RebalanceUnavailableError extends Error {
  constructor(message: string) {
    super(message);
    this.name = 'RebalanceUnavailableError';
  }
}

export interface RebalancerOptions {
  experts: RemoteExperts;
  model: PlacementInput['model'];
  /** Every pair with its stored bytes (cli/shard-map.ts modelPairs). */
  pairs: PairWithBytes[];
  /** The coordinator's own routing statistics now (routing-collector), if it collects them. */
  collected?: () => RoutingStats | undefined;
  /** The local node's Info (no RPC for it): its bytes per second may be unknown (0). */
  localInfo?: (pairs: { layer: number; expert: number }[]) => InfoResponse__Output;
  log?: (line: string) => void;
  /** How much traffic a node must have served for a measured speed (default measured-speeds.ts's minimums; tests lower them). */
  calibration?: { minCalls?: number; minComputeS?: number };
}

/** Periodic rebalances skip a plan that gains less than this (predicted). */
export const MIN_PERIODIC_GAIN = 0.05;

export class Rebalancer {
  private current: RebalanceStatus = { state: 'idle', moves: [] };
  private running: Promise<void> | null = null;
  private busy = false;
  private timer: NodeJS.Timeout | null = null;
  private readonly log: (line: string) => void;
  /** Per-node counters when the current map took effect (start: none), so speeds are measured under it. */
  private baseline = new Map<string, NodeTraffic>();

  constructor(private readonly opts: RebalancerOptions) {
    this.log = opts.log ?? (() => undefined);
  }

  /** Traffic per node since the baseline (counters reset elsewhere: since then). */
  private traffic(): NodeTraffic[] {
    return this.opts.experts.stats().map((n) => {
      const b = this.baseline.get(n.address);
      const since = b && n.calls >= b.calls ? b : { calls: 0, routes: 0, computeUs: 0 };
      return { address: n.address, calls: n.calls - since.calls, routes: n.routes - since.routes, computeUs: n.computeUs - since.computeUs };
    });
  }

  status(): RebalanceStatus {
    return { ...this.current, moves: this.current.moves.map((m) => ({ ...m })) };
  }

  /**
   * Plans and, unless a dry run, starts moving in the background; resolves with the plan. With `proceed`
   * (the periodic check) it moves only if `proceed(plan)` says so, and shows nothing in status() until then.
   */
  async start(req: RebalanceRequest = {}, proceed?: (plan: RebalancePlan) => boolean): Promise<RebalancePlan> {
    if (this.busy) throw new RebalanceBusyError();
    this.busy = true;
    const dry = req.dryRun === true;
    const started = new Date().toISOString();
    const shown = !dry && !proceed;
    if (shown) this.current = { state: 'planning', started, moves: [] };
    let plan: RebalancePlan;
    let map: ShardMap;
    try {
      ({ plan, map } = await this.plan(req));
    } catch (e) {
      this.busy = false;
      if (shown) this.current = { ...this.current, state: 'failed', finished: new Date().toISOString(), error: (e as Error).message };
      throw e;
    }
    if (dry || (proceed && !proceed(plan))) {
      this.busy = false;
      return plan;
    }
    this.current = { state: 'moving', started, moves: plan.moves.map((m) => ({ ...m, phase: 'loading' as const })) };
    this.running = this.move(map).finally(() => {
      this.busy = false;
      this.running = null;
    });
    return plan;
  }

  /** Resolves once no rebalance runs (tests, --wait in process). */
  async idle(): Promise<void> {
    await this.running;
  }

  /** Every `minutes`: plans from the collected routing and applies it when the predicted gain is at least MIN_PERIODIC_GAIN. */
  startPeriodic(minutes: number): void {
    this.stopPeriodic();
    this.timer = setInterval(() => void this.periodic(), minutes * 60_000);
    this.timer.unref();
  }

  stopPeriodic(): void {
    if (this.timer) clearInterval(this.timer);
    this.timer = null;
  }

  private async periodic(): Promise<void> {
    if (this.busy) return;
    try {
      // One plan: moved on only when it pays.
      const pays = (p: RebalancePlan) => p.moves.length > 0 && p.predicted.gain >= MIN_PERIODIC_GAIN;
      const plan = await this.start({}, pays);
      if (!pays(plan)) {
        this.log(`rebalance: skipped, predicted gain ${(plan.predicted.gain * 100).toFixed(1)}% (< ${MIN_PERIODIC_GAIN * 100}%)`);
        return;
      }
      this.log(`rebalance: ${plan.moves.length} move(s), predicted ${(plan.predicted.gain * 100).toFixed(1)}% faster per token`);
    } catch (e) {
      if (!(e instanceof RebalanceBusyError)) this.log(`rebalance: ${(e as Error).message}`);
    }
  }

  private async move(map: ShardMap): Promise<void> {
    try {
      const moves = await this.opts.experts.applyShardMap(map, (moves) => {
        this.current = { ...this.current, moves };
      });
      // Measure the next plan's speeds under the new map only.
      this.baseline = new Map(this.opts.experts.stats().map((n) => [n.address, { address: n.address, calls: n.calls, routes: n.routes, computeUs: n.computeUs }]));
      const failed = moves.filter((m) => m.phase === 'failed');
      this.current = {
        ...this.current, state: failed.length ? 'failed' : 'done', finished: new Date().toISOString(), moves,
        ...(failed.length ? { error: `${failed.length} of ${moves.length} move(s) failed (old copies kept): ${failed[0].error}` } : {}),
      };
      this.log(`rebalance: ${moves.length - failed.length} of ${moves.length} move(s) done` + (failed.length ? `, ${failed.length} failed: ${failed[0].error}` : ''));
    } catch (e) {
      this.current = { ...this.current, state: 'failed', finished: new Date().toISOString(), error: (e as Error).message };
      this.log(`rebalance failed: ${(e as Error).message}`);
    }
  }

  private async plan(req: RebalanceRequest): Promise<{ plan: RebalancePlan; map: ShardMap }> {
    const { experts, model } = this.opts;
    const collected = req.routing ? undefined : this.opts.collected?.();
    const routing = req.routing ?? (collected && collected.tokens > 0 ? collected : undefined);
    if (routing && (routing.model.layers !== model.numLayers || routing.model.experts !== model.numExperts)) {
      throw new UserError(`routing: describes a model of ${routing.model.layers} layers x ${routing.model.experts} experts, ` +
        `but this one has ${model.numLayers} x ${model.numExperts}: collect them on the same model`);
    }
    const current = experts.shardMap();
    const replicas = req.replicas ?? fewestCopies(current);
    const down = experts.nodeList().filter((n) => !n.healthy);
    if (down.length) throw new RebalanceUnavailableError(`rebalance: node(s) ${down.map((n) => n.name).join(', ')} unhealthy; rebalance once every node is SERVING`);
    let infos: { address: string; info: InfoResponse__Output }[];
    try {
      infos = await experts.nodeInfos(this.opts.localInfo ?? localInfoFrom(model));
    } catch (e) {
      throw new RebalanceUnavailableError(`rebalance: cannot read every node's Info (${(e as Error).message}); try again once every node answers`);
    }
    const warnings: string[] = [];
    const described = describeNodesFromInfo(infos, (line) => warnings.push(line));
    // The shard map's names, so moves and status name nodes the way the status page does.
    const names = new Map(experts.nodeList().map((n) => [n.address, n.name]));
    for (const n of described) n.name = names.get(n.address) ?? n.name;
    // Info's speeds corrected by what each node's served traffic measured (where there was enough).
    const { nodes, speeds } = measuredSpeeds(current, { model, pairs: this.opts.pairs, routing, nodes: described, replicas }, this.traffic(),
      this.opts.calibration);
    const input: PlacementInput = { model, pairs: this.opts.pairs, routing, nodes, replicas };
    const result = placeExperts(input);
    const before = predictLayers(current, input);
    const beforeMs = sum(before.map((l) => l.slowestMs));
    const afterMs = sum(result.layers.map((l) => l.slowestMs));
    const plan: RebalancePlan = {
      dry_run: req.dryRun === true,
      routing: req.routing ? 'request' : routing ? 'collected' : 'uniform',
      replicas,
      moves: diffShardMaps(current, result.map, (address) => names.get(address) ?? address),
      before,
      after: result.layers,
      predicted: { before_ms: beforeMs, after_ms: afterMs, gain: beforeMs > 0 ? 1 - afterMs / beforeMs : 0 },
      warnings,
      speeds,
    };
    return { plan, map: result.map };
  }
}

/**
 * The pair moves from `a` to `b` (what RemoteExperts.applyShardMap will do): per pair, the
 * nodes losing it paired with the nodes gaining it; from null = a new copy, to null = a copy dropped.
 */
export function diffShardMaps(a: ShardMap, b: ShardMap, name: (address: string) => string = (x) => x):
  { layer: number; expert: number; from: string | null; to: string | null }[] {
  const holders = (m: ShardMap) => {
    const out = new Map<string, string[]>();
    for (const n of m.nodes) for (const p of n.experts) out.set(pairKey(p.layer, p.expert), [...(out.get(pairKey(p.layer, p.expert)) ?? []), n.address]);
    return out;
  };
  const was = holders(a);
  const will = holders(b);
  const moves: { layer: number; expert: number; from: string | null; to: string | null }[] = [];
  for (const key of new Set([...was.keys(), ...will.keys()])) {
    const [layer, expert] = key.split(':').map(Number);
    const before = was.get(key) ?? [];
    const after = will.get(key) ?? [];
    const lost = before.filter((x) => !after.includes(x));
    const gained = after.filter((x) => !before.includes(x));
    for (let j = 0; j < Math.max(lost.length, gained.length); j++) {
      moves.push({ layer, expert, from: lost[j] === undefined ? null : name(lost[j]), to: gained[j] === undefined ? null : name(gained[j]) });
    }
  }
  return moves.sort(comparePairs);
}

function fewestCopies(map: ShardMap): number {
  const copies = new Map<string, number>();
  for (const n of map.nodes) for (const p of n.experts) copies.set(pairKey(p.layer, p.expert), (copies.get(pairKey(p.layer, p.expert)) ?? 0) + 1);
  return Math.max(1, Math.min(...copies.values()));
}

function sum(xs: number[]): number {
  return xs.reduce((a, b) => a + b, 0);
}

/** The coordinator's own Info for placement: no memory budget, speed unknown (placement takes the nodes' median). */
function localInfoFrom(model: PlacementInput['model']): (pairs: { layer: number; expert: number }[]) => InfoResponse__Output {
  return (pairs) => ({
    modelId: '', hiddenSize: model.hiddenSize, intermediateSize: model.intermediateSize, numLayers: model.numLayers,
    numExperts: model.numExperts, experts: pairs.map((p) => ({ layer: p.layer, expert: p.expert })), expertsSpec: '', dtype: '',
    device: 'cpu', kernels: '', weightBytes: 0, version: '', memoryBudgetBytes: 0, ffnBytesPerS: 0, nodeName: 'local',
  });
}

const rebalancers = new WeakMap<Engine, Rebalancer>();

/** The RemoteExperts under an engine's (possibly observed) expert backend, if it has remote experts. */
export function remoteExpertsOf(engine: Engine): RemoteExperts | undefined {
  let b: ExpertBackend | undefined = engine.experts;
  while (b && !(b instanceof RemoteExperts)) b = (b as { inner?: ExpertBackend }).inner;
  return b;
}

/** The engine's rebalancer (made once), or undefined when its experts are not remote (`--experts local`). */
export function rebalancerFor(engine: Engine, opts: Omit<RebalancerOptions, 'experts' | 'model'>): Rebalancer | undefined {
  const existing = rebalancers.get(engine);
  if (existing) return existing;
  const experts = remoteExpertsOf(engine);
  if (!experts) return undefined;
  const c = engine.config;
  const r = new Rebalancer({ ...opts, experts, model: { numLayers: c.numLayers, numExperts: c.numExperts, hiddenSize: c.hiddenSize,
    intermediateSize: c.intermediateSize, topK: c.topK } });
  rebalancers.set(engine, r);
  registerRebalanceStatus(engine, () => r.status());
  return r;
}
