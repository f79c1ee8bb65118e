// `turbosparse expert-node` as a process: SIGTERM starts the drain (server.test.ts pins down that
// queued work is answered), then the process stops on its own with exit code 0: the signal is
// wired to the drain, not left to Node's default (killed by the signal, no exit code).
import { spawn } from 'node:child_process';
import * as grpc from '@grpc/grpc-js';
import { encodeMask } from '../../core/wire/masks';
import { encodeRows } from '../../core/wire/rows';
import { ExpertClient } from '../../coordinator/expert-client';
import { describeGolden, TINY_A_MODEL } from '../helpers/golden';
import { randomBatch, sourceNodeCommand } from './helpers';

const dims = { hiddenSize: 64, intermediateSize: 160, numLayers: 2, numExperts: 4 };

/** A request of `rows` tokens, each routed to experts 0 and 1 of layer 0 (int8 rows keep it small on the wire). */
function bigRequest(rows: number, seed: number) {
  const b = randomBatch(dims, 0, rows, seed, { density: 0.9 });
  return {
    layer: 0, hidden: encodeRows(b.hidden, 64, null, 'int8'), replyEncoding: 'ROW_INT8' as const,
    routes: Array.from({ length: rows * 2 }, (_, s) => ({ row: Math.floor(s / 2), expert: s % 2, weight: 0.5,
      mask: encodeMask(b.masks.subarray(s * b.maskRowBytes, (s + 1) * b.maskRowBytes), 160) })),
  };
}

describeGolden('expert-node process shutdown', () => {
  test('SIGTERM drains, logs it and exits 0', async () => {
    const [exe, ...args] = sourceNodeCommand();
    const child = spawn(exe, [...args, '--model', TINY_A_MODEL, '--experts', '0:0-1', '--port', '0', '--device', 'cpu',
      '--threads', '1', '--grace-ms', '30000'], { stdio: ['ignore', 'ignore', 'pipe'] });
    let stderr = '';
    child.stderr.setEncoding('utf8');
    // 'close', not 'exit': stderr may still hold the last lines when the process exits
    const exited = new Promise<number | null>((resolve) => child.on('close', (code) => resolve(code)));
    let client: ExpertClient | undefined;
    try {
      const port = await new Promise<number>((resolve, reject) => {
        child.stderr.on('data', (d: string) => {
          stderr += d;
          const m = /listening on 127\.0\.0\.1:(\d+)/.exec(stderr);
          if (m && stderr.includes('SERVING')) resolve(Number(m[1]));
        });
        void exited.then((code) => reject(new Error(`expert-node exited ${code}: ${stderr}`)));
      });
      client = new ExpertClient(`127.0.0.1:${port}`);
      await client.waitForReady(10_000);
      // Requests on the stream, then SIGTERM once the first is answered. Those the node had queued
      // are answered (which ones arrived is up to the transport; the in-process drain test in
      // server.test.ts pins that down); the rest are UNAVAILABLE, which a coordinator retries on a replica.
      const calls = Array.from({ length: 4 }, (_, i) => client!.call(bigRequest(3000, 50 + i), 60_000));
      const first = await calls[0];
      child.kill('SIGTERM');
      for (const r of await Promise.allSettled(calls.slice(1))) {
        if (r.status === 'fulfilled') expect(r.value.response.out!.count).toBe(3000);
        else expect(r.reason).toMatchObject({ code: grpc.status.UNAVAILABLE });
      }
      expect(first.response.out!.count).toBe(3000);
      expect(await exited).toBe(0);
      expect(stderr).toContain('SIGTERM: draining (grace 30000 ms)');
      expect(stderr).toMatch(/stopped\n$/);
    } finally {
      client?.close();
      if (child.exitCode === null) child.kill('SIGKILL');
      await exited;
    }
  });
});
