// cluster:N's processes: started through the factory the CLI uses, stopped on
// close, cleaned up after a failed start, and never outliving their parent.
import child_process from 'node:child_process';
import { execFileSync, spawn } from 'node:child_process';
import fs from 'node:fs';
import path from 'node:path';
import { ModelFolder } from '../../core/model-folder';
import { EXPERT_NODE_SERVICE } from '../../core/telemetry';
import { native } from '../../core/native';
import type { SpanRecord } from '../../core/telemetry/jsonl-exporter';
import { isSpanLine, LocalCluster, nodeEnv, nodesTraceToConsole } from '../../coordinator/local-cluster';
import { LocalExperts } from '../../coordinator/local-experts';
import { createRemoteExperts } from '../../coordinator/remote-factory';
import { describeGolden, TINY_A_MODEL } from '../helpers/golden';
import { maxAbsDiff, randomBatch, ROOT, sourceNodeCommand } from './helpers';

const dims = { hiddenSize: 64, intermediateSize: 160, numLayers: 2, numExperts: 4 };

/** Expert-node processes whose parent is `pid`. */
function nodeChildren(pid: number): number[] {
  let out = '';
  try {
    out = execFileSync('ps', ['-o', 'pid=,args=', '--ppid', String(pid)], { encoding: 'utf8' });
  } catch {
    return []; // ps exits 1 when there are none
  }
  return out.split('\n').filter((l) => l.includes('expert-node')).map((l) => Number(l.trim().split(/\s+/)[0]));
}

/** Running (a zombie waiting for a reaper that never comes counts as gone). */
function alive(pid: number): boolean {
  try {
    const stat = fs.readFileSync(`/proc/${pid}/stat`, 'utf8');
    return stat.slice(stat.lastIndexOf(')') + 2)[0] !== 'Z';
  } catch {
    return false;
  }
}

async function waitFor(cond: () => boolean, ms: number): Promise<boolean> {
  const t0 = Date.now();
  while (!cond() && Date.now() - t0 < ms) await new Promise((r) => setTimeout(r, 50));
  return cond();
}

test('a node gets its own service name, not the OTEL_SERVICE_NAME the user gave the coordinator', () => {
  const parent = { PATH: '/usr/bin', OTEL_SERVICE_NAME: 'my-coordinator', OTEL_TRACES_EXPORTER: 'otlp' };
  expect(nodeEnv(parent)).toEqual({ PATH: '/usr/bin', OTEL_SERVICE_NAME: EXPERT_NODE_SERVICE, OTEL_TRACES_EXPORTER: 'otlp' });
  expect(nodeEnv({ PATH: '/usr/bin' }).OTEL_SERVICE_NAME).toBe('turbosparse-expert-node');
  // A setting meant for the nodes (LocalClusterOptions.env) still wins.
  expect(nodeEnv(parent, { OTEL_SERVICE_NAME: 'my-nodes' }).OTEL_SERVICE_NAME).toBe('my-nodes');
});

test('a node does not inherit the service.instance.id the user gave the coordinator; the other resource attributes stay', () => {
  const attrs = (a: string, extra?: NodeJS.ProcessEnv) => nodeEnv({ PATH: '/usr/bin', OTEL_RESOURCE_ATTRIBUTES: a }, extra).OTEL_RESOURCE_ATTRIBUTES;
  expect(attrs('deployment.environment=prod,service.instance.id=coord-1,team=a%2Cb')).toBe('deployment.environment=prod,team=a%2Cb');
  expect(attrs(' service.instance.id = coord-1 ,k8s.pod.name=p')).toBe('k8s.pod.name=p');
  expect(attrs('service.instance.id=coord-1')).toBeUndefined();
  expect('OTEL_RESOURCE_ATTRIBUTES' in nodeEnv({ OTEL_RESOURCE_ATTRIBUTES: 'service.instance.id=x' })).toBe(false);
  // Not even when given for the nodes: one id for N processes is never right.
  expect(attrs('a=1', { OTEL_RESOURCE_ATTRIBUTES: 'service.instance.id=nodes,b=2' })).toBe('b=2');
  expect(nodeEnv({ PATH: '/usr/bin' })).toEqual({ PATH: '/usr/bin', OTEL_SERVICE_NAME: EXPERT_NODE_SERVICE });
});

test('a node command that cannot be spawned fails the start at once (nothing to wait for)', async () => {
  const t0 = Date.now();
  await expect(LocalCluster.start({ modelDir: '/nonexistent/model', dims, nodes: 2, nodeCommand: ['/nonexistent/node'] }))
    .rejects.toThrow(/^cluster: cannot start \/nonexistent\/node: spawn \/nonexistent\/node ENOENT$/);
  expect(Date.now() - t0).toBeLessThan(5000);
});

test('more nodes than (layer, expert) pairs is one clear error before any process starts', async () => {
  // tiny-a's shape: 2 layers x 4 experts = 8 pairs.
  const start = (nodes: number, replicas?: number) => LocalCluster.start({ modelDir: '/nonexistent/model', dims, nodes, replicas,
    nodeCommand: ['/nonexistent/node'] });
  const spawned = jest.spyOn(child_process, 'spawn');
  try {
    await expect(start(9)).rejects.toThrow(/^cluster:9: the model has only 8 \(layer, expert\) pairs, so at most 8 nodes can hold experts; use cluster:8 or fewer$/);
    await expect(start(17, 2)).rejects.toThrow('cluster:17: the model has only 8 (layer, expert) pairs x 2 replicas, so at most 16 nodes');
    expect(spawned).not.toHaveBeenCalled();
  } finally {
    spawned.mockRestore();
  }
});

