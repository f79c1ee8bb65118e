// The shard map: which expert node (address) holds which (layer, expert) pairs.
// A pair may live on several nodes (replicas). The same file drives
// `--experts FILE` on the coordinator, `cluster:N` (made by balancedShardMap)
// and the Kubernetes manifests. File format (YAML or JSON):
//
//   nodes:
//     - address: 10.0.0.5:50051
//       name: expert-0            # optional, for logs and tables
//       experts: "0-15:0-7"       # an --experts SPEC, or a list of SPECs / [layer, expert] pairs
//     - address: 10.0.0.6:50051
//       experts: ["16-31:0-7", "0:0"]
//     - address: local              # the coordinator itself: these pairs run in its process, no network
//       experts: "0-31:3"
import fs from 'node:fs';
import YAML from 'yaml';
import { z } from 'zod';
import { UserError } from './errors';
import { LOCAL_ADDRESS } from './placement/node-descriptions';
import { type ExpertPair, type ModelDims, allPairs, formatExpertSpec, pairKey, parseExpertSpec, uniquePairs } from './expert-spec';

export interface ShardNode {
  address: string;
  name?: string;
  /** Sorted, unique. */
  experts: ExpertPair[];
}

export interface ShardMap {
  nodes: ShardNode[];
}

const pairSchema = z.union([
  z.string(),
  z.tuple([z.number().int().nonnegative(), z.number().int().nonnegative()]),
  z.strictObject({ layer: z.number().int().nonnegative(), expert: z.number().int().nonnegative() }),
]);
const fileSchema = z.strictObject({
  nodes: z.array(z.strictObject({
    address: z.string().min(1),
    name: z.string().min(1).optional(),
    experts: z.union([z.string(), z.array(pairSchema).min(1)]),
  })).min(1),
});

/** Reads and validates a shard-map file (.yaml, .yml or .json; YAML parses JSON too). */
export function loadShardMap(file: string, dims?: ModelDims): ShardMap {
  let text: string;
  try {
    text = fs.readFileSync(file, 'utf8');
  } catch (e) {
    throw new UserError(`shard map ${file}: cannot read it (${(e as NodeJS.ErrnoException).code ?? String(e)})`);
  }
  return parseShardMap(text, file, dims);
}

/** Parses shard-map text; with `dims`, also validates it (see validateShardMap). */
export function parseShardMap(text: string, source: string, dims?: ModelDims): ShardMap {
  let raw: unknown;
  try {
    raw = YAML.parse(text);
  } catch (e) {
    throw new UserError(`shard map ${source}: not valid YAML or JSON (${(e as Error).message.split('\n')[0]})`);
  }
  const parsed = fileSchema.safeParse(raw);
  if (!parsed.success) {
    const issue = parsed.error.issues[0];
    const where = issue.path.length ? issue.path.join('.') : '(top level)';
    throw new UserError(`shard map ${source}: ${where}: ${issue.message} (expected nodes: [{address: "host:port", experts: "0-31:0-3"}])`);
  }
  const map: ShardMap = {
    nodes: parsed.data.nodes.map((n, i) => {
      const what = `shard map ${source}: nodes.${i}.experts`;
      const items = typeof n.experts === 'string' ? [n.experts] : n.experts;
      const pairs: ExpertPair[] = [];
      for (const item of items) {
        if (typeof item === 'string') pairs.push(...parseExpertSpec(item, dims, what));
        else if (Array.isArray(item)) pairs.push({ layer: item[0], expert: item[1] });
        else pairs.push(item);
      }
      return { address: n.address.trim(), ...(n.name ? { name: n.name } : {}), experts: uniquePairs(pairs) };
    }),
  };
  if (dims) validateShardMap(map, dims, source);
  return map;
}

/**
 * Checks a shard map against the model: addresses look like host:port and are
 * unique, every pair is in range, and every (layer, expert) is held by at least
 * one node — else one error listing the missing pairs compactly.
 */
export function validateShardMap(map: ShardMap, dims: ModelDims, source = '(built in)'): void {
  if (map.nodes.length === 0) throw new UserError(`shard map ${source}: no nodes`);
  const seen = new Set<string>();
  map.nodes.forEach((n, i) => {
    if (n.address !== LOCAL_ADDRESS && !/^(\[[0-9a-fA-F:.]+\]|[A-Za-z0-9_.-]+):\d{1,5}$/.test(n.address)) {
      throw new UserError(`shard map ${source}: nodes.${i}.address "${n.address}" is not host:port (or "${LOCAL_ADDRESS}" for the coordinator)`);
    }
    if (seen.has(n.address)) throw new UserError(`shard map ${source}: address ${n.address} appears twice (list each node once)`);
    seen.add(n.address);
    if (n.experts.length === 0) throw new UserError(`shard map ${source}: nodes.${i} (${n.address}) holds no experts`);
    const bad = n.experts.filter((p) => p.layer >= dims.numLayers || p.expert >= dims.numExperts);
    if (bad.length) {
      throw new UserError(`shard map ${source}: nodes.${i} (${n.address}) names ${formatExpertSpec(bad)}, outside the model ` +
        `(${dims.numLayers} layers x ${dims.numExperts} experts)`);
    }
  });
  const missing = missingPairs(map, dims);
  if (missing.length) {
    throw new UserError(`shard map ${source}: no node holds ${formatExpertSpec(missing)} ` +
      `(${missing.length} of ${dims.numLayers * dims.numExperts} (layer, expert) pairs); add them to a node`);
  }
}

