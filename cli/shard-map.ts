// `turbosparse shard-map`: split a model's (layer, expert) pairs over N expert
// nodes, balanced by the bytes each node holds (read from the checkpoint's
// tensor headers; no weights are read), every replica of a pair on a
// different node. The output is the shard-map file `--experts FILE`,
// `expert-node --shard-map` and the Kubernetes manifests use.
// With --nodes-file (and --routing, --coordinator-experts) the map is placed
// for the described nodes' memory and speed and the measured routing
// (core/placement/placement.ts), and a per-layer summary compares its
// predicted times with the byte-balanced map's.
import fs from 'node:fs';
import path from 'node:path';
import { Command, InvalidArgumentError } from 'commander';
import { UserError } from '../core/errors';
import { ModelFolder, names } from '../core/model-folder';
import type { StoreDType } from '../core/native';
import { LOCAL_ADDRESS, loadNodeDescriptions, type NodeDescription } from '../core/placement/node-descriptions';
import { formatBytes, type LayerPrediction, placeExperts, type PlacementInput, predictLayers } from '../core/placement/placement';
import { loadRoutingStats, type RoutingStats } from '../core/placement/routing-stats';
import {
  balancedShardMap, balancedShardMapWithBytes, expertBytes, formatShardMap, overfullNode, type PairWithBytes, type ShardMap, validateShardMap,
} from '../core/shard-map';
import { intOption, WEIGHTS_HELP, weightsOption } from './options';

const GiB = 2 ** 30;

export { formatBytes };
export const DEFAULT_ADDRESS_TEMPLATE = 'turbosparse-expert-{i}.turbosparse-expert:50051';

export interface ShardMapFlags {
  model: string;
  nodes?: number;
  nodesFile?: string;
  routing?: string;
  coordinatorExperts?: number;
  replicas: number;
  memoryPerNode?: number;
  weights: StoreDType | 'auto';
  out?: string;
  addressTemplate: string;
}

export interface ShardMapResult {
  map: ShardMap;
  /** Expert bytes each node holds, in node order. */
  bytes: number[];
  text: string;
  format: 'yaml' | 'json';
}

/** A routing-aware placement: the map, and predictions for it and for the byte-balanced map over the same nodes. */
export interface PlacedShardMapResult extends ShardMapResult {
  nodes: NodeDescription[];
  routing?: RoutingStats;
  placed: LayerPrediction[];
  balanced: LayerPrediction[];
  /** What the summary should say about guesses made (e.g. the coordinator's speed). */
  notes: string[];
}

/** Every (layer, expert) pair with the bytes of its w1, w2, w3: as stored in the checkpoint, or as `weights`. */
export function modelPairs(folder: ModelFolder, weights: StoreDType | 'auto' = 'auto'): PairWithBytes[] {
  const c = folder.config;
  const pairs: PairWithBytes[] = [];
  const stored = weights === 'auto' ? 0 : expertBytes(c.hiddenSize, c.intermediateSize, weights);
  for (let layer = 0; layer < c.numLayers; layer++) {
    for (let expert = 0; expert < c.numExperts; expert++) {
      let bytes = stored;
      if (weights === 'auto') {
        for (const name of [names.w1(layer, expert), names.w2(layer, expert), names.w3(layer, expert)]) {
          const info = folder.info(name);
          if (!info) throw new UserError(`tensor '${name}' is missing from ${folder.dir}`);
          bytes += info.nbytes;
        }
      }
      pairs.push({ layer, expert, bytes });
    }
  }
  return pairs;
}

/** The model's config and its pairs with their bytes (only the tensor headers are read). */
async function readModelPairs(dir: string, weights: StoreDType | 'auto'): Promise<{ pairs: PairWithBytes[]; config: ModelFolder['config'] }> {
  const folder = await ModelFolder.open(dir);
  try {
    return { pairs: modelPairs(folder, weights), config: folder.config };
  } finally {
    await folder.close();
  }
}

/** The node's address and name from the template ({i} = the entry's index). */
function addressesFrom(template: string, n: number): string[] {
  if (n > 1 && !template.includes('{i}')) {
    throw new UserError(`--address-template "${template}": needs {i} (the node's index) so that the ${n} addresses differ`);
  }
  return Array.from({ length: n }, (_, i) => template.replaceAll('{i}', String(i)));
}

