// `turbosparse shard-map --nodes-file [--routing] [--coordinator-experts] [--replicas]` on the
// golden tiny model: a valid map placed for the described nodes (hot pairs on the fast node,
// memory respected, whole layers on the coordinator), the per-layer summary against the
// byte-balanced map, and one-line errors for flags that do not go together. One real process
// checks the exit codes and the streams; the rest run in process like shard-map-cli.test.ts.
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { pairKey } from '../../core/expert-spec';
import { ROUTING_FORMAT } from '../../core/placement/routing-stats';
import { parseShardMap } from '../../core/shard-map';
import { describeGolden, TINY_A_MODEL } from '../helpers/golden';
import { runCliOrThrow, runCliProcess } from '../helpers/cli';

const PAIR = 3 * 64 * 160 * 4; // tiny-a: w1, w2, w3 of 64 x 160 in f32 = 120 KiB
const GiB = 2 ** 30;

const shardMap = (...args: string[]) => runCliOrThrow(['shard-map', ...args]);

const run = runCliProcess;

describeGolden('turbosparse shard-map --nodes-file (tiny-a)', () => {
  let dir: string;
  const dims = { numLayers: 2, numExperts: 4 };
  let nodesFile: string;
  let routingFile: string;

  beforeAll(() => {
    dir = fs.mkdtempSync(path.join(os.tmpdir(), 'ts-placement-cli-'));
    nodesFile = path.join(dir, 'nodes.yaml');
    // Room for 5 pairs each (8 in the model): fast reads 4x as many bytes per second as slow.
    fs.writeFileSync(nodesFile, [
      'nodes:',
      `  - {name: fast, address: "127.0.0.1:50051", memory_gib: ${(5 * PAIR) / GiB}, gbps: 4}`,
      `  - {name: slow, address: "127.0.0.1:50052", memory_gib: ${(5 * PAIR) / GiB}, gbps: 1}`,
      '',
    ].join('\n'));
    routingFile = path.join(dir, 'routing.json');
    // Expert 0 takes 70% of each layer's routes.
    fs.writeFileSync(routingFile, JSON.stringify({
      format: ROUTING_FORMAT, version: 1, source: 'profile', created: '2026-12-03T00:00:00.000Z',
      model: { name: 'tiny-a', layers: 2, experts: 4, top_k: 2, hidden_size: 64, intermediate_size: 160 },
      tokens: 500,
      pairs: [0, 1].flatMap((layer) => [700, 100, 150, 50].map((r, expert) => ({ layer, expert, routed_tokens: r, active_fraction: 0.2 }))),
      nodes: [],
    }));
  });
  afterAll(() => fs.rmSync(dir, { recursive: true, force: true }));

  /** The summary's total line: [balanced slowest, placed slowest]. */
  function totals(stderr: string): [number, number] {
    const m = /^total +([\d.]+) \/ [\d.]+ +([\d.]+) \/ [\d.]+$/m.exec(stderr);
    expect(m).not.toBeNull();
    return [Number(m![1]), Number(m![2])];
  }

  test('--routing: the hot expert goes to the fast node, memory is respected, the summary compares with the byte-balanced map', async () => {
    const out = path.join(dir, 'placed.yaml');
    const { stdout, stderr } = await shardMap('--model', TINY_A_MODEL, '--nodes-file', nodesFile, '--routing', routingFile, '--out', out);
    expect(stdout).toBe('');
    const map = parseShardMap(fs.readFileSync(out, 'utf8'), out, dims); // valid: every pair held
    const held = new Map(map.nodes.map((n) => [n.name, n.experts.map((p) => pairKey(p.layer, p.expert))]));
    expect(held.get('fast')).toEqual(expect.arrayContaining(['0:0', '1:0']));
    for (const pairs of held.values()) expect(pairs.length).toBeLessThanOrEqual(5);
    expect(stderr).toMatch(new RegExp(`^shard map: placed for 2 node\\(s\\) from ${nodesFile}, at least 1 replica\\(s\\) of each pair, ` +
      `routing from ${routingFile} \\(500 tokens\\); written to ${out}\\n`));
    expect(stderr).toMatch(/^layer +balanced slowest \/ mean ms +placed slowest \/ mean ms$/m);
    expect(stderr).toMatch(/^0 +[\d.]+ \/ [\d.]+ +[\d.]+ \/ [\d.]+$/m);
    expect(stderr).toMatch(/^1 +[\d.]+ \/ [\d.]+ +[\d.]+ \/ [\d.]+$/m);
    const [balanced, placed] = totals(stderr);
    expect(placed).toBeLessThan(balanced);
    expect(stderr).toMatch(/^ {2}fast \(127\.0\.0\.1:50051, 4\.00 GB\/s\): \d pairs, [\d.]+ KiB of 600\.0 KiB$/m);
    // YAML on stdout without --out; without --routing every expert counts the same (a valid map still).
    const plain = await shardMap('--model', TINY_A_MODEL, '--nodes-file', nodesFile);
    parseShardMap(plain.stdout, 'stdout', dims);
    expect(plain.stderr).toMatch(/no --routing: every expert equally hot/);
  });

  test('--coordinator-experts: the coordinator holds a whole layer (no network for it); --replicas 2: every pair on both nodes', async () => {
    const { stdout, stderr } = await shardMap('--model', TINY_A_MODEL, '--nodes-file', nodesFile, '--routing', routingFile,
      '--coordinator-experts', String((4 * PAIR) / GiB));
    const map = parseShardMap(stdout, 'stdout', dims);
    const local = map.nodes.find((n) => n.address === 'local')!;
    expect(local.name).toBe('coordinator');
    const layers = [0, 1].filter((l) => [0, 1, 2, 3].every((e) => local.experts.some((p) => p.layer === l && p.expert === e)));
    expect(layers).toHaveLength(1);
    expect(stderr).toMatch(/^note: the coordinator's speed is taken as the nodes' median, 1\.00 GB\/s/m);
    const [balanced, placed] = totals(stderr);
    expect(placed).toBeLessThan(balanced);

    const two = await shardMap('--model', TINY_A_MODEL, '--nodes-file', nodesFile, '--replicas', '2', '--weights', 'bf16');
    const copies = new Map<string, number>();
    for (const n of parseShardMap(two.stdout, 'stdout', dims).nodes) for (const p of n.experts) copies.set(pairKey(p.layer, p.expert), (copies.get(pairKey(p.layer, p.expert)) ?? 0) + 1);
    expect([...copies.values()]).toEqual(new Array(8).fill(2));
  });

  test('bad combinations and inputs are one-line user errors', async () => {
    const other = path.join(dir, 'other.json');
    const r = JSON.parse(fs.readFileSync(routingFile, 'utf8'));
    fs.writeFileSync(other, JSON.stringify({ ...r, model: { ...r.model, layers: 3 } }));
    const small = path.join(dir, 'small.yaml');
    fs.writeFileSync(small, `nodes:\n  - {address: "127.0.0.1:50051", memory_gib: ${(3 * PAIR) / GiB}, gbps: 1}\n`);
    const cases: [string[], RegExp][] = [
      [['--nodes', '2', '--nodes-file', nodesFile], /^--nodes and --nodes-file: give one/],
      [['--nodes', '2', '--routing', routingFile], /^--routing needs --nodes-file/],
      [['--nodes', '2', '--coordinator-experts', '1'], /^--coordinator-experts needs --nodes-file/],
      [['--nodes-file', nodesFile, '--memory-per-node', '1'], /^--memory-per-node with --nodes-file: give each node's memory_gib/],
      [['--nodes-file', nodesFile, '--address-template', 'n{i}:1'], /^--address-template with --nodes-file/],
      [[], /^shard-map: give --nodes N .* or --nodes-file FILE/],
      [['--nodes-file', nodesFile, '--routing', other], /routing stats .*other\.json describe a model of 3 layers x 4 experts, but this one has 2 x 4/],
      [['--nodes-file', small], /^placement: the experts need 960\.0 KiB but the nodes hold 360\.0 KiB: 600\.0 KiB missing; add a node or raise memory_gib in --nodes-file$/],
      [['--nodes-file', path.join(dir, 'none.yaml')], /^--nodes-file .*none\.yaml: cannot read it \(ENOENT\)$/],
      [['--nodes-file', nodesFile, '--replicas', '3'], /^--replicas 3 needs at least 3 nodes/],
    ];
    for (const [args, message] of cases) {
      const attempt = shardMap('--model', TINY_A_MODEL, ...args);
      await expect(attempt).rejects.toThrow(message);
      await expect(attempt).rejects.toMatchObject({ name: 'UserError' });
    }
  });

  test('a real process: the map on stdout and exit 0; an error is one line on stderr and exit 2', async () => {
    const ok = await run(['shard-map', '--model', TINY_A_MODEL, '--nodes-file', nodesFile, '--routing', routingFile]);
    expect(ok.code).toBe(0);
    parseShardMap(ok.out, 'stdout', dims);
    expect(ok.err).toMatch(/^predicted: [\d.]+x the byte-balanced map's speed/m);
    const bad = await run(['shard-map', '--model', TINY_A_MODEL, '--nodes', '2', '--nodes-file', nodesFile]);
    expect(bad.code).toBe(2);
    expect(bad.out).toBe('');
    expect(bad.err.trim().split('\n')).toHaveLength(1);
    expect(bad.err).toMatch(/--nodes and --nodes-file: give one/);
  }, 60000);
});
