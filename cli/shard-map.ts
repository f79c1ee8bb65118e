// `turbosparse shard-map`: split a model's (layer, expert) pairs over N expert
// nodes, balanced by the bytes each node holds (read from the checkpoint's
// tensor headers; no weights are read), every replica of a pair on a
// different node. The output is the shard-map file `--experts FILE`,
// `expert-node --shard-map` and the Kubernetes manifests use.
import fs from 'node:fs';
import path from 'node:path';
import { Command, InvalidArgumentError } from 'commander';
import { UserError } from '../core/errors';
import { ModelFolder, names } from '../core/model-folder';
import type { StoreDType } from '../core/native';
import {
  balancedShardMapWithBytes, expertBytes, formatShardMap, overfullNode, type PairWithBytes, type ShardMap, validateShardMap,
} from '../core/shard-map';
import { intOption, WEIGHTS_HELP, weightsOption } from './options';

const GiB = 2 ** 30;

/** 21.00 GiB, 336.0 MiB, 240.0 KiB. */
export function formatBytes(n: number): string {
  if (n >= GiB) return `${(n / GiB).toFixed(2)} GiB`;
  if (n >= 2 ** 20) return `${(n / 2 ** 20).toFixed(1)} MiB`;
  return `${(n / 1024).toFixed(1)} KiB`;
}
export const DEFAULT_ADDRESS_TEMPLATE = 'turbosparse-expert-{i}.turbosparse-expert:50051';

export interface ShardMapFlags {
  model: string;
  nodes: number;
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
  const format = outputFormat(flags.out);
  const folder = await ModelFolder.open(flags.model);
  let pairs: PairWithBytes[];
  try {
    pairs = modelPairs(folder, flags.weights);
  } finally {
    await folder.close();
  }
  const c = folder.config;
  const { map, bytes } = balancedShardMapWithBytes(pairs, addressesFrom(flags.addressTemplate, flags.nodes), { replicas: flags.replicas });
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
      `with --nodes ${flags.nodes}; ${how}`);
  }
  return { map, bytes, text: formatShardMap(map, format), format };
}

/** .json -> JSON; .yaml, .yml or stdout -> YAML. */
function outputFormat(out: string | undefined): 'yaml' | 'json' {
  if (out === undefined) return 'yaml';
  const ext = path.extname(out).toLowerCase();
  if (ext === '.json') return 'json';
  if (ext === '.yaml' || ext === '.yml') return 'yaml';
  throw new UserError(`--out ${out}: name a .yaml, .yml or .json file (the extension picks the format)`);
}

function gibOption(value: string): number {
  const n = Number(value);
  if (!Number.isFinite(n) || n <= 0) throw new InvalidArgumentError('--memory-per-node must be a number of GiB > 0, e.g. 22.5');
  return n;
}

function configure(cmd: Command): Command {
  return cmd
    .description('split a model\'s experts over N expert nodes, balanced by bytes (prints or writes a shard map)')
    .requiredOption('--model <dir>', 'Hugging Face model folder (only the tensor headers are read)')
    .requiredOption('--nodes <n>', 'number of expert nodes', intOption('--nodes', 1))
    .option('--replicas <r>', 'copies of every (layer, expert) pair, each on a different node', intOption('--replicas', 1), 1)
    .option('--memory-per-node <GiB>', 'fail (naming the node count needed) when a node would hold more expert weights than this', gibOption)
    .option('--weights <dtype>', `size experts as the nodes will store them; ${WEIGHTS_HELP}`, weightsOption, 'auto')
    .option('--address-template <t>', 'node i\'s address; {i} is replaced by the index', DEFAULT_ADDRESS_TEMPLATE)
    .option('--out <file>', 'write the map here: .yaml/.yml or .json (default: YAML on stdout)')
    .action(async (flags: ShardMapFlags) => {
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