/** Whether a balanced map of `pairs` over `n` nodes keeps every node within `limit` bytes. */
function fits(pairs: PairWithBytes[], n: number, replicas: number, limit: number): boolean {
  const { bytes } = balancedShardMapWithBytes(pairs, Array.from({ length: n }, (_, i) => `n${i}:1`), { replicas });
  return overfullNode(bytes, limit) === undefined;
}

/** The fewest nodes whose balanced map keeps every node within `limit` bytes (undefined: no count does). */
export function nodesNeeded(pairs: PairWithBytes[], limit: number, replicas: number): number | undefined {
  const largest = Math.max(...pairs.map((p) => p.bytes));
  if (largest > limit) return undefined;
  const total = pairs.reduce((s, p) => s + p.bytes, 0) * replicas;
  // Greedy placement is within one pair of the ideal, so the answer is close above the lower bound.
  for (let n = Math.max(replicas, Math.ceil(total / limit)); n <= pairs.length * replicas; n++) {
    if (fits(pairs, n, replicas, limit)) return n;
  }
  return undefined;
}

/** Builds the map for the flags (no output written). */
export async function makeShardMap(flags: ShardMapFlags): Promise<ShardMapResult> {
  if (flags.nodes === undefined) throw new UserError('shard-map: give --nodes N (a byte-balanced map) or --nodes-file FILE (placed for those nodes)');
  const nodeCount = flags.nodes;
  const format = outputFormat(flags.out);
  const { pairs, config: c } = await readModelPairs(flags.model, flags.weights);
  const { map, bytes } = balancedShardMapWithBytes(pairs, addressesFrom(flags.addressTemplate, nodeCount), { replicas: flags.replicas });
  validateShardMap(map, c, '--address-template');
  // Checked here rather than with BalanceOptions.maxBytesPerNode: the error names the flag and the node count that fits.
  const limit = flags.memoryPerNode === undefined ? undefined : flags.memoryPerNode * GiB;
  const worst = limit === undefined ? undefined : overfullNode(bytes, limit);
  if (worst !== undefined) {
    const need = nodesNeeded(pairs, limit!, flags.replicas);
    const how = need === undefined
      ? `one (layer, expert) pair alone is ${formatBytes(Math.max(...pairs.map((p) => p.bytes)))}: raise --memory-per-node`
      : `${need} nodes are needed (--nodes ${need})`;
    throw new UserError(`--memory-per-node ${flags.memoryPerNode}: node ${worst} would hold ${formatBytes(bytes[worst])} ` +
      `of experts (${map.nodes[worst].experts.length} pairs${flags.replicas > 1 ? `, --replicas ${flags.replicas}` : ''}) ` +
      `with --nodes ${nodeCount}; ${how}`);
  }
  return { map, bytes, text: formatShardMap(map, format), format };
}

/**
 * The map placed for --nodes-file's nodes (plus the coordinator's own --coordinator-experts) from
 * --routing's measured routing, with both maps' predicted per-layer times (no output written).
 */
