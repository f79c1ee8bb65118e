// The kernel library on 64-bit Arm: cross-built with Debian's gcc toolchain
// (native/cmake/aarch64-linux-gnu.cmake; only the portable scalar kernels), and
// test_kernels run under qemu-user with the golden tiny-a folder when present.
// Skips, saying why, when aarch64-linux-gnu-g++ or qemu-aarch64 is not installed
// (apt-get install g++-aarch64-linux-gnu qemu-user).
import { spawnSync } from 'node:child_process';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { TINY_A } from '../helpers/golden';
import { testUnless } from '../helpers/skip';

const ROOT = path.resolve(__dirname, '..', '..');
const TOOLCHAIN = path.join(ROOT, 'native', 'cmake', 'aarch64-linux-gnu.cmake');
const SYSROOT = '/usr/aarch64-linux-gnu';

function onPath(cmd: string): boolean {
  return spawnSync('sh', ['-c', `command -v ${cmd}`]).status === 0;
}
const missing = ['aarch64-linux-gnu-g++', 'qemu-aarch64', 'cmake', 'ninja'].filter((c) => !onPath(c));
// A real skip, its reason in the title (the run's skip summary lists it).
const testIf = testUnless(missing.length === 0 ? null
  : `${missing.join(', ')} not installed (apt-get install g++-aarch64-linux-gnu qemu-user ninja-build cmake)`);

function run(cmd: string, args: string[], timeout: number) {
  const r = spawnSync(cmd, args, { encoding: 'utf8', timeout, maxBuffer: 64 * 1024 * 1024 });
  const output = `${r.stdout ?? ''}${r.stderr ?? ''}`;
  if (r.error || r.status !== 0) {
    throw new Error(`${cmd} ${args.join(' ')} failed (${r.error?.message ?? r.status}):\n${output.slice(-6000)}`);
  }
  return output;
}

testIf('cross-builds for aarch64 and passes test_kernels under qemu', () => {
  const build = fs.mkdtempSync(path.join(os.tmpdir(), 'ts-arm64-'));
  try {
    const configure = run('cmake', ['-S', path.join(ROOT, 'native'), '-B', build, '-G', 'Ninja',
      `-DCMAKE_TOOLCHAIN_FILE=${TOOLCHAIN}`, '-DTS_WITH_CUDA=OFF', '-DTS_BUILD_ADDON=OFF'], 120_000);
    expect(configure).toContain('CPU kernels scalar only (aarch64)');
    run('ninja', ['-C', build, '-j2', 'test_kernels', 'bench_kernels'], 900_000);
    const args = ['-L', SYSROOT, path.join(build, 'test_kernels')];
    if (fs.existsSync(TINY_A)) args.push(TINY_A);
    const out = run('qemu-aarch64', args, 300_000);
    expect(out).toContain('backend: cpu scalar');
    expect(out).toMatch(/\n\d+ passed, 0 failed\n?$/);
    if (fs.existsSync(TINY_A)) expect(out).toContain('ok   golden tiny-a expert cases bf16 scalar');
    expect(run('qemu-aarch64', ['-L', SYSROOT, path.join(build, 'bench_kernels'), '--help'], 60_000)).toContain('--actives');
  } finally {
    fs.rmSync(build, { recursive: true, force: true });
  }
}, 1_500_000);
