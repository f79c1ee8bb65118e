// `turbosparse plan`: the capacity planner. Before buying hardware: does the model fit the
// nodes of a nodes.yaml (expert bytes each node would hold vs its memory), which shard map,
// and the predicted decode tokens/s at each concurrency over a link, with the step time split
// into coordinator / link / call overhead / expert compute (core/placement/cost-model.ts).
// --model takes a model folder or a config.json alone (a model not downloaded yet: sizes from
// the config; the predictor width, not in config.json, is assumed unless --predictor-rank).
import fs from 'node:fs';
import path from 'node:path';
import { Command, InvalidArgumentError } from 'commander';
import { parseConfig, type ModelConfig } from '../core/config';
import { UserError } from '../core/errors';
import { formatExpertSpec } from '../core/expert-spec';
import { ModelFolder } from '../core/model-folder';
import type { StoreDType } from '../core/native';
import { type Calibration, COST_CONSTANTS, type CostConstants, type ModelCost, parseCalibration, predictStep, type StepPrediction } from '../core/placement/cost-model';
import { describeLink, type LinkSpec, parseLink } from '../core/placement/link-presets';
import { loadNodeDescriptions, type NodeDescription } from '../core/placement/node-descriptions';
import { loadRoutingStats, type RoutingStats } from '../core/placement/routing-stats';
import { PlacementDoesNotFitError, placeExperts } from '../core/placement/placement';
import { balancedShardMapWithBytes, expertBytes, type PairWithBytes, type ShardMap, uniformPairs } from '../core/shard-map';
import { WIRE_ENCODINGS, type WireEncoding } from '../core/wire/rows';
import { choiceOption, intOption, WEIGHTS_HELP, weightsOption } from './options';
import { formatBytes, modelPairs } from './shard-map';

/**
 * Predictor width when only config.json is known: the released TurboSparse-Mixtral code hard-codes it
 * per layer (896, 896, 1024, ...; ../shared/golden/README.md), so 1024 errs on the heavy side.
 */
export const ASSUMED_PREDICTOR_RANK = 1024;

export interface PlanFlags {
  model: string;
  nodesFile: string;
  link: string;
  weights: StoreDType | 'auto';
  concurrency: number[];
  routing?: string;
  /** Default: the calibration's, else DEFAULT_COORDINATOR_GBPS. */
  coordinatorGbps?: number;
  coordinatorDevice: 'cpu' | 'cuda';
  /** A calibration file (bench/coordinator-cost.ts --out): the coordinator's measured software costs and GB/s. */
  calibration?: string;
  wire: WireEncoding;
  replicas: number;
  context: number;
  predictorRank?: number;
  /** Overrides of the measured software costs (what-if: faster machines, a leaner call path). */
  callOverheadUs?: number;
  callNsPerByte?: number;
  nodeCallUs?: number;
  coordinatorLayerUs?: number;
  json?: boolean;
}

export interface PlanNode {
  name: string;
  address: string;
  device: string;
  gbps: number;
  memoryBytes: number;
  /** Expert bytes the map puts on it. */
  bytes: number;
  pairs: number;
  experts: string;
  fits: boolean;
}

export interface Plan {
  model: {
    source: string; configOnly: boolean; layers: number; experts: number; topK: number; hidden: number; intermediate: number;
    weights: string; expertBytes: number; coordinatorBytes: number; predictorRanks: string; activeFraction: number;
  };
  nodes: PlanNode[];
  fits: boolean;
  map: { source: string; nodes: { address: string; experts: string }[] };
  link: { name: string; delayUs: number; mbit: number | null; description: string };
  wire: WireEncoding;
  coordinator: { device: string; gbps: number };
  contextTokens: number;
  /** The software costs used (µs): measured defaults unless overridden. */
  callOverheadUs: number;
  callNsPerByte: number;
  nodeCallUs: number;
  coordinatorLayerUs: number;
  coordinatorStepUs: number;
  coordinatorRowUs: number;
  coordinatorRowLayerUs: number;
  /** The calibration file applied, if any. */
  calibration: string | null;
  predictions: StepPrediction[];
}

