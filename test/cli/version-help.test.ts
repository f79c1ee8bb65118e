// `turbosparse --version`, the SPEC notation in --help, and `serve` checking its model folder
// before it says "loading": the CLI in a real process (the ts sources through the test register).
import { spawn } from 'node:child_process';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { isDemoModel } from '../../cli/demo';
import { EXPERT_SPEC_HELP } from '../../cli/options';
import { makeDemoModel } from '../../core/demo-model';
import { parseExpertSpec } from '../../core/expert-spec';
import { runCliProcess } from '../helpers/cli';

const ROOT = path.resolve(__dirname, '..', '..');

const run = runCliProcess;

test('--version prints package.json\'s version and exits 0; -V too', async () => {
  const { version } = JSON.parse(fs.readFileSync(path.join(ROOT, 'package.json'), 'utf8')) as { version: string };
  for (const flag of ['--version', '-V']) {
    const r = await run([flag]);
    expect(r).toEqual({ code: 0, out: `${version}\n`, err: '' });
  }
}, 60000);

test('a commander usage error exits 2 (like a UserError); --help exits 0', async () => {
  const bad = await run(['generate', '--model', 'm', '--bogus']);
  expect(bad.code).toBe(2);
  expect(bad.err).toMatch(/^error: unknown option '--bogus' \(see turbosparse generate --help\)\n$/);
  const help = await run(['--help']);
  expect(help.code).toBe(0);
  expect(help.out).toMatch(/-V, --version/);
}, 60000);

test('expert-node --help explains the SPEC notation once; commands without --experts SPEC do not', async () => {
  const node = await run(['expert-node', '--help']);
  expect(node.code).toBe(0);
  expect(node.out.split('Expert pairs (SPEC)').length - 1).toBe(1);
  expect(node.out).toContain('0-3:0,0-3:2   experts 0 and 2 of layers 0..3 (8 pairs)');
  const gen = await run(['generate', '--help']);
  expect(gen.out).not.toContain('Expert pairs (SPEC)');
}, 60000);

test('the help\'s examples mean what it says they mean', () => {
  const dims = { numLayers: 32, numExperts: 8 };
  expect(parseExpertSpec('0-3:0,0-3:2', dims)).toHaveLength(8);
  expect(parseExpertSpec('0-3:0,0-3:2', dims).every((p) => p.layer <= 3 && (p.expert === 0 || p.expert === 2))).toBe(true);
  expect(parseExpertSpec('0-31:0-3', dims)).toHaveLength(128);
  expect(parseExpertSpec('0:1,0:5,3:*', dims)).toEqual([{ layer: 0, expert: 1 }, { layer: 0, expert: 5 }, ...[0, 1, 2, 3, 4, 5, 6, 7].map((e) => ({ layer: 3, expert: e }))]);
  expect(parseExpertSpec('*', dims)).toHaveLength(256);
  expect(EXPERT_SPEC_HELP).toMatch(/0:1,0:5,3:\*/);
});

test('serve with a bad model folder: one error line, no "loading" line before it, exit 2', async () => {
  const missing = path.join(os.tmpdir(), `ts-no-such-model-${process.pid}`);
  const r = await run(['serve', '--model', missing, '--port', '0']);
  expect(r.code).toBe(2);
  expect(r.err).toBe(`error: model folder ${missing} does not exist\n`);
  // A folder without config.json: the same, naming the file.
  const empty = fs.mkdtempSync(path.join(os.tmpdir(), 'ts-empty-model-'));
  try {
    const e = await run(['serve', '--model', empty, '--port', '0']);
    expect(e.code).toBe(2);
    expect(e.err).toBe(`error: ${path.join(empty, 'config.json')} not found: a model folder needs config.json\n`);
  } finally {
    fs.rmSync(empty, { recursive: true, force: true });
  }
}, 60000);

test('--metrics-detail takes node or expert (serve and worker document it); anything else is one line, exit 2', async () => {
  const bad = await run(['serve', '--model', 'm', '--metrics-detail', 'layer']);
  expect(bad.code).toBe(2);
  expect(bad.err).toBe("error: option '--metrics-detail <d>' argument 'layer' is invalid. --metrics-detail must be one of node, expert (see turbosparse serve --help)\n");
  for (const sub of ['serve', 'worker']) {
    const help = await run([sub, '--help']);
    const text = help.out.replace(/\s+/g, ' '); // commander wraps the help to the terminal width
    expect(text).toMatch(/--metrics-detail <d> expert-call histograms per node, or per \(layer, expert, node\) with expert .*\(default: "node"\)/);
  }
}, 60000);

test('the standalone expert-node command (as local clusters spawn it): usage errors exit 2, --help explains SPEC', async () => {
  const node = (args: string[]) => new Promise<{ code: number | null; out: string; err: string }>((resolve) => {
    const child = spawn(process.execPath, ['-r', path.join(ROOT, 'test', 'cluster', 'ts-register-cached.js'), path.join(ROOT, 'cli', 'expert-node.ts'), ...args],
      { cwd: ROOT, stdio: ['ignore', 'pipe', 'pipe'] });
    let out = '';
    let err = '';
    child.stdout.on('data', (d) => (out += d));
    child.stderr.on('data', (d) => (err += d));
    child.on('close', (code) => resolve({ code, out, err }));
  });
  const bad = await node(['--model', 'm', '--port', 'x']);
  expect(bad.code).toBe(2);
  expect(bad.err).toMatch(/^error: option '--port <p>' argument 'x' is invalid\. --port must be an integer >= 0 \(see turbosparse expert-node --help\)\n$/);
  const help = await node(['--help']);
  expect(help.code).toBe(0);
  expect(help.out).toContain('0-3:0,0-3:2   experts 0 and 2 of layers 0..3 (8 pairs)');
}, 60000);

test('demo: says a demo model\'s weights are random and prints its prompt before anything else', async () => {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'ts-demo-cli-'));
  try {
    await makeDemoModel(dir, { layers: 1, hidden: 32, intermediate: 64, heads: 2, kvHeads: 1, experts: 2, topK: 1, vocab: 300, predictorRank: 8, shards: 1 });
    expect(isDemoModel(dir)).toBe(true);
    // From the sources cluster:N cannot start (it spawns the built node command); the lines come first either way.
    const r = await run(['demo', '--model', dir, '--nodes', '1', '--max-tokens', '1', '--prompt', 'hello "there"']);
    expect(r.err.split('\n').slice(0, 2)).toEqual([
      'the demo model has random weights: the text it writes is noise; it shows the cluster at work, not a language model',
      'prompt: "hello \\"there\\""',
    ]);
    // A checkpoint without make-demo-model's `demo` block in config.json is not called random.
    const config = JSON.parse(fs.readFileSync(path.join(dir, 'config.json'), 'utf8'));
    delete config.demo;
    fs.writeFileSync(path.join(dir, 'config.json'), JSON.stringify(config));
    expect(isDemoModel(dir)).toBe(false);
    expect(isDemoModel(path.join(dir, 'nope'))).toBe(false);
  } finally {
    fs.rmSync(dir, { recursive: true, force: true });
  }
}, 90000);
