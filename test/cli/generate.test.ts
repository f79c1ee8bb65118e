// `turbosparse generate` on a small demo model: what it prints after the text, and
// prompt ids outside the vocabulary refused from config.json before anything loads.
import fs from 'node:fs';
import path from 'node:path';
import { makeDemoModel } from '../../core/demo-model';
import { runGenerate, type GenerateFlags } from '../../cli/generate';
import { buildProgram, reportError } from '../../cli/main';
import { SMALL, tempDir } from '../core/fixtures';

const tmp = tempDir('ts-generate-cli-');
afterAll(() => tmp.cleanup());
beforeAll(() => makeDemoModel(tmp.dir, { ...SMALL, shards: 1 }));

const flags = (over: Partial<GenerateFlags> = {}): GenerateFlags => ({
  model: tmp.dir, experts: 'local', device: 'cpu', threads: 1, weights: 'auto',
  ids: [1, 5, 9], maxTokens: 4, temperature: 0, topK: 0, topP: 1, ...over,
});

/** Runs `fn` with stdout and stderr captured. */
async function capture(fn: () => Promise<unknown>): Promise<{ stdout: string; stderr: string }> {
  const out: string[] = [];
  const err: string[] = [];
  const into = (lines: string[]) => (chunk: string | Uint8Array): boolean => {
    lines.push(String(chunk));
    return true;
  };
  const so = jest.spyOn(process.stdout, 'write').mockImplementation(into(out));
  const se = jest.spyOn(process.stderr, 'write').mockImplementation(into(err));
  try {
    await fn();
  } finally {
    so.mockRestore();
    se.mockRestore();
  }
  return { stdout: out.join(''), stderr: err.join('') };
}

test('generate ends with the one per-node and per-expert latency table', async () => {
  const { stderr } = await capture(() => runGenerate(flags()));
  const tail = stderr.slice(stderr.lastIndexOf('\n\nexpert latency per node'));
  expect(tail).toMatch(/^\n\nexpert latency per node /);
  expect(tail).toMatch(/\nnode\s+experts\s+calls\s+p50 ms\s+p99 ms\s+mean ms\s+compute p50\s+active\s+sent B\/tok\s+recv B\/tok\s+errors\s+state\n/);
  expect(tail).toMatch(/\nlocal\s+-\s+\d+\s/); // experts in process: no shard map, no wire
  expect(tail).toMatch(/\nper expert \(layer:expert\):\nexpert\s+calls\s+tokens\s+p50 ms\s+p99 ms/);
  expect(tail).toMatch(/\nhottest experts: \d+:\d+ \(/);
  // One table: the latency table is the only per-node table.
  expect(stderr.match(/^node\s/gm)).toHaveLength(1);
}, 60000);

describe('--ids outside the vocabulary', () => {
  // config.json alone: no tokenizer, no weights. The id check must not need them.
  const configOnly = path.join(tmp.dir, 'config-only');
  beforeAll(() => {
    fs.mkdirSync(configOnly);
    fs.copyFileSync(path.join(tmp.dir, 'config.json'), path.join(configOnly, 'config.json'));
  });

  test('is refused from config.json vocab_size before the weights load or expert nodes start', async () => {
    const valid = `valid ids are 0..${SMALL.vocab - 1} (config.json vocab_size ${SMALL.vocab})`;
    for (const experts of ['local', 'cluster:2']) {
      await expect(runGenerate(flags({ model: configOnly, experts, ids: [1, SMALL.vocab, 5] })))
        .rejects.toThrow(`--ids: token id ${SMALL.vocab} is outside the model's vocabulary; ${valid}`);
    }
    // The last valid id gets past the check (and then misses the tokenizer this folder lacks).
    await expect(runGenerate(flags({ model: configOnly, ids: [SMALL.vocab - 1] }))).rejects.toThrow(/tokenizer\.json not found/);
  });

  test('the command prints one line and exits 2', async () => {
    const argv = ['node', 'turbosparse', 'generate', '--model', configOnly, '--ids', `1,${SMALL.vocab + 7}`, '--device', 'cpu'];
    const error = await buildProgram().parseAsync(argv).then(() => undefined, (e: unknown) => e);
    let code = 0;
    const { stdout, stderr } = await capture(async () => {
      code = reportError(error);
    });
    expect(code).toBe(2);
    expect(stdout).toBe('');
    expect(stderr).toBe(`error: --ids: token id ${SMALL.vocab + 7} is outside the model's vocabulary; valid ids are 0..${SMALL.vocab - 1} ` +
      `(config.json vocab_size ${SMALL.vocab})\n`);
  });
});