export async function makePlacedShardMap(flags: ShardMapFlags): Promise<PlacedShardMapResult> {
  if (!flags.nodesFile) throw new UserError('shard-map: --nodes-file is needed to place for described nodes');
  const format = outputFormat(flags.out);
  const notes: string[] = [];
  const nodes = loadNodeDescriptions(flags.nodesFile);
  if (flags.coordinatorExperts !== undefined) {
    const memoryBytes = flags.coordinatorExperts * GiB;
    const own = nodes.findIndex((n) => n.address === LOCAL_ADDRESS);
    if (own >= 0) {
      nodes[own] = { ...nodes[own], memoryBytes };
    } else {
      // The coordinator's sparse-FFN speed is not in the file: take the listed nodes' median.
      const speeds = nodes.map((n) => n.bytesPerS).sort((a, b) => a - b);
      const bytesPerS = speeds[Math.floor((speeds.length - 1) / 2)];
      nodes.push({ name: 'coordinator', address: LOCAL_ADDRESS, memoryBytes, device: nodes[0].device, bytesPerS });
      notes.push(`the coordinator's speed is taken as the nodes' median, ${(bytesPerS / 1e9).toFixed(2)} GB/s ` +
        `(list it in --nodes-file as address "${LOCAL_ADDRESS}" with its gbps to say otherwise)`);
    }
  }
  const { pairs, config: c } = await readModelPairs(flags.model, flags.weights);
  const routing = flags.routing === undefined ? undefined : loadRoutingStats(flags.routing, c);
  const input: PlacementInput = {
    model: { numLayers: c.numLayers, numExperts: c.numExperts, hiddenSize: c.hiddenSize, intermediateSize: c.intermediateSize, topK: c.topK },
    pairs, routing, nodes, replicas: flags.replicas,
  };
  if (routing) {
    const m = routing.model;
    if (m.top_k !== c.topK || m.hidden_size !== c.hiddenSize || m.intermediate_size !== c.intermediateSize) {
      throw new UserError(`--routing ${flags.routing}: the stats describe another model (top-${m.top_k}, hidden ${m.hidden_size}, ` +
        `intermediate ${m.intermediate_size}; ${flags.model}: top-${c.topK}, hidden ${c.hiddenSize}, intermediate ` +
        `${c.intermediateSize}): collect them on this model`);
    }
  }
  const placed = placeExperts(input);
  validateShardMap(placed.map, c, flags.nodesFile);
  // Today's map for comparison: balanced by bytes over the remote nodes (what --nodes N would give them).
  const remote = nodes.filter((n) => n.address !== LOCAL_ADDRESS).map((n) => n.address);
  const over = remote.length >= flags.replicas ? remote : nodes.map((n) => n.address);
  const balanced = predictLayers(balancedShardMap(pairs, over, { replicas: flags.replicas }), input);
  return {
    map: placed.map, bytes: placed.nodeBytes, text: formatShardMap(placed.map, format), format,
    nodes, routing, placed: placed.layers, balanced, notes,
  };
}

function sumSlowest(layers: LayerPrediction[]): number {
  return layers.reduce((s, l) => s + l.slowestMs, 0);
}

/** The per-layer summary: predicted slowest / mean node ms per token, byte-balanced vs placed, and the nodes. */
export function formatPlacementSummary(r: PlacedShardMapResult, flags: ShardMapFlags): string {
  const ms = (v: number) => v.toFixed(3);
  const pair = (l: LayerPrediction) => `${ms(l.slowestMs)} / ${ms(l.meanMs)}`;
  const rows: string[][] = [['layer', 'balanced slowest / mean ms', 'placed slowest / mean ms']];
  r.placed.forEach((l, i) => rows.push([String(l.layer), pair(r.balanced[i]), pair(l)]));
  const mean = (ls: LayerPrediction[]) => ls.reduce((s, l) => s + l.meanMs, 0);
  rows.push(['total', `${ms(sumSlowest(r.balanced))} / ${ms(mean(r.balanced))}`, `${ms(sumSlowest(r.placed))} / ${ms(mean(r.placed))}`]);
  const widths = rows[0].map((_, k) => Math.max(...rows.map((row) => row[k].length)));
  const table = rows.map((row) => row.map((cell, k) => (k === 0 ? cell.padEnd(widths[k]) : cell.padStart(widths[k]))).join('  ')).join('\n');
  const source = r.routing ? `routing from ${flags.routing} (${r.routing.tokens} tokens)` : 'no --routing: every expert equally hot';
  const speedup = sumSlowest(r.placed) > 0 ? sumSlowest(r.balanced) / sumSlowest(r.placed) : 1;
  const held = r.nodes.map((n, i) => {
    const pairs = r.map.nodes.find((m) => m.address === n.address)?.experts.length ?? 0;
    return `  ${n.name} (${n.address}, ${(n.bytesPerS / 1e9).toFixed(2)} GB/s): ${pairs} pairs, ${formatBytes(r.bytes[i])} of ${formatBytes(n.memoryBytes)}`;
  });
  return [
    `shard map: placed for ${r.nodes.length} node(s) from ${flags.nodesFile}, at least ${flags.replicas} replica(s) of each pair, ${source}` +
      `${flags.out ? `; written to ${flags.out}` : ''}`,
    ...r.notes.map((n) => `note: ${n}`),
    'predicted node time per token routed through each layer (slowest node sets the layer):',
    table,
    `predicted: ${speedup.toFixed(2)}x the byte-balanced map's speed (sum of the layers' slowest nodes)`,
    'nodes:',
    ...held,
  ].join('\n') + '\n';
}