describeGolden('local cluster processes (tiny-a)', () => {
  test('cluster:2 through the CLI factory matches local experts, and close() stops its nodes', async () => {
    const folder = await ModelFolder.open(TINY_A_MODEL);
    const backend = native().createBackend('cpu', 1);
    const lines: string[] = [];
    // Closed in the test (what it checks); on a failed assertion, finally stops the node processes.
    let remote: Awaited<ReturnType<typeof createRemoteExperts>> | undefined;
    let local: LocalExperts | undefined;
    try {
      remote = await createRemoteExperts({ kind: 'cluster', nodes: 2 }, folder, (l) => void lines.push(l),
        { nodeCommand: sourceNodeCommand(), device: 'cpu', threads: 1 });
      const pids = nodeChildren(process.pid);
      expect(pids).toHaveLength(2);
      expect(remote.name).toBe('cluster:2');
      expect(lines.join('\n')).toMatch(/cluster: node0 SERVING 0-1:0,0-1:2 on 127\.0\.0\.1:\d+/);
      local = await LocalExperts.load(folder, backend, { store: 'auto', mode: 'sparse' });
      for (let i = 0; i < 3; i++) {
        const b = randomBatch(dims, i % 2, 7, 40 + i);
        expect(maxAbsDiff((await remote.runExperts(b)).out, (await local.runExperts(b)).out)).toBeLessThanOrEqual(1e-6);
      }
      await local.close();
      local = undefined;
      await remote.close();
      remote = undefined;
      expect(pids.some(alive)).toBe(false);
    } finally {
      await local?.close();
      await remote?.close();
      backend.close();
      await folder.close();
    }
  });

  test('a node that cannot start is one clear error, and nothing is left running', async () => {
    await expect(LocalCluster.start({ modelDir: '/nonexistent/model', dims, nodes: 1, nodeCommand: sourceNodeCommand(), device: 'cpu', threads: 1 }))
      .rejects.toThrow(/^cluster: expert node node0 failed to start: model folder \/nonexistent\/model does not exist$/);
    expect(await waitFor(() => nodeChildren(process.pid).length === 0, 5000)).toBe(true);
  });

  test('the nodes exit when their parent is SIGKILLed (no orphans)', async () => {
    const parent = spawn(process.execPath, ['-r', path.join(__dirname, 'ts-register-cached.js'),
      path.join(__dirname, 'fixtures', 'cluster-parent.ts'), TINY_A_MODEL], { stdio: ['ignore', 'pipe', 'pipe'] });
    const exited = new Promise((r) => parent.once('exit', r));
    let stderr = '';
    parent.stderr.on('data', (d) => (stderr += d));
    const pids = await new Promise<number[]>((resolve, reject) => {
      let out = '';
      parent.stdout.on('data', (d) => {
        out += d;
        if (out.includes('\n')) resolve(JSON.parse(out.split('\n')[0]));
      });
      parent.on('exit', (code) => reject(new Error(`parent exited ${code}: ${stderr}`)));
    });
    try {
      expect(pids).toHaveLength(2);
      expect(pids.every(alive)).toBe(true);
    } finally {
      if (parent.exitCode === null && parent.signalCode === null) parent.kill('SIGKILL');
      await exited;
    }
    expect(await waitFor(() => !pids.some(alive), 10_000)).toBe(true);
  });
});

test('with console tracing the nodes\' span lines are passed on; other lines are not span lines', () => {
  expect(nodesTraceToConsole({ OTEL_TRACES_EXPORTER: 'otlp, console' })).toBe(true);
  expect(nodesTraceToConsole({ OTEL_TRACES_EXPORTER: 'otlp' })).toBe(false);
  expect(nodesTraceToConsole({})).toBe(false);
  expect(nodesTraceToConsole({ OTEL_TRACES_EXPORTER: 'CONSOLE' })).toBe(true);
  expect(nodesTraceToConsole({ OTEL_TRACES_EXPORTER: 'console,none' })).toBe(false);
  expect(nodesTraceToConsole({ OTEL_TRACES_EXPORTER: 'console', OTEL_SDK_DISABLED: 'true' })).toBe(false);
  const record: SpanRecord = {
    traceId: '0af7651916cd43dd8448eb211c80319c', spanId: 'b7ad6b7169203331', name: 'expert-node.run', kind: 'SERVER',
    startUs: 1, endUs: 2, durationUs: 1, attributes: {}, status: { code: 'UNSET' }, events: [], links: [], resource: {}, scope: 's',
  };
  expect(isSpanLine(JSON.stringify(record))).toBe(true);
  expect(isSpanLine('expert-node: SERVING 4 experts on 127.0.0.1:4000')).toBe(false);
  expect(isSpanLine('{"level":30,"msg":"x"}')).toBe(false);
});
