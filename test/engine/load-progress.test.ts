// Loading progress (periodic log lines off a terminal, a bar on one), the one summary line, and load-time warnings.
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { PassThrough } from 'node:stream';
import { loadProgress } from '../../coordinator/load-progress';
import { loadEngine } from '../../coordinator/load-engine';
import { describeGolden, TINY_A_MODEL } from '../helpers/golden';

/** A stream that records what is written; `isTTY` as asked. */
function fakeStream(isTTY: boolean): { stream: NodeJS.WriteStream; text: () => string } {
  const s = new PassThrough() as unknown as NodeJS.WriteStream & PassThrough;
  const chunks: string[] = [];
  s.on('data', (c: Buffer) => chunks.push(c.toString()));
  Object.assign(s, { isTTY, columns: 200, cursorTo: () => true, clearLine: () => true, moveCursor: () => true });
  return { stream: s, text: () => chunks.join('') };
}

afterEach(() => jest.restoreAllMocks());

test('off a terminal: a line every 2 s with bytes and tensors loaded and the rate', async () => {
  let now = 1_000_000;
  jest.spyOn(Date, 'now').mockImplementation(() => now);
  const { stream, text } = fakeStream(false);
  const p = loadProgress(4e9, 4, stream);
  now += 500;
  p.tensor('a', 1e9); // 0.5 s in: too soon for a line
  now += 1500;
  p.tensor('b', 1e9); // 2 s in
  now += 1000;
  p.tensor('c', 1e9); // 1 s after the last line
  now += 2000;
  p.tensor('d', 1e9);
  p.done();
  await new Promise((r) => setImmediate(r));
  expect(text().split('\n').filter(Boolean)).toEqual([
    'loading: 2.00/4.00 GB, 2/4 tensors, 1000 MB/s',
    'loading: 4.00/4.00 GB, 4/4 tensors, 800 MB/s', // 4 GB in 5 s
  ]);
});

test('on a terminal: a progress bar with GB and tensors loaded', async () => {
  const { stream, text } = fakeStream(true);
  const p = loadProgress(2e6, 2, stream);
  p.tensor('a', 1e6);
  p.tensor('b', 1e6);
  p.done();
  await new Promise((r) => setImmediate(r));
  expect(text()).toMatch(/loading .* \d+% \| 0\.00\d\/0\.002 GB \| \d\/2 tensors \| \d+ MB\/s/);
});

describeGolden('the summary line after loading', () => {
  test('names layers, experts, parameters, dtype, predictor widths and memory', async () => {
    const lines: string[] = [];
    const engine = await loadEngine({ modelDir: TINY_A_MODEL, device: 'cpu', threads: 1, log: (l) => lines.push(l) });
    await engine.close();
    const summary = lines.filter((l) => l.startsWith('model: '));
    expect(summary).toHaveLength(1);
    expect(summary[0]).toMatch(
      /^model: 2 layers, 4 experts \(top-2\), 1\.9M parameters, F32, predictor widths 896, \d+\.\d MB of weights on cpu, experts local, ffn sparse, loaded in \d+\.\d s$/,
    );
  });
});

describeGolden('config fields the engine does not implement', () => {
  test('a sliding_window shorter than the context is a warning line at load', async () => {
    const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'ts-sliding-'));
    try {
      for (const f of fs.readdirSync(TINY_A_MODEL)) {
        if (f !== 'config.json') fs.symlinkSync(path.join(TINY_A_MODEL, f), path.join(dir, f));
      }
      const cfg = JSON.parse(fs.readFileSync(path.join(TINY_A_MODEL, 'config.json'), 'utf8'));
      const load = async (sliding: number | null) => {
        fs.writeFileSync(path.join(dir, 'config.json'), JSON.stringify({ ...cfg, sliding_window: sliding }));
        const lines: string[] = [];
        const engine = await loadEngine({ modelDir: dir, device: 'cpu', threads: 1, log: (l) => lines.push(l) });
        await engine.close();
        return lines.filter((l) => l.startsWith('warning: config.json sliding_window'));
      };
      expect(await load(256)).toEqual([
        'warning: config.json sliding_window is 256; turbosparse attends over the whole context, so sequences longer than 256 tokens differ from sliding-window attention',
      ]);
      expect(await load(null)).toEqual([]);
      expect(await load(cfg.max_position_embeddings)).toEqual([]);
    } finally {
      fs.rmSync(dir, { recursive: true, force: true });
    }
  });
});
