// Runs the standalone C++ test programs (native/tests/*.cc) that
// `npm run build:native` builds next to the addon, with the golden tiny-a
// folder (../shared/golden/tiny-a) as argv[1] when it exists. test_kernels and
// test_backend_ops (the op table of native/tests/op_cases.h on every backend
// present) must exist; test_cuda skips itself without a GPU, and
// test_backend_ops says why it skips the CUDA cases.
import { spawnSync } from 'node:child_process';
import fs from 'node:fs';
import path from 'node:path';
import { TINY_A } from '../helpers/golden';

const ROOT = path.resolve(__dirname, '..', '..');
const TESTS_SRC = path.join(ROOT, 'native', 'tests');
// cmake-js builds in native/build: executables land in its root (the addon in Release/).
const BUILD_DIRS = [path.join(ROOT, 'native', 'build'), path.join(ROOT, 'native', 'build', 'Release')];

const programs = fs.existsSync(TESTS_SRC)
  ? fs.readdirSync(TESTS_SRC).filter((f) => f.endsWith('.cc')).map((f) => path.basename(f, '.cc')).sort()
  : [];

function findBinary(name: string): string | undefined {
  return BUILD_DIRS.map((d) => path.join(d, name)).find((f) => fs.existsSync(f));
}

test('native/tests has the kernel test program and the backend op table program', () => {
  expect(programs).toContain('test_kernels');
  expect(programs).toContain('test_backend_ops');
});

const runEach = programs.length > 0 ? describe.each(programs.map((p) => [p])) : () => undefined;
runEach('%s', (name: string) => {
  test('exits 0', () => {
    const bin = findBinary(name);
    if (!bin) throw new Error(`${name} is not built: run \`npm run build:native\` (looked in ${BUILD_DIRS.join(', ')})`);
    const args = fs.existsSync(TINY_A) ? [TINY_A] : [];
    const r = spawnSync(bin, args, { encoding: 'utf8', timeout: 540_000, maxBuffer: 64 * 1024 * 1024 });
    const output = `${r.stdout ?? ''}${r.stderr ?? ''}`;
    if (r.error) throw new Error(`${name} did not run: ${r.error.message}\n${output}`);
    if (r.status !== 0) {
      throw new Error(`${name} exited with ${r.status ?? r.signal}\n${output.slice(-8000)}`);
    }
    if (name === 'test_backend_ops') {
      // the CPU backend ran every case, and CUDA either ran them or said why not
      expect(output).toMatch(/^cpu \(.*\): (\d+) of \1 cases passed$/m);
      expect(output).toMatch(/^(skip cuda cases: .+|cuda \(.*\): (\d+) of \2 cases passed)$/m);
    }
    // eslint-disable-next-line no-console
    console.log(`${name}: ${output.trim().split('\n').slice(-3).join(' | ')}`);
  }, 600_000);
});