/** --coordinator-gbps without a calibration file. */
export const DEFAULT_COORDINATOR_GBPS = 20;

/** A calibration file, read and checked (one UserError line naming the file). */
export function loadCalibration(file: string): Calibration {
  let text: string;
  try {
    text = fs.readFileSync(file, 'utf8');
  } catch (e) {
    throw new UserError(`--calibration ${file}: cannot read it (${(e as NodeJS.ErrnoException).code ?? String(e)})`);
  }
  let raw: unknown;
  try {
    raw = JSON.parse(text);
  } catch (e) {
    throw new UserError(`--calibration ${file}: not JSON (${(e as Error).message.split('\n')[0]}); write it with bench/coordinator-cost.ts --out ${file}`);
  }
  return parseCalibration(raw, file);
}

/** Bytes of a rows x cols matrix stored as `dtype` (i8: one f32 scale per row, as the kernels store it). */
function matrixBytes(rows: number, cols: number, dtype: StoreDType): number {
  switch (dtype) {
    case 'f32': return rows * cols * 4;
    case 'f16': case 'bf16': return rows * cols * 2;
    case 'i8': return rows * cols + rows * 4;
  }
}

/** A config's torch_dtype as a storage dtype (float32 -> f32, else bf16/f16). */
function configDtype(c: ModelConfig): StoreDType {
  const t = c.torchDtype.toLowerCase();
  if (t.includes('float32') || t === 'f32') return 'f32';
  if (t.includes('float16') && !t.includes('bfloat')) return 'f16';
  return 'bf16';
}

interface LoadedModel {
  config: ModelConfig;
  configOnly: boolean;
  predictorRanks: number[];
  pairs: PairWithBytes[];
  dtype: StoreDType;
  activeFraction?: number;
  source: string;
}

/** A demo model records the active fraction its predictors were made for; use it when no routing.json says. */
function recordedActiveFraction(raw: unknown): number | undefined {
  const f = (raw as { demo?: { active_fraction?: unknown } } | null)?.demo?.active_fraction;
  return typeof f === 'number' && f > 0 && f < 1 ? f : undefined;
}

function readConfigFile(file: string): { config: ModelConfig; raw: unknown } {
  let text: string;
  try {
    text = fs.readFileSync(file, 'utf8');
  } catch (e) {
    throw new UserError(`--model ${file}: cannot read it (${(e as NodeJS.ErrnoException).code ?? String(e)})`);
  }
  let raw: unknown;
  try {
    raw = JSON.parse(text);
  } catch (e) {
    throw new UserError(`--model ${file}: not JSON (${(e as Error).message.split('\n')[0]}); give a model folder or its config.json`);
  }
  return { config: parseConfig(raw, file), raw };
}

async function loadModel(model: string, weights: StoreDType | 'auto', predictorRank: number | undefined): Promise<LoadedModel> {
  const abs = path.resolve(model);
  if (!fs.existsSync(abs)) throw new UserError(`--model ${model}: no such file or folder (give a model folder or a config.json)`);
  const isDir = fs.statSync(abs).isDirectory();
  const configFile = isDir ? path.join(abs, 'config.json') : abs;
  const hasWeights = isDir && (fs.existsSync(path.join(abs, 'model.safetensors')) || fs.existsSync(path.join(abs, 'model.safetensors.index.json')));
  if (isDir && !fs.existsSync(configFile)) throw new UserError(`--model ${model}: the folder has no config.json`);
  const { config, raw } = readConfigFile(configFile);
  if (hasWeights) {
    // Weights present: exact expert bytes from the tensor headers, predictor widths from their shapes.
    const folder = await ModelFolder.open(abs);
    try {
      const stored = folder.dtypes()[0]?.toLowerCase();
      const dtype: StoreDType = weights !== 'auto' ? weights : stored === 'f32' ? 'f32' : stored === 'f16' ? 'f16' : 'bf16';
      return {
        config, configOnly: false, predictorRanks: predictorRank ? new Array<number>(config.numLayers).fill(predictorRank) : folder.predictorRanks,
        pairs: modelPairs(folder, weights), dtype, activeFraction: recordedActiveFraction(raw), source: abs,
      };
    } finally {
      await folder.close();
    }
  }
  const dtype = weights === 'auto' ? configDtype(config) : weights;
  const per = expertBytes(config.hiddenSize, config.intermediateSize, dtype);
  const pairs = uniformPairs(config, per);
  return {
    config, configOnly: true, predictorRanks: new Array<number>(config.numLayers).fill(predictorRank ?? ASSUMED_PREDICTOR_RANK),
    pairs, dtype, activeFraction: recordedActiveFraction(raw), source: configFile,
  };
}

