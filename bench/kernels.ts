// CPU expert kernels against the memory floor: runs the standalone C++ bench
// (native/bench/bench_kernels.cc, built by `npm run build:native`) and passes
// every argument through.
//   npm run bench:kernels                 table, then one JSON line per measurement
//   npm run bench:kernels -- --json       JSON lines only
//   npm run bench:kernels -- --help       options (threads, dtypes, batches, variant, reps)
// TS_BENCH_KERNELS=/path/to/bench_kernels overrides where the binary is found.
import fs from 'node:fs';
import path from 'node:path';
import { spawnSync } from 'node:child_process';

const root = path.resolve(__dirname, '..', '..');
const exe = process.platform === 'win32' ? 'bench_kernels.exe' : 'bench_kernels';

/** cmake-js puts executables in its build folder (Makefile/Ninja) or a per-config subfolder (Visual Studio). */
function findBinary(): string | null {
  const override = process.env.TS_BENCH_KERNELS;
  if (override) return fs.existsSync(override) ? override : null;
  const build = path.join(root, 'native', 'build');
  for (const dir of [build, path.join(build, 'Release'), path.join(build, 'RelWithDebInfo'), path.join(build, 'Debug')]) {
    const p = path.join(dir, exe);
    if (fs.existsSync(p)) return p;
  }
  return null;
}

function main(): number {
  const bin = findBinary();
  if (!bin) {
    const where = process.env.TS_BENCH_KERNELS ?? path.join('native', 'build', exe);
    process.stderr.write(`bench:kernels: ${where} not found; build it with \`npm run build:native\`\n`);
    return 1;
  }
  const r = spawnSync(bin, process.argv.slice(2), { stdio: 'inherit' });
  if (r.error) {
    process.stderr.write(`bench:kernels: cannot run ${bin}: ${r.error.message}\n`);
    return 1;
  }
  if (r.signal) {
    process.stderr.write(`bench:kernels: ${bin} was killed by ${r.signal}\n`);
    return 1;
  }
  return r.status ?? 1;
}

process.exitCode = main();