/** Flags that only one of the two modes takes, as one-line errors. */
function checkModeFlags(flags: ShardMapFlags, cmd: Command): void {
  const given = (name: string) => cmd.getOptionValueSource(name) === 'cli';
  if (flags.nodesFile !== undefined) {
    if (flags.nodes !== undefined) throw new UserError('--nodes and --nodes-file: give one (--nodes-file lists the nodes itself)');
    if (flags.memoryPerNode !== undefined) throw new UserError('--memory-per-node with --nodes-file: give each node\'s memory_gib in the file instead');
    if (given('addressTemplate')) throw new UserError('--address-template with --nodes-file: the file gives each node\'s address');
    return;
  }
  if (flags.routing !== undefined) throw new UserError('--routing needs --nodes-file (the nodes\' memory and speed to place for)');
  if (flags.coordinatorExperts !== undefined) throw new UserError('--coordinator-experts needs --nodes-file (the nodes to place for besides the coordinator)');
  if (flags.nodes === undefined) throw new UserError('shard-map: give --nodes N (a byte-balanced map) or --nodes-file FILE (placed for those nodes)');
}

/** .json -> JSON; .yaml, .yml or stdout -> YAML. */
function outputFormat(out: string | undefined): 'yaml' | 'json' {
  if (out === undefined) return 'yaml';
  const ext = path.extname(out).toLowerCase();
  if (ext === '.json') return 'json';
  if (ext === '.yaml' || ext === '.yml') return 'yaml';
  throw new UserError(`--out ${out}: name a .yaml, .yml or .json file (the extension picks the format)`);
}

function gibOption(flag: string) {
  return (value: string): number => {
    const n = Number(value);
    if (!Number.isFinite(n) || n <= 0) throw new InvalidArgumentError(`${flag} must be a number of GiB > 0, e.g. 22.5`);
    return n;
  };
}

function configure(cmd: Command): Command {
  return cmd
    .description('split a model\'s experts over N expert nodes balanced by bytes, or place them for described nodes ' +
      'and measured routing (prints or writes a shard map)')
    .requiredOption('--model <dir>', 'Hugging Face model folder (only the tensor headers are read)')
    .option('--nodes <n>', 'number of expert nodes (a byte-balanced map)', intOption('--nodes', 1))
    .option('--nodes-file <file>', 'nodes.yaml: the nodes\' addresses, memory_gib and gbps; the map is placed for them')
    .option('--routing <file>', 'routing.json (`turbosparse profile`, `stats --export`): place hot pairs apart and on fast nodes (needs --nodes-file)')
    .option('--coordinator-experts <GiB>', 'the coordinator holds this much of the experts itself (whole hot layers skip the network; needs --nodes-file)',
      gibOption('--coordinator-experts'))
    .option('--replicas <r>', 'copies of every (layer, expert) pair, each on a different node (with --nodes-file: at least)', intOption('--replicas', 1), 1)
    .option('--memory-per-node <GiB>', 'fail (naming the node count needed) when a node would hold more expert weights than this',
      gibOption('--memory-per-node'))
    .option('--weights <dtype>', `size experts as the nodes will store them; ${WEIGHTS_HELP}`, weightsOption, 'auto')
    .option('--address-template <t>', 'node i\'s address; {i} is replaced by the index', DEFAULT_ADDRESS_TEMPLATE)
    .option('--out <file>', 'write the map here: .yaml/.yml or .json (default: YAML on stdout)')
    .action(async (flags: ShardMapFlags, command: Command) => {
      checkModeFlags(flags, command);
      if (flags.nodesFile !== undefined) {
        const placed = await makePlacedShardMap(flags);
        if (flags.out) fs.writeFileSync(flags.out, placed.text);
        else process.stdout.write(placed.text);
        process.stderr.write(formatPlacementSummary(placed, flags));
        return;
      }
      const r = await makeShardMap(flags);
      if (flags.out) fs.writeFileSync(flags.out, r.text);
      else process.stdout.write(r.text);
      const min = Math.min(...r.bytes);
      const max = Math.max(...r.bytes);
      const pairs = r.map.nodes.map((n) => n.experts.length);
      process.stderr.write(`shard map: ${flags.nodes} node(s), ${flags.replicas} replica(s) of each pair; per node ` +
        `${formatBytes(min)} to ${formatBytes(max)}, ${Math.min(...pairs)} to ${Math.max(...pairs)} pairs` +
        `${flags.out ? `; written to ${flags.out}` : ''}\n`);
    });
}

/** Adds the `shard-map` subcommand to the `turbosparse` program. */
export function registerShardMap(program: Command): void {
  configure(program.command('shard-map'));
}
