// `turbosparse expert-node`: which pairs it holds (--experts or an entry of a
// shard map), and user errors as one line with exit code 2.
import { spawnSync } from 'node:child_process';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { pairsToHold } from '../../expert-node/main';
import { describeGolden, TINY_A_MODEL } from '../helpers/golden';
import { sourceNodeCommand } from './helpers';

const dims = { numLayers: 2, numExperts: 4 };

describe('pairsToHold', () => {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'expert-node-cli-'));
  const map = path.join(dir, 'map.yaml');
  fs.writeFileSync(map, 'nodes:\n  - {address: "a:1", experts: "0-1:0-1"}\n  - {address: "b:1", experts: "0-1:2-3"}\n');
  afterAll(() => fs.rmSync(dir, { recursive: true, force: true }));

  test('--experts SPEC or entry N of --shard-map', () => {
    expect(pairsToHold({ experts: '1:3' }, dims)).toEqual([{ layer: 1, expert: 3 }]);
    expect(pairsToHold({ shardMap: map, shardIndex: 1 }, dims)).toEqual(
      [{ layer: 0, expert: 2 }, { layer: 0, expert: 3 }, { layer: 1, expert: 2 }, { layer: 1, expert: 3 }]);
  });

  test('missing, conflicting or out-of-range choices are clear errors', () => {
    expect(() => pairsToHold({}, dims)).toThrow('say which experts to hold: --experts SPEC');
    expect(() => pairsToHold({ experts: '0:0', shardMap: map, shardIndex: 0 }, dims)).toThrow('not both');
    expect(() => pairsToHold({ shardMap: map }, dims)).toThrow('--shard-map needs --shard-index N');
    expect(() => pairsToHold({ shardMap: map, shardIndex: 2 }, dims)).toThrow(`--shard-index 2: shard map ${map} has 2 nodes (0-1)`);
  });
});

describeGolden('expert-node command', () => {
  test('a bad --experts is one line on stderr and exit code 2', () => {
    const [exe, ...args] = sourceNodeCommand();
    const r = spawnSync(exe, [...args, '--model', TINY_A_MODEL, '--experts', '9:0', '--port', '0', '--device', 'cpu'], { encoding: 'utf8', timeout: 60_000 });
    expect(r.status).toBe(2);
    expect(r.stderr).toBe('error: --experts "9:0": layer 9 in "9:0" is out of range (the model has 2 layers: 0-1) (expected e.g. "0-31:0-3" or "0:1,0:5,3:*")\n');
  });
});
