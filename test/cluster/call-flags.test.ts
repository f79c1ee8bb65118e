// `--call-timeout-ms`, `--hedge` and `--overlap` on the commands that run the model (generate, serve, worker):
// defaults, one-line errors, and the values reaching the remote backend.
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { CommanderError } from 'commander';
import { allPairs } from '../../core/expert-spec';
import { ModelFolder } from '../../core/model-folder';
import { formatShardMap } from '../../core/shard-map';
import type { RemoteExperts } from '../../coordinator/remote-experts';
import { engineOptionsFrom } from '../../cli/engine-flags';
import { buildProgram } from '../../cli/main';
import { describeGolden, TINY_A_MODEL } from '../helpers/golden';
import { generateFlags, startNode } from './helpers';

test('defaults: a 30 s ceiling and hedging on; generate, serve and worker all take both', async () => {
  expect(await generateFlags([])).toMatchObject({ callTimeoutMs: 30_000, hedge: 'on' });
  expect(await generateFlags(['--call-timeout-ms', '2500', '--hedge', 'off'])).toMatchObject({ callTimeoutMs: 2500, hedge: 'off' });
  const program = buildProgram();
  for (const name of ['generate', 'serve', 'worker']) {
    const longs = program.commands.find((c) => c.name() === name)!.options.map((o) => o.long);
    expect(longs).toEqual(expect.arrayContaining(['--call-timeout-ms', '--hedge', '--overlap', '--speculative']));
  }
});

test('--overlap: auto by default, reaches the engine options', async () => {
  expect(await generateFlags([])).toMatchObject({ overlap: 'auto' });
  expect(engineOptionsFrom(await generateFlags(['--overlap', 'off'])).overlap).toBe('off');
  expect(engineOptionsFrom(await generateFlags(['--overlap', 'on'])).overlap).toBe('on');
});

test.each([
  [['--call-timeout-ms', '0'], "error: option '--call-timeout-ms <ms>' argument '0' is invalid. --call-timeout-ms must be an integer >= 1"],
  [['--call-timeout-ms', '1.5'], "error: option '--call-timeout-ms <ms>' argument '1.5' is invalid. --call-timeout-ms must be an integer >= 1"],
  [['--hedge', 'yes'], "error: option '--hedge <on|off>' argument 'yes' is invalid. --hedge must be one of on, off"],
  [['--overlap', '2'], "error: option '--overlap <auto|on|off>' argument '2' is invalid. --overlap must be one of auto, on, off"],
])('%j is one line naming the flag', async (args, message) => {
  const err = await generateFlags(args).catch((e: unknown) => e);
  expect(err).toBeInstanceOf(CommanderError);
  expect((err as CommanderError).message).toBe(message);
});

describeGolden('the call flags reach the remote backend (tiny-a)', () => {
  test('--experts FILE gets --call-timeout-ms and --hedge', async () => {
    const folder = await ModelFolder.open(TINY_A_MODEL);
    const node = await startNode(folder, allPairs(folder.config));
    const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'call-flags-'));
    const map = path.join(dir, 'map.yaml');
    fs.writeFileSync(map, formatShardMap({ nodes: [{ address: node.address, experts: allPairs(folder.config) }] }));
    try {
      for (const [args, hedge, ms] of [[[], true, 30_000], [['--hedge', 'off', '--call-timeout-ms', '1234'], false, 1234]] as const) {
        const opts = engineOptionsFrom(await generateFlags(['--experts', map, ...args]));
        const remote = (await opts.remoteExperts!({ kind: 'file', path: map }, folder, () => undefined)) as RemoteExperts;
        try {
          expect({ hedge: remote.hedge, callTimeoutMs: remote.callTimeoutMs }).toEqual({ hedge, callTimeoutMs: ms });
        } finally {
          await remote.close();
        }
      }
    } finally {
      await node.stop();
      await folder.close();
      fs.rmSync(dir, { recursive: true, force: true });
    }
  });
});
