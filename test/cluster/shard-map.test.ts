// Shard-map files (YAML / JSON), validation at start, and the balanced map for cluster:N.
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { allPairs, pairKey } from '../../core/expert-spec';
import {
  balancedShardMap, balancedShardMapWithBytes, expertBytes, formatShardMap, loadShardMap, overfullNode, parseShardMap, replicaTable, uniformPairs,
} from '../../core/shard-map';

const dims = { numLayers: 2, numExperts: 4 };

describe('shard-map files', () => {
  test('YAML with SPEC strings, lists of SPECs and [layer, expert] pairs', () => {
    const map = parseShardMap(`
nodes:
  - address: 127.0.0.1:5001
    name: a
    experts: "0-1:0-1"
  - address: localhost:5002
    experts: ["0-1:2", [0, 3], {layer: 1, expert: 3}]
`, 'map.yaml', dims);
    expect(map.nodes[0]).toEqual({ address: '127.0.0.1:5001', name: 'a', experts: [{ layer: 0, expert: 0 }, { layer: 0, expert: 1 }, { layer: 1, expert: 0 }, { layer: 1, expert: 1 }] });
    expect(map.nodes[1].experts.map((p) => pairKey(p.layer, p.expert))).toEqual(['0:2', '0:3', '1:2', '1:3']);
  });

  test('JSON files load too, and formatShardMap writes what loadShardMap reads', () => {
    const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'shard-map-'));
    try {
      const map = balancedShardMap(uniformPairs(dims, 10), ['10.0.0.1:50051', '10.0.0.2:50051'], { replicas: 2 });
      for (const format of ['json', 'yaml'] as const) {
        const file = path.join(dir, `map.${format}`);
        fs.writeFileSync(file, formatShardMap(map, format));
        expect(loadShardMap(file, dims)).toEqual(map);
      }
    } finally {
      fs.rmSync(dir, { recursive: true, force: true });
    }
  });

  test('every (layer, expert) must be covered: the error lists the missing pairs compactly', () => {
    expect(() => parseShardMap('nodes: [{address: "h:1", experts: "0:0-3,1:0-1"}]', 'm.yaml', dims))
      .toThrow('shard map m.yaml: no node holds 1:2-3 (2 of 8 (layer, expert) pairs); add them to a node');
  });

  test.each([
    ['not: [valid', 'not valid YAML or JSON'],
    ['nodes: []', 'nodes: Too small'],
    ['nodes: [{address: "h:1"}]', 'nodes.0.experts: Invalid input'],
    ['nodes: [{address: "h:1", experts: "*", port: 3}]', 'nodes.0: Unrecognized key: "port"'],
    ['nodes: [{address: "h", experts: "*"}]', 'nodes.0.address "h" is not host:port'],
    ['nodes: [{address: "h:1", experts: "*"}, {address: "h:1", experts: "0:0"}]', 'address h:1 appears twice'],
    ['nodes: [{address: "h:1", experts: "0-2:0"}]', 'nodes.0.experts "0-2:0": layer 2 in "0-2:0" is out of range'],
    ['nodes: [{address: "h:1", experts: [[0, 9]]}]', 'nodes.0 (h:1) names 0:9, outside the model (2 layers x 4 experts)'],
  ])('%s -> %s', (text, message) => {
    expect(() => parseShardMap(text, 'm.yaml', dims)).toThrow(message);
  });

  test('a missing file is one clear line', () => {
    expect(() => loadShardMap('/nonexistent/map.yaml', dims)).toThrow('shard map /nonexistent/map.yaml: cannot read it (ENOENT)');
  });
});

describe('balancedShardMap', () => {
  const mixtral = { numLayers: 32, numExperts: 8 };
  const bytes = expertBytes(4096, 14336, 'bf16');

  test('Mixtral on 4 nodes: equal bytes, every layer spread over all nodes, full coverage', () => {
    const map = balancedShardMap(uniformPairs(mixtral, bytes), ['a:1', 'b:1', 'c:1', 'd:1']);
    expect(map.nodes.map((n) => n.experts.length)).toEqual([64, 64, 64, 64]);
    const table = replicaTable(map, mixtral);
    for (const layer of table) {
      expect(layer.every((nodes) => nodes.length === 1)).toBe(true);
      expect(new Set(layer.flat()).size).toBe(4); // each layer's experts on all 4 nodes, 2 each
    }
  });

  test('replicas land on different nodes and balance', () => {
    const map = balancedShardMap(uniformPairs(dims, 100), ['a:1', 'b:1', 'c:1'], { replicas: 2 });
    const table = replicaTable(map, dims);
    for (const p of allPairs(dims)) {
      const nodes = table[p.layer][p.expert];
      expect(nodes).toHaveLength(2);
      expect(new Set(nodes).size).toBe(2);
    }
    const counts = map.nodes.map((n) => n.experts.length);
    expect(Math.max(...counts) - Math.min(...counts)).toBeLessThanOrEqual(1);
  });

  test('unequal sizes are balanced by bytes, not by count', () => {
    const pairs = [
      { layer: 0, expert: 0, bytes: 300 }, { layer: 0, expert: 1, bytes: 100 },
      { layer: 0, expert: 2, bytes: 100 }, { layer: 0, expert: 3, bytes: 100 },
    ];
    const map = balancedShardMap(pairs, ['a:1', 'b:1']);
    expect(map.nodes[0].experts).toEqual([{ layer: 0, expert: 0 }]);
    expect(map.nodes[1].experts).toHaveLength(3);
  });

  test('the bytes each node holds come with the map (the CLI reads them rather than summing again)', () => {
    const pairs = [
      { layer: 0, expert: 0, bytes: 300 }, { layer: 0, expert: 1, bytes: 100 },
      { layer: 0, expert: 2, bytes: 100 }, { layer: 0, expert: 3, bytes: 50 },
    ];
    const { map, bytes } = balancedShardMapWithBytes(pairs, ['a:1', 'b:1', 'c:1'], { replicas: 2 });
    expect(map).toEqual(balancedShardMap(pairs, ['a:1', 'b:1', 'c:1'], { replicas: 2 }));
    const size = (p: { layer: number; expert: number }) => pairs.find((q) => q.layer === p.layer && q.expert === p.expert)!.bytes;
    expect(bytes).toEqual(map.nodes.map((n) => n.experts.reduce((s, p) => s + size(p), 0)));
    expect(bytes.reduce((a, b) => a + b, 0)).toBe(2 * 550);
  });

  test('overfullNode: the first fullest node over the limit, as both the core and the CLI check it', () => {
    expect(overfullNode([5, 9, 9, 2], 8)).toBe(1);
    expect(overfullNode([5, 9, 9, 2], 9)).toBeUndefined();
    expect(overfullNode([], 0)).toBeUndefined();
  });

  test('impossible requests are clear errors', () => {
    expect(() => balancedShardMap(uniformPairs(dims, 1), ['a:1'], { replicas: 2 }))
      .toThrow('--replicas 2 needs at least 2 nodes (replicas live on different nodes), got 1');
    expect(() => balancedShardMap(uniformPairs(mixtral, bytes), ['a:1', 'b:1'], { maxBytesPerNode: 20 * 2 ** 30 }))
      .toThrow(/a node would hold 42\.00 GiB of experts, more than the 20\.00 GiB allowed per node/);
  });
});