/** The bytes the cost model reads, from the config's shapes stored as `dtype`. */
export function modelCost(m: LoadedModel): ModelCost {
  const c = m.config;
  const H = c.hiddenSize;
  const q = c.numHeads * c.headDim;
  const kv = c.numKvHeads * c.headDim;
  const d = m.dtype;
  const dense = matrixBytes(q, H, d) + 2 * matrixBytes(kv, H, d) + matrixBytes(H, q, d) + matrixBytes(c.numExperts, H, d) + 2 * H * 4;
  const expert: number[][] = Array.from({ length: c.numLayers }, () => new Array<number>(c.numExperts).fill(0));
  for (const p of m.pairs) expert[p.layer][p.expert] = p.bytes;
  return {
    numLayers: c.numLayers, numExperts: c.numExperts, topK: c.topK, hiddenSize: H, intermediateSize: c.intermediateSize,
    layerDenseBytes: new Array<number>(c.numLayers).fill(dense),
    predictorBytes: m.predictorRanks.map((r) => new Array<number>(c.numExperts).fill(matrixBytes(r, H, d) + matrixBytes(c.intermediateSize, r, d))),
    expertBytes: expert,
    lmHeadBytes: matrixBytes(c.vocabSize, H, d),
    // The KV cache is bf16 by default (--kv-dtype).
    kvBytesPerToken: 2 * kv * 2,
    activeFraction: m.activeFraction,
  };
}

/** Bytes the coordinator holds: embedding, every layer's dense weights and predictors, lm_head. */
function coordinatorBytes(cost: ModelCost, m: LoadedModel): number {
  const perLayer = cost.layerDenseBytes.reduce((a, b) => a + b, 0) + cost.predictorBytes.flat().reduce((a, b) => a + b, 0);
  return perLayer + cost.lmHeadBytes + (m.config.tieWordEmbeddings ? 0 : matrixBytes(m.config.vocabSize, m.config.hiddenSize, m.dtype));
}