/** The pairs of the model no node in `map` holds (optionally counting only some nodes). */
export function missingPairs(map: ShardMap, dims: ModelDims, nodeIndices?: number[]): ExpertPair[] {
  const held = new Set<string>();
  const nodes = nodeIndices ? nodeIndices.map((i) => map.nodes[i]) : map.nodes;
  for (const n of nodes) for (const p of n.experts) held.add(pairKey(p.layer, p.expert));
  return allPairs(dims).filter((p) => !held.has(pairKey(p.layer, p.expert)));
}

/** replicas[layer][expert] = indices of the nodes holding that pair, in shard-map order. */
export function replicaTable(map: ShardMap, dims: ModelDims): number[][][] {
  const table: number[][][] = Array.from({ length: dims.numLayers }, () =>
    Array.from({ length: dims.numExperts }, () => [] as number[]));
  map.nodes.forEach((n, i) => {
    for (const p of n.experts) table[p.layer]?.[p.expert]?.push(i);
  });
  return table;
}

export type PairWithBytes = ExpertPair & { bytes: number };

export interface BalanceOptions {
  /** Copies of every pair, each on a different node (default 1). */
  replicas?: number;
  /** Fail when a node would hold more than this many bytes. */
  maxBytesPerNode?: number;
}

/**
 * A shard map balanced by bytes: pairs in decreasing size are placed on the
 * node with the fewest bytes so far (ties: the node with the fewest pairs of
 * that layer, so one layer's experts spread out and run in parallel; then the
 * lower index). Every replica of a pair goes to a different node.
 */
export function balancedShardMap(pairs: PairWithBytes[], nodes: string[], opts: BalanceOptions = {}): ShardMap {
  return balancedShardMapWithBytes(pairs, nodes, opts).map;
}

/** The fullest node's index when it holds more than `limit` bytes (the first such one), else undefined. */
export function overfullNode(bytes: readonly number[], limit: number): number | undefined {
  let worst = 0;
  for (let i = 1; i < bytes.length; i++) if (bytes[i] > bytes[worst]) worst = i;
  return bytes.length > 0 && bytes[worst] > limit ? worst : undefined;
}

/** balancedShardMap, with the bytes each node holds (in node order). */
export function balancedShardMapWithBytes(pairs: PairWithBytes[], nodes: string[], opts: BalanceOptions = {}): { map: ShardMap; bytes: number[] } {
  const replicas = opts.replicas ?? 1;
  if (nodes.length === 0) throw new UserError('shard map: at least one node is needed');
  if (!Number.isInteger(replicas) || replicas < 1) throw new UserError(`--replicas ${replicas}: must be a whole number >= 1`);
  if (replicas > nodes.length) {
    throw new UserError(`--replicas ${replicas} needs at least ${replicas} nodes (replicas live on different nodes), got ${nodes.length}`);
  }
  const order = [...pairs].sort((a, b) => b.bytes - a.bytes || a.layer - b.layer || a.expert - b.expert);
  const bytes = new Array<number>(nodes.length).fill(0);
  const held = nodes.map(() => [] as ExpertPair[]);
  const perLayer = nodes.map(() => new Map<number, number>());
  for (const p of order) {
    const used = new Set<number>();
    for (let r = 0; r < replicas; r++) {
      let best = -1;
      for (let i = 0; i < nodes.length; i++) {
        if (used.has(i)) continue;
        if (best < 0 || bytes[i] < bytes[best] ||
          (bytes[i] === bytes[best] && (perLayer[i].get(p.layer) ?? 0) < (perLayer[best].get(p.layer) ?? 0))) best = i;
      }
      used.add(best);
      bytes[best] += p.bytes;
      held[best].push({ layer: p.layer, expert: p.expert });
      perLayer[best].set(p.layer, (perLayer[best].get(p.layer) ?? 0) + 1);
    }
  }
  const worst = opts.maxBytesPerNode === undefined ? undefined : overfullNode(bytes, opts.maxBytesPerNode);
  if (worst !== undefined) {
    throw new UserError(`shard map: a node would hold ${(bytes[worst] / 2 ** 30).toFixed(2)} GiB of experts, more than the ` +
      `${(opts.maxBytesPerNode! / 2 ** 30).toFixed(2)} GiB allowed per node; use more nodes or fewer replicas`);
  }
  return { map: { nodes: nodes.map((address, i) => ({ address, experts: uniquePairs(held[i]) })) }, bytes };
}

/** Bytes of one expert's weights (w1, w3, w2) stored as `dtype`. */
export function expertBytes(hiddenSize: number, intermediateSize: number, dtype: 'f32' | 'f16' | 'bf16' | 'i8'): number {
  const n = 3 * hiddenSize * intermediateSize;
  switch (dtype) {
    case 'f32': return n * 4;
    case 'f16': case 'bf16': return n * 2;
    // One f32 scale per row: w1, w3 have I rows of H, w2 is stored transposed (I rows of H) too.
    case 'i8': return n + 3 * intermediateSize * 4;
  }
}

/** Every pair of the model with the same byte size. */
export function uniformPairs(dims: ModelDims, bytesPerExpert: number): PairWithBytes[] {
  return allPairs(dims).map((p) => ({ ...p, bytes: bytesPerExpert }));
}

/** The shard map as a file (experts as compact SPECs). */
export function formatShardMap(map: ShardMap, format: 'yaml' | 'json' = 'yaml'): string {
  const doc = {
    nodes: map.nodes.map((n) => ({
      address: n.address,
      ...(n.name ? { name: n.name } : {}),
      experts: formatExpertSpec(n.experts),
    })),
  };
  return format === 'json' ? `${JSON.stringify(doc, null, 2)}\n` : YAML.stringify(doc);
}
