// `turbosparse shard-map` on the golden tiny model: every (layer, expert) pair
// covered --replicas times, each copy on a different node, nodes balanced by
// the bytes of the pairs' w1/w2/w3 (within one pair's size), YAML or JSON by
// the --out extension (YAML on stdout), and --memory-per-node refusing an
// overfull node while naming the node count that fits.
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { nodesNeeded } from '../../cli/shard-map';
import { pairKey } from '../../core/expert-spec';
import { ModelFolder, names } from '../../core/model-folder';
import { balancedShardMap, parseShardMap, type ShardMap, uniformPairs } from '../../core/shard-map';
import { describeGolden, TINY_A_MODEL } from '../helpers/golden';
import { runCliOrThrow } from '../helpers/cli';

const GiB = 2 ** 30;

const shardMap = (...args: string[]) => runCliOrThrow(['shard-map', ...args]);

describeGolden('turbosparse shard-map (tiny-a)', () => {
  let dir: string;
  let dims: { numLayers: number; numExperts: number };
  /** Bytes of each pair's w1 + w2 + w3, from the checkpoint's headers. */
  const pairBytes = new Map<string, number>();

  beforeAll(async () => {
    dir = fs.mkdtempSync(path.join(os.tmpdir(), 'ts-shard-map-cli-'));
    const folder = await ModelFolder.open(TINY_A_MODEL);
    try {
      dims = folder.config;
      for (let l = 0; l < dims.numLayers; l++) {
        for (let e = 0; e < dims.numExperts; e++) {
          pairBytes.set(pairKey(l, e), [names.w1(l, e), names.w2(l, e), names.w3(l, e)].reduce((s, n) => s + folder.info(n)!.nbytes, 0));
        }
      }
    } finally {
      await folder.close();
    }
  });
  afterAll(() => fs.rmSync(dir, { recursive: true, force: true }));

  /** Coverage, replicas on distinct nodes and balance; returns bytes per node. */
  function check(map: ShardMap, nodes: number, replicas: number): number[] {
    expect(map.nodes).toHaveLength(nodes);
    const holders = new Map<string, number[]>();
    map.nodes.forEach((n, i) => {
      for (const p of n.experts) holders.set(pairKey(p.layer, p.expert), [...(holders.get(pairKey(p.layer, p.expert)) ?? []), i]);
    });
    // Every pair of the model, each on exactly `replicas` different nodes.
    expect([...holders.keys()].sort()).toEqual([...pairBytes.keys()].sort());
    for (const nodesOfPair of holders.values()) {
      expect(nodesOfPair).toHaveLength(replicas);
      expect(new Set(nodesOfPair).size).toBe(replicas);
    }
    // Balanced by bytes: greedy placement, largest first, keeps nodes within one pair of each other.
    const bytes = map.nodes.map((n) => n.experts.reduce((s, p) => s + pairBytes.get(pairKey(p.layer, p.expert))!, 0));
    expect(Math.max(...bytes) - Math.min(...bytes)).toBeLessThanOrEqual(Math.max(...pairBytes.values()));
    return bytes;
  }

  test.each([
    [1, 1], [2, 1], [3, 1], [3, 2], [4, 3], [8, 1], [5, 5],
  ])('%i node(s) x %i replica(s): full coverage, replicas on different nodes, balanced', async (nodes, replicas) => {
    const out = path.join(dir, `map-${nodes}-${replicas}.yaml`);
    const { stderr } = await shardMap('--model', TINY_A_MODEL, '--nodes', String(nodes), '--replicas', String(replicas), '--out', out);
    const map = parseShardMap(fs.readFileSync(out, 'utf8'), out, dims); // validates addresses and coverage
    const bytes = check(map, nodes, replicas);
    expect(bytes.reduce((a, b) => a + b, 0)).toBe([...pairBytes.values()].reduce((a, b) => a + b, 0) * replicas);
    expect(map.nodes.map((n) => n.address)).toEqual(Array.from({ length: nodes }, (_, i) => `turbosparse-expert-${i}.turbosparse-expert:50051`));
    expect(stderr).toMatch(new RegExp(`^shard map: ${nodes} node\\(s\\), ${replicas} replica\\(s\\) of each pair; .*; written to ${out}\\n$`));
  });

  test('YAML on stdout by default, JSON for .json, addresses from --address-template', async () => {
    const { stdout } = await shardMap('--model', TINY_A_MODEL, '--nodes', '2');
    expect(stdout.startsWith('nodes:\n  - address: turbosparse-expert-0.turbosparse-expert:50051\n')).toBe(true);
    check(parseShardMap(stdout, 'stdout', dims), 2, 1);
    const out = path.join(dir, 'map.json');
    await shardMap('--model', TINY_A_MODEL, '--nodes', '3', '--out', out, '--address-template', '127.0.0.1:{i}0051');
    const json = JSON.parse(fs.readFileSync(out, 'utf8'));
    expect(json.nodes.map((n: { address: string }) => n.address)).toEqual(['127.0.0.1:00051', '127.0.0.1:10051', '127.0.0.1:20051']);
    check(parseShardMap(JSON.stringify(json), out, dims), 3, 1);
  });

  test('--memory-per-node: an overfull node is an error naming the node count that fits; that count works', async () => {
    const pair = Math.max(...pairBytes.values());
    const limit = String((3 * pair) / GiB); // 8 pairs in 3-pair nodes: 3 nodes
    await expect(shardMap('--model', TINY_A_MODEL, '--nodes', '2', '--memory-per-node', limit)).rejects.toThrow(
      new RegExp(`^--memory-per-node ${limit}: node \\d would hold 480\\.0 KiB of experts \\(4 pairs\\) with --nodes 2; 3 nodes are needed \\(--nodes 3\\)$`));
    // Replicas count: 16 copies in 3-pair nodes need 6 nodes.
    await expect(shardMap('--model', TINY_A_MODEL, '--nodes', '4', '--replicas', '2', '--memory-per-node', limit)).rejects.toThrow(
      /with --nodes 4; 6 nodes are needed \(--nodes 6\)$/);
    const out = path.join(dir, 'fits.yaml');
    await shardMap('--model', TINY_A_MODEL, '--nodes', '3', '--memory-per-node', limit, '--out', out);
    const bytes = check(parseShardMap(fs.readFileSync(out, 'utf8'), out, dims), 3, 1);
    expect(Math.max(...bytes)).toBeLessThanOrEqual(3 * pair);
    // Smaller than a single pair: no node count helps.
    await expect(shardMap('--model', TINY_A_MODEL, '--nodes', '2', '--memory-per-node', String(pair / 2 / GiB))).rejects.toThrow(
      /one \(layer, expert\) pair alone is 120\.0 KiB: raise --memory-per-node$/);
  });

  test('--weights sizes the pairs as the nodes store them', async () => {
    const out = path.join(dir, 'i8.yaml');
    const pair = Math.max(...pairBytes.values()); // f32 in the checkpoint
    // bf16 halves every pair: twice as many fit in the same memory.
    const limit = String((2 * pair) / GiB);
    await expect(shardMap('--model', TINY_A_MODEL, '--nodes', '3', '--memory-per-node', limit)).rejects.toThrow(/4 nodes are needed/);
    await shardMap('--model', TINY_A_MODEL, '--nodes', '2', '--memory-per-node', limit, '--weights', 'bf16', '--out', out);
    expect(parseShardMap(fs.readFileSync(out, 'utf8'), out, dims).nodes).toHaveLength(2);
  });

  test('bad requests are one-line user errors', async () => {
    const cases: [string[], RegExp][] = [
      [['--nodes', '2', '--replicas', '3'], /^--replicas 3 needs at least 3 nodes/],
      [['--nodes', '2', '--out', path.join(dir, 'map.txt')], /--out .*map\.txt: name a \.yaml, \.yml or \.json file/],
      [['--nodes', '2', '--address-template', 'node:50051'], /needs \{i\} \(the node's index\)/],
      [['--nodes', '2', '--address-template', 'node {i}'], /is not host:port/],
    ];
    for (const [args, message] of cases) {
      const run = shardMap('--model', TINY_A_MODEL, ...args);
      await expect(run).rejects.toThrow(message);
      await expect(run).rejects.toMatchObject({ name: 'UserError' });
    }
    await expect(shardMap('--model', path.join(dir, 'no-model'), '--nodes', '2')).rejects.toThrow(/model folder .*no-model does not exist/);
  });
});

test('nodesNeeded: the fewest nodes a balanced map fits in', () => {
  const dims = { numLayers: 32, numExperts: 8 };
  const pairs = uniformPairs(dims, 336);
  expect(nodesNeeded(pairs, 336 * 64, 1)).toBe(4);
  expect(nodesNeeded(pairs, 336 * 63, 1)).toBe(5);
  expect(nodesNeeded(pairs, 336 * 64, 2)).toBe(8);
  expect(nodesNeeded(pairs, 335, 1)).toBeUndefined();
  // Unequal sizes: the answer is a count whose map fits, and one fewer does not.
  const mixed = pairs.map((p, i) => ({ ...p, bytes: 100 + (i % 7) * 37 }));
  const limit = 5_000;
  const n = nodesNeeded(mixed, limit, 2)!;
  const worst = (k: number) => {
    const map = balancedShardMap(mixed, Array.from({ length: k }, (_, i) => `n${i}:1`), { replicas: 2 });
    const size = new Map(mixed.map((p) => [pairKey(p.layer, p.expert), p.bytes]));
    return Math.max(...map.nodes.map((node) => node.experts.reduce((s, p) => s + size.get(pairKey(p.layer, p.expert))!, 0)));
  };
  expect(worst(n)).toBeLessThanOrEqual(limit);
  expect(worst(n - 1)).toBeGreaterThan(limit);
});
