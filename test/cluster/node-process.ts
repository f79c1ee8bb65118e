// An `expert-node` process from the sources on a free loopback port, for tests
// that need a real process (kill -9, SIGSTOP, the CLI's flags). Resolves once it
// reports SERVING over IPC; stop() ends it (SIGKILL after a stop signal fails).
import { type ChildProcess, spawn } from 'node:child_process';
import type { NodeStartupMessage } from '../../core/node-startup-message';
import { TINY_A_MODEL } from '../helpers/golden';
import { sourceNodeCommand } from './helpers';

export interface NodeProcess {
  child: ChildProcess;
  port: number;
  address: string;
  /** Everything the node wrote to stderr so far. */
  log(): string;
  /** SIGKILL (a SIGSTOPped node too) and wait for the exit. */
  stop(): Promise<void>;
}

/** `expert-node --model tiny-a --device cpu --threads 1 --port 0 ARGS`. */
export async function startNodeProcess(args: string[], model = TINY_A_MODEL): Promise<NodeProcess> {
  const [exe, ...pre] = sourceNodeCommand();
  const child = spawn(exe, [...pre, '--model', model, '--port', '0', '--device', 'cpu', '--threads', '1', ...args],
    { stdio: ['ignore', 'ignore', 'pipe', 'ipc'] });
  let stderr = '';
  child.stderr!.setEncoding('utf8').on('data', (d: string) => (stderr += d));
  const exited = new Promise<void>((resolve) => child.once('exit', () => resolve()));
  const stop = async () => {
    if (child.exitCode === null && child.signalCode === null) child.kill('SIGKILL');
    await exited;
  };
  try {
    const port = await new Promise<number>((resolve, reject) => {
      let p = 0;
      child.on('message', (m: NodeStartupMessage) => {
        if (m.event === 'listening') p = m.port;
        else if (m.event === 'serving') resolve(p);
        else if (m.event === 'failed') reject(new Error(m.message));
      });
      void exited.then(() => reject(new Error(`expert-node exited (${child.exitCode}): ${stderr}`)));
    });
    return { child, port, address: `127.0.0.1:${port}`, log: () => stderr, stop };
  } catch (e) {
    await stop();
    throw e;
  }
}
