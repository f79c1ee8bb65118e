// `--wire f32|bf16|int8` on the commands that run the model (generate, serve, worker): the
// encoding the coordinator picks for hidden and output rows reaches the remote backend.
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { CommanderError } from 'commander';
import { allPairs } from '../../core/expert-spec';
import { ModelFolder } from '../../core/model-folder';
import { formatShardMap } from '../../core/shard-map';
import type { RemoteExperts } from '../../coordinator/remote-experts';
import { engineOptionsFrom } from '../../cli/engine-flags';
import { describeGolden, TINY_A_MODEL } from '../helpers/golden';
import { generateFlags, randomBatch, startNode } from './helpers';

test('--wire is f32 unless given; anything but f32, bf16 or int8 is a one-line flag error', async () => {
  expect((await generateFlags([])).wire).toBe('f32');
  expect((await generateFlags(['--wire', 'int8'])).wire).toBe('int8');
  const err = await generateFlags(['--wire', 'f16']).catch((e: unknown) => e);
  expect(err).toBeInstanceOf(CommanderError);
  expect((err as CommanderError).message).toBe("error: option '--wire <encoding>' argument 'f16' is invalid. --wire must be one of f32, bf16, int8");
});

describeGolden('--wire reaches the expert nodes (tiny-a)', () => {
  test('the remote backend of --experts FILE encodes rows as --wire says', async () => {
    const folder = await ModelFolder.open(TINY_A_MODEL);
    const node = await startNode(folder, allPairs(folder.config)).catch(async (e: unknown) => {
      await folder.close();
      throw e;
    });
    const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'wire-flag-'));
    const map = path.join(dir, 'map.yaml');
    fs.writeFileSync(map, formatShardMap({ nodes: [{ address: node.address, experts: allPairs(folder.config) }] }));
    try {
      const sent: Record<string, number> = {};
      for (const wire of ['f32', 'bf16', 'int8'] as const) {
        const flags = await generateFlags(['--experts', map, '--wire', wire]);
        const opts = engineOptionsFrom(flags);
        const remote = (await opts.remoteExperts!({ kind: 'file', path: map }, folder, () => undefined)) as RemoteExperts;
        try {
          expect(remote.wire).toBe(wire);
          await remote.runExperts(randomBatch(folder.config, 0, 8, 3));
          sent[wire] = remote.stats()[0].bytesSent;
        } finally {
          await remote.close();
        }
      }
      // 8 rows of 64 values at 4, 2 and 1 byte(s) per value (int8 + one f32 scale per row); the
      // rest of the request (masks, routes) is the same. A few bytes of protobuf framing either way.
      expect(Math.abs(sent.f32 - sent.bf16 - 8 * 64 * 2)).toBeLessThanOrEqual(8);
      expect(Math.abs(sent.bf16 - sent.int8 - (8 * 64 - 8 * 4))).toBeLessThanOrEqual(8);
    } finally {
      await node.stop();
      await folder.close();
      fs.rmSync(dir, { recursive: true, force: true });
    }
  });
});