/** The plan for the flags: loads what it needs, predicts, returns everything the output shows. */
export async function makePlan(flags: PlanFlags, overrides: Partial<CostConstants> = {}): Promise<Plan> {
  // Precedence: explicit flags, then the caller's overrides, then the calibration file, then COST_CONSTANTS.
  const calibration = flags.calibration ? loadCalibration(flags.calibration) : null;
  const coordinatorGbps = flags.coordinatorGbps ?? calibration?.coordinatorGbps ?? DEFAULT_COORDINATOR_GBPS;
  const constants: Partial<CostConstants> = {
    ...calibration?.constants,
    ...overrides,
    ...(flags.callOverheadUs !== undefined ? { callOverheadUs: flags.callOverheadUs } : {}),
    ...(flags.callNsPerByte !== undefined ? { callOverheadNsPerByte: flags.callNsPerByte } : {}),
    ...(flags.nodeCallUs !== undefined ? { nodeCallUs: flags.nodeCallUs } : {}),
    ...(flags.coordinatorLayerUs !== undefined ? { coordinatorLayerUs: flags.coordinatorLayerUs } : {}),
  };
  const link: LinkSpec | null = parseLink(flags.link);
  const nodes: NodeDescription[] = loadNodeDescriptions(flags.nodesFile);
  const model = await loadModel(flags.model, flags.weights, flags.predictorRank);
  const c = model.config;
  let routing: RoutingStats | undefined;
  if (flags.routing) routing = loadRoutingStats(flags.routing, c);
  if (flags.replicas > nodes.length) {
    throw new UserError(`--replicas ${flags.replicas} needs at least ${flags.replicas} nodes in ${flags.nodesFile} (replicas live on different nodes), it lists ${nodes.length}`);
  }
  const { map, bytes, source } = placeMap(model.pairs, nodes, flags.replicas, c, routing);
  const cost = modelCost(model);
  const planNodes: PlanNode[] = nodes.map((n, i) => {
    const held = map.nodes.find((x) => x.address === n.address)?.experts ?? [];
    return {
      name: n.name, address: n.address, device: n.device, gbps: n.bytesPerS / 1e9, memoryBytes: n.memoryBytes,
      bytes: bytes[i], pairs: held.length, experts: held.length ? formatExpertSpec(held) : '(none)', fits: bytes[i] <= n.memoryBytes,
    };
  });
  const predictions = flags.concurrency.map((conc) => predictStep({
    model: cost, map, nodes, link, wire: flags.wire, routing, contextTokens: flags.context,
    coordinator: { bytesPerS: coordinatorGbps * 1e9, device: flags.coordinatorDevice }, constants,
  }, conc));
  const ranks = [...new Set(model.predictorRanks)];
  return {
    model: {
      source: model.source, configOnly: model.configOnly, layers: c.numLayers, experts: c.numExperts, topK: c.topK,
      hidden: c.hiddenSize, intermediate: c.intermediateSize, weights: model.dtype,
      expertBytes: model.pairs.reduce((s, p) => s + p.bytes, 0), coordinatorBytes: coordinatorBytes(cost, model),
      predictorRanks: `${ranks.join(', ')}${model.configOnly && !flags.predictorRank ? ' (assumed: not in config.json)' : ''}`,
      activeFraction: model.activeFraction ?? (constants.defaultActiveFraction ?? COST_CONSTANTS.defaultActiveFraction),
    },
    nodes: planNodes,
    fits: planNodes.every((n) => n.fits),
    map: { source, nodes: map.nodes.map((n) => ({ address: n.address, experts: formatExpertSpec(n.experts) })) },
    link: { name: link?.name ?? 'loopback', delayUs: link?.delayUs ?? 0, mbit: link?.mbit ?? null, description: describeLink(link) },
    wire: flags.wire,
    coordinator: { device: flags.coordinatorDevice, gbps: coordinatorGbps },
    contextTokens: flags.context,
    callOverheadUs: constants.callOverheadUs ?? COST_CONSTANTS.callOverheadUs,
    callNsPerByte: constants.callOverheadNsPerByte ?? COST_CONSTANTS.callOverheadNsPerByte,
    nodeCallUs: constants.nodeCallUs ?? COST_CONSTANTS.nodeCallUs,
    coordinatorLayerUs: constants.coordinatorLayerUs ?? COST_CONSTANTS.coordinatorLayerUs,
    coordinatorStepUs: constants.coordinatorStepUs ?? COST_CONSTANTS.coordinatorStepUs,
    coordinatorRowUs: constants.coordinatorRowUs ?? COST_CONSTANTS.coordinatorRowUs,
    coordinatorRowLayerUs: constants.coordinatorRowLayerUs ?? COST_CONSTANTS.coordinatorRowLayerUs,
    calibration: flags.calibration ?? null,
    predictions,
  };
}

/**
 * The shard map for the described nodes: core/placement's placeExperts (routing, speed and memory aware).
 * When the experts do not fit, the byte-balanced map shows by how much each node would overflow.
 */
function placeMap(pairs: PairWithBytes[], nodes: NodeDescription[], replicas: number, c: ModelConfig, routing: RoutingStats | undefined):
  { map: ShardMap; bytes: number[]; source: string } {
  try {
    const r = placeExperts({
      model: { numLayers: c.numLayers, numExperts: c.numExperts, hiddenSize: c.hiddenSize, intermediateSize: c.intermediateSize, topK: c.topK },
      pairs, routing, nodes, replicas,
    });
    return { map: r.map, bytes: r.nodeBytes, source: 'placement (core/placement placeExperts)' };
  } catch (e) {
    if (!(e instanceof PlacementDoesNotFitError)) throw e;
    const { map, bytes } = balancedShardMapWithBytes(pairs, nodes.map((n) => n.address), { replicas });
    map.nodes.forEach((n, i) => (n.name = nodes[i].name));
    return { map, bytes, source: `balanced by bytes (the placement refuses: ${e.message.replace(/^placement: /, '')})` };
  }
}

