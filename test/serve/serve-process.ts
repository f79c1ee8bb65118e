// `turbosparse serve` as a real process from the TypeScript sources (for what only a process
// shows: that it stays alive, its flags and environment), on a free loopback port.
import { spawn, type ChildProcess } from 'node:child_process';
import path from 'node:path';
import { waitFor } from './helpers';

const ROOT = path.resolve(__dirname, '..', '..');
const ENTRY = `require(${JSON.stringify(path.join(ROOT, 'cli', 'main.ts'))}).main(['node', 'turbosparse', ...process.argv.slice(1)])`;

export interface ServeProcess {
  child: ChildProcess;
  /** The base URL (no /v1); set once it serves. */
  url: string;
  /** stderr so far. */
  stderr(): string;
  /** The exit code once the process (and its stderr) closed. */
  exited: Promise<number | null>;
  /** SIGKILL unless it already exited; waits for the exit. */
  kill(): Promise<void>;
}

/** Runs `turbosparse <args>` (stderr captured); resolves once it has started, not once it serves. */
export function spawnCli(args: string[], env: NodeJS.ProcessEnv = process.env): Omit<ServeProcess, 'url'> {
  const child = spawn(process.execPath, ['-r', path.join(ROOT, 'test', 'cluster', 'ts-register-cached.js'), '-e', ENTRY, ...args], {
    cwd: ROOT,
    env,
    stdio: ['ignore', 'ignore', 'pipe'],
  });
  let err = '';
  child.stderr!.on('data', (d) => (err += d));
  // 'close', not 'exit': stderr is read to the end
  const exited = new Promise<number | null>((r) => child.on('close', r));
  return {
    child,
    stderr: () => err,
    exited,
    async kill() {
      if (child.exitCode === null && child.signalCode === null) child.kill('SIGKILL');
      await exited;
    },
  };
}

/**
 * `serve --model DIR --port 0 --device cpu --threads 1 --served-model-name demo ...extra`;
 * resolves once it serves (or fails with its stderr when it exits first).
 */
export async function startServe(modelDir: string, extra: string[] = [], env: NodeJS.ProcessEnv = process.env): Promise<ServeProcess> {
  const p = spawnCli(
    ['serve', '--model', modelDir, '--port', '0', '--device', 'cpu', '--threads', '1', '--served-model-name', 'demo', ...extra],
    env,
  );
  const serving = /serving demo at (http:\/\/\S+)\/v1/;
  try {
    await waitFor(() => serving.test(p.stderr()) || p.child.exitCode !== null, 60000, 'serve to listen');
  } catch (e) {
    await p.kill();
    throw e;
  }
  const url = serving.exec(p.stderr())?.[1];
  if (!url) {
    await p.kill();
    throw new Error(`serve did not start:\n${p.stderr()}`);
  }
  return { ...p, url };
}
