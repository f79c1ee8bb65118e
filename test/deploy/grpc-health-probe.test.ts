// deploy/grpc-health-probe.js is docker-compose's healthcheck for expert nodes: exit 0 only
// for SERVING. Run it against a real gRPC health service on a loopback port.
import { execFile } from 'node:child_process';
import path from 'node:path';
import * as grpc from '@grpc/grpc-js';
import { HealthImplementation } from 'grpc-health-check';
import { DEPLOY } from './k8s-render';

const PROBE = path.join(DEPLOY, 'grpc-health-probe.js');

function probe(...args: string[]): Promise<{ code: number; out: string }> {
  return new Promise((resolve) => {
    execFile(process.execPath, [PROBE, ...args], { timeout: 20000 }, (err, stdout, stderr) => {
      resolve({ code: err ? (typeof err.code === 'number' ? err.code : -1) : 0, out: stdout + stderr });
    });
  });
}

describe('deploy/grpc-health-probe.js', () => {
  let server: grpc.Server;
  let health: HealthImplementation;
  let target: string;

  beforeAll(async () => {
    server = new grpc.Server();
    health = new HealthImplementation({ '': 'NOT_SERVING' });
    health.addToServer(server);
    const port = await new Promise<number>((resolve, reject) => {
      server.bindAsync('127.0.0.1:0', grpc.ServerCredentials.createInsecure(), (e, p) => (e ? reject(e) : resolve(p)));
    });
    target = `127.0.0.1:${port}`;
  });

  afterAll(async () => {
    await new Promise<void>((resolve) => server.tryShutdown(() => resolve()));
  });

  test('NOT_SERVING (weights still loading) fails, SERVING passes', async () => {
    health.setStatus('', 'NOT_SERVING');
    expect(await probe(target)).toEqual({ code: 1, out: `${target}: NOT_SERVING\n` });
    health.setStatus('', 'SERVING');
    expect(await probe(target)).toEqual({ code: 0, out: `${target}: SERVING\n` });
  });

  test('a named service is checked on its own; an unknown one fails', async () => {
    health.setStatus('turbosparse.ExpertNode', 'SERVING');
    expect((await probe(target, 'turbosparse.ExpertNode')).code).toBe(0);
    const unknown = await probe(target, 'no.such.Service');
    expect(unknown.code).toBe(1);
  });

  test('nothing listening fails within the timeout', async () => {
    const closed = new grpc.Server();
    const port = await new Promise<number>((resolve, reject) => {
      closed.bindAsync('127.0.0.1:0', grpc.ServerCredentials.createInsecure(), (e, p) => (e ? reject(e) : resolve(p)));
    });
    await new Promise<void>((resolve) => closed.tryShutdown(() => resolve()));
    const started = Date.now();
    const result = await probe(`127.0.0.1:${port}`, '--timeout-ms', '1500');
    expect(result.code).toBe(1);
    expect(Date.now() - started).toBeLessThan(10000);
  });

  test('a malformed target is a usage error', async () => {
    expect((await probe('not-an-address')).code).toBe(2);
  });
});