const GiB = 2 ** 30;

/** The human-readable report. */
export function formatPlan(p: Plan): string {
  const lines: string[] = [];
  const m = p.model;
  lines.push(`model: ${m.source}${m.configOnly ? ' (config.json only: sizes from its shapes)' : ''}`);
  lines.push(`  ${m.layers} layers x ${m.experts} experts (top-${m.topK}), hidden ${m.hidden}, intermediate ${m.intermediate}, weights ${m.weights}; ` +
    `experts ${formatBytes(m.expertBytes)} in all; coordinator ${formatBytes(m.coordinatorBytes)} (attention, router, predictors of width ${m.predictorRanks}, embedding, lm_head)`);
  lines.push('');
  lines.push('node                 address                 device     GB/s   pairs   holds        memory       fits');
  for (const n of p.nodes) {
    lines.push(`${n.name.padEnd(20)} ${n.address.padEnd(23)} ${n.device.padEnd(6)} ${n.gbps.toFixed(1).padStart(8)} ${String(n.pairs).padStart(7)}   ` +
      `${formatBytes(n.bytes).padEnd(12)} ${formatBytes(n.memoryBytes).padEnd(12)} ${n.fits ? 'yes' : `NO (${((n.bytes - n.memoryBytes) / GiB).toFixed(2)} GiB over)`}`);
  }
  const total = p.nodes.reduce((s, n) => s + n.memoryBytes, 0);
  lines.push(p.fits
    ? `fits: every node holds its experts (${formatBytes(m.expertBytes)} of ${formatBytes(total)} of node memory)`
    : `DOES NOT FIT: ${p.nodes.filter((n) => !n.fits).map((n) => n.name).join(', ')} would hold more than its memory ` +
      `(${formatBytes(m.expertBytes)} of experts, ${formatBytes(total)} of node memory in all); add nodes or use --weights int8`);
  lines.push('');
  lines.push(`map: ${p.map.source}`);
  for (const n of p.nodes) lines.push(`  ${n.name}: ${n.experts}`);
  lines.push('');
  lines.push(`link: ${p.link.description}; wire ${p.wire}; coordinator ${p.coordinator.device} at ${p.coordinator.gbps} GB/s; ` +
    `active fraction ${m.activeFraction}; context ${p.contextTokens} tokens per sequence; ` +
    `software: ${p.callOverheadUs} µs + ${p.callNsPerByte} ns/byte per node call on the coordinator, ${p.nodeCallUs} µs per call on the node, ` +
    `coordinator ${p.coordinatorStepUs} µs + ${p.coordinatorRowUs} µs per row per step, ${p.coordinatorLayerUs} µs + ${p.coordinatorRowLayerUs} µs per row per layer ` +
    `(${p.calibration ? `calibration ${p.calibration}` : 'measured on a 2-vCPU VM'})`);
  lines.push('predicted decode (ms per step):');
  lines.push('  conc   tokens/s   step ms   coordinator   link   call overhead   experts   bytes out/back per step');
  for (const s of p.predictions) {
    lines.push(`  ${String(s.concurrency).padStart(4)} ${s.tokensPerS.toFixed(1).padStart(10)} ${s.stepMs.toFixed(2).padStart(9)} ` +
      `${s.coordinatorMs.toFixed(2).padStart(13)} ${s.linkMs.toFixed(2).padStart(6)} ${s.callOverheadMs.toFixed(2).padStart(15)} ` +
      `${s.expertMs.toFixed(2).padStart(9)}   ${formatBytes(s.bytesOutPerStep)} / ${formatBytes(s.bytesBackPerStep)}`);
  }
  if (!p.fits) lines.push('(predictions assume the map could be loaded: it cannot on these nodes)');
  return `${lines.join('\n')}\n`;
}

function concurrencyOption(value: string): number[] {
  const list = value.split(',').map((s) => s.trim());
  const nums = list.map(Number);
  if (list.length === 0 || nums.some((n) => !Number.isInteger(n) || n < 1)) {
    throw new InvalidArgumentError('--concurrency must be positive integers separated by commas, e.g. 1,16');
  }
  return nums;
}

