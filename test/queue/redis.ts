// A real Redis for the queue tests: $REDIS_URL when set, else Debian's redis-server
// started on a free loopback port (no persistence, temp dir) and stopped after.
import { spawn, spawnSync, type ChildProcess } from 'node:child_process';
import fs from 'node:fs';
import net from 'node:net';
import os from 'node:os';
import path from 'node:path';
import { Redis } from 'ioredis';

export interface TestRedis {
  url: string;
  /** Of the redis-server this helper started (none for $REDIS_URL): outage tests SIGSTOP it. */
  pid?: number;
  stop(): Promise<void>;
}

function freePort(): Promise<number> {
  return new Promise((resolve, reject) => {
    const srv = net.createServer();
    srv.once('error', reject);
    srv.listen(0, '127.0.0.1', () => {
      const port = (srv.address() as net.AddressInfo).port;
      srv.close(() => resolve(port));
    });
  });
}

async function ping(url: string): Promise<boolean> {
  const c = new Redis(url, { maxRetriesPerRequest: 0, retryStrategy: () => null, lazyConnect: true });
  c.on('error', () => undefined);
  try {
    await c.connect();
    return (await c.ping()) === 'PONG';
  } catch {
    return false;
  } finally {
    c.disconnect();
  }
}

export async function startRedis(): Promise<TestRedis> {
  if (process.env.REDIS_URL) return { url: process.env.REDIS_URL, stop: async () => undefined };
  if (spawnSync('redis-server', ['--version']).error) {
    throw new Error('redis-server not found: install it (apt-get install -y redis-server) or set REDIS_URL');
  }
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'ts-redis-'));
  for (let attempt = 0; attempt < 5; attempt++) {
    const port = await freePort();
    const child: ChildProcess = spawn(
      'redis-server',
      ['--port', String(port), '--bind', '127.0.0.1', '--save', '', '--appendonly', 'no', '--dir', dir],
      { stdio: 'ignore' },
    );
    const url = `redis://127.0.0.1:${port}`;
    const deadline = Date.now() + 10000;
    while (Date.now() < deadline && child.exitCode === null) {
      if (await ping(url)) {
        return {
          url,
          pid: child.pid,
          stop: async () => {
            if (child.exitCode === null) {
              const exited = new Promise((r) => child.once('exit', r));
              child.kill('SIGTERM');
              await exited;
            }
            fs.rmSync(dir, { recursive: true, force: true });
          },
        };
      }
      await new Promise((r) => setTimeout(r, 50));
    }
    if (child.exitCode === null && child.signalCode === null) {
      const exited = new Promise((r) => child.once('exit', r));
      child.kill('SIGKILL'); // port taken meanwhile, or too slow: try another
      await exited;
    }
  }
  throw new Error('could not start redis-server on a free port');
}

/** A queue name no other test (or a shared REDIS_URL) uses. */
export function uniqueQueue(prefix: string): string {
  return `${prefix}-${process.pid}-${Date.now().toString(36)}-${Math.floor(Math.random() * 1e6).toString(36)}`;
}
