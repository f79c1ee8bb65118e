// The CPU kernel bench (native/bench/bench_kernels.cc, run by `npm run bench:kernels`)
// refuses bad options with one line naming the option, before it packs any weights;
// --help lists the options. (The measurements themselves take minutes at Mixtral
// width and are recorded in bench/RESULTS.md, not run here.)
import { spawnSync } from 'node:child_process';
import fs from 'node:fs';
import path from 'node:path';

const ROOT = path.resolve(__dirname, '..', '..');
const BIN = [path.join(ROOT, 'native', 'build', 'bench_kernels'), path.join(ROOT, 'native', 'build', 'Release', 'bench_kernels')]
  .find((f) => fs.existsSync(f));

function run(args: string[]) {
  if (!BIN) throw new Error('bench_kernels is not built: run `npm run build:native`');
  const r = spawnSync(BIN, args, { encoding: 'utf8', timeout: 30_000 });
  return { status: r.status, stdout: r.stdout ?? '', stderr: r.stderr ?? '' };
}

test('--help lists every option and exits 0', () => {
  const r = run(['--help']);
  expect(r.status).toBe(0);
  for (const flag of ['--json', '--threads', '--dtypes', '--batches', '--variant', '--reps', '--budget', '--kernels', '--actives', '--quick']) {
    expect(r.stdout).toContain(flag);
  }
});

test.each([
  [['--batches', '0'], "--batches: '0' is not an integer in [1, 256]"],
  [['--batches', '1,x'], "--batches: 'x' is not an integer"],
  [['--batches', ','], '--batches is empty'],
  [['--threads', 'two'], "--threads: 'two' is not an integer in [0, 256]"],
  [['--threads', '-1'], "--threads: '-1' is not an integer"],
  [['--reps', '2'], "--reps: '2' is not an integer in [3,"],
  [['--budget', 'soon'], "--budget: 'soon' is not a number"],
  [['--actives', '0.1,1.5'], "--actives: '1.5' is not a number in [0.001, 1]"],
  [['--kernels', 'sparse,moe'], "--kernels: unknown kernel 'moe' (use dense, sparse, predictor)"],
  [['--dtypes', 'int4'], "unknown dtype 'int4' (use f32, f16, bf16, i8)"],
  [['--quick', '--threads'], '--threads needs a value'],
  [['--fast'], 'unknown option --fast (see --help)'],
])('%j is refused with one line', (args, message) => {
  const r = run(args);
  expect(r.status).toBe(2);
  expect(r.stdout).toBe('');
  const lines = r.stderr.trimEnd().split('\n');
  expect(lines).toHaveLength(1);
  expect(lines[0]).toContain(`bench_kernels: ${message}`);
});