function positiveNumber(flag: string) {
  return (value: string): number => {
    const n = Number(value);
    if (!Number.isFinite(n) || n <= 0) throw new InvalidArgumentError(`${flag} must be a number > 0`);
    return n;
  };
}

function nonNegativeNumber(flag: string) {
  return (value: string): number => {
    const n = Number(value);
    if (!Number.isFinite(n) || n < 0 || value.trim() === '') throw new InvalidArgumentError(`${flag} must be a number >= 0`);
    return n;
  };
}

/** Adds the `plan` subcommand to the `turbosparse` program. */
export function registerPlan(program: Command): void {
  program.command('plan')
    .description('capacity planner: does the model fit these nodes, which map, and predicted decode tokens/s over a link')
    .requiredOption('--model <dir|config.json>', 'a model folder, or a config.json alone (a model not downloaded yet)')
    .requiredOption('--nodes-file <file>', 'nodes.yaml: name, address (or "local"), memory_gib, device, gbps of each node')
    .requiredOption('--link <link>', 'loopback | 10gbe | 1gbe | wifi | DELAY_US:MBIT (one-way delay, bandwidth per direction)')
    .option('--weights <dtype>', `how weights are stored (bf16, int8, f32; default: as in the checkpoint or config); ${WEIGHTS_HELP}`, weightsOption, 'auto')
    .option('--concurrency <list>', 'concurrent sequences to predict, e.g. 1,16', concurrencyOption, [1, 16])
    .option('--routing <file>', 'routing.json (measured routing and active fractions; default: every expert equally hot)')
    .option('--coordinator-gbps <G>', `GB/s of dense weights the coordinator's kernels read (one row; default: the calibration's, else ${DEFAULT_COORDINATOR_GBPS})`, positiveNumber('--coordinator-gbps'))
    .option('--calibration <file>', 'the coordinator\'s software costs and GB/s measured on it by bench/coordinator-cost.ts --out FILE')
    .option('--coordinator-device <d>', 'cpu | cuda (a GPU coordinator batches rows almost for free)', (v: string) => {
      if (v !== 'cpu' && v !== 'cuda') throw new InvalidArgumentError('--coordinator-device must be cpu or cuda');
      return v;
    }, 'cpu')
    .option('--wire <enc>', 'hidden rows on the wire: f32 | bf16 | int8', choiceOption('--wire', WIRE_ENCODINGS), 'f32')
    .option('--replicas <r>', 'copies of every (layer, expert) pair, each on a different node', intOption('--replicas', 1), 1)
    .option('--context <tokens>', 'tokens of context each sequence\'s attention reads (KV cache)', intOption('--context'), 512)
    .option('--predictor-rank <r>', `predictor width (default: from the weights, or ${ASSUMED_PREDICTOR_RANK} for a config.json alone)`, intOption('--predictor-rank', 1))
    .option('--call-overhead-us <us>', `software cost of one node call (default ${COST_CONSTANTS.callOverheadUs}, measured on a 2-vCPU VM)`, intOption('--call-overhead-us'))
    .option('--call-ns-per-byte <ns>', `software cost per byte of a node call (default ${COST_CONSTANTS.callOverheadNsPerByte}, measured on a 2-vCPU VM)`, nonNegativeNumber('--call-ns-per-byte'))
    .option('--node-call-us <us>', `a node's own time per call beyond its kernel (default ${COST_CONSTANTS.nodeCallUs}, measured on a 2-vCPU VM)`, intOption('--node-call-us'))
    .option('--coordinator-layer-us <us>', `coordinator glue per layer (default ${COST_CONSTANTS.coordinatorLayerUs}, measured on a 2-vCPU VM)`, intOption('--coordinator-layer-us'))
    .option('--json', 'print the plan as one JSON object')
    .action(async (flags: PlanFlags) => {
      const plan = await makePlan(flags);
      process.stdout.write(flags.json ? `${JSON.stringify(plan)}\n` : formatPlan(plan));
    });
}
