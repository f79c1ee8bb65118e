// Running `turbosparse ARGS` in tests: in process (output captured, the error returned) or as a real
// process from the TypeScript sources (exit code and output).
import { spawn } from 'node:child_process';
import path from 'node:path';
import { buildProgram } from '../../cli/main';

const ROOT = path.resolve(__dirname, '..', '..');

/** `turbosparse ARGS` in this process; stdout and stderr captured, a thrown error returned (not thrown). */
export async function runCliInProcess(args: string[]): Promise<{ stdout: string; stderr: string; error: unknown }> {
  let stdout = '';
  let stderr = '';
  const out = jest.spyOn(process.stdout, 'write').mockImplementation((s) => ((stdout += String(s)), true));
  const err = jest.spyOn(process.stderr, 'write').mockImplementation((s) => ((stderr += String(s)), true));
  let error: unknown;
  try {
    await buildProgram().parseAsync(['node', 'turbosparse', ...args]);
  } catch (e) {
    error = e;
  } finally {
    out.mockRestore();
    err.mockRestore();
  }
  return { stdout, stderr, error };
}

/** runCliInProcess, throwing the command's error. */
export async function runCliOrThrow(args: string[]): Promise<{ stdout: string; stderr: string }> {
  const r = await runCliInProcess(args);
  if (r.error !== undefined) throw r.error;
  return { stdout: r.stdout, stderr: r.stderr };
}

/** runCliOrThrow, its stdout parsed as JSON (a command run with --json). */
export async function runCliJson<T>(args: string[]): Promise<T> {
  return JSON.parse((await runCliOrThrow(args)).stdout) as T;
}

/** `turbosparse ARGS` in a real process from the sources; resolves with its exit code and output. */
export function runCliProcess(args: string[]): Promise<{ code: number | null; out: string; err: string }> {
  const entry = `require(${JSON.stringify(path.join(ROOT, 'cli', 'main.ts'))}).main(['node', 'turbosparse', ...process.argv.slice(1)])`;
  // '--': node would take --version, --help and unknown options as its own.
  const child = spawn(process.execPath, ['-r', path.join(ROOT, 'test', 'cluster', 'ts-register-cached.js'), '-e', entry, '--', ...args],
    { cwd: ROOT, stdio: ['ignore', 'pipe', 'pipe'] });
  let out = '';
  let err = '';
  child.stdout.on('data', (d) => (out += d));
  child.stderr.on('data', (d) => (err += d));
  return new Promise((resolve) => child.on('close', (code) => resolve({ code, out, err })));
}
