// LoadExperts on an in-process node whose weight reads are slow (a cold disk): requests
// keep being served while a load runs, the loading pair is refused until the load answers
// and served right after it; two loads run one after the other; a load that fails on a
// read, or that the caller abandons, leaves nothing loaded.
import * as grpc from '@grpc/grpc-js';
import { ExpertClient, NodeCallError } from '../../coordinator/expert-client';
import { parseExpertSpec } from '../../core/expert-spec';
import { ModelFolder } from '../../core/model-folder';
import { native, type NativeBackend } from '../../core/native';
import { ExpertStore, type ExpertWeightSource } from '../../expert-node/expert-store';
import { createServer, type ExpertNodeServer } from '../../expert-node/server';
import { describeGolden, TINY_A_MODEL } from '../helpers/golden';
import { randomBatch, rerouted, sleep } from './helpers';
import { encodeExpertRequest } from './wire-reference';

const dims = { hiddenSize: 64, intermediateSize: 160, numLayers: 2, numExperts: 4 };

function request(layer: number, expert: number, seed: number) {
  const b = randomBatch(dims, layer, 2, seed, { topK: 1 });
  b.experts.fill(expert);
  const batch = rerouted(b);
  return encodeExpertRequest(batch, batch.groups, { stepId: 0, wire: 'f32', timeoutMs: 0, traceContext: {}, hiddenSize: 64, intermediateSize: 160 }).request;
}

const codeOf = (p: Promise<unknown>) => p.then(() => 'ok', (e: NodeCallError) => grpc.status[e.code]);

describeGolden('LoadExperts with slow weight reads (tiny-a, in process)', () => {
  let folder: ModelFolder;
  let backend: NativeBackend;
  let server: ExpertNodeServer;
  let store: ExpertStore;
  let client: ExpertClient;
  /** Delay per matrix read, and a tensor name whose read fails. */
  const reads = { delayMs: 0, failOn: '' };

  beforeAll(async () => {
    folder = await ModelFolder.open(TINY_A_MODEL);
    backend = native().createBackend('cpu', 1);
    const source: ExpertWeightSource = {
      info: (name) => folder.info(name),
      readMatrix: async (name, rows, cols) => {
        await sleep(reads.delayMs);
        if (reads.failOn && name.includes(reads.failOn)) throw new Error(`cannot read ${name}: I/O error`);
        return folder.readMatrix(name, rows, cols);
      },
    };
    server = createServer({ nodeName: 'n', memoryBudgetBytes: 0 });
    const port = await server.listen('127.0.0.1', 0);
    store = await ExpertStore.load({ source, dims: folder.config, pairs: parseExpertSpec('0:0', folder.config), backend, weights: 'auto' });
    server.setStore(store);
    client = new ExpertClient(`127.0.0.1:${port}`);
    await client.waitForReady(5_000);
  });
  afterAll(async () => {
    client?.close();
    server?.forceShutdown();
    store?.close();
    backend?.close();
    await folder?.close();
  });

  test('requests are served while a load runs; the pair serves from its answer on; loads run one at a time', async () => {
    reads.delayMs = 150; // 3 matrices per pair: ~0.45 s a pair
    const order: string[] = [];
    const t0 = Date.now();
    const first = client.loadExperts([{ layer: 1, expert: 0 }, { layer: 1, expert: 1 }], 30_000).then((i) => (order.push('first'), i));
    const second = client.loadExperts([{ layer: 1, expert: 2 }], 30_000).then((i) => (order.push('second'), i));
    await sleep(150);
    const served: number[] = [];
    while (order.length === 0) {
      const t = Date.now();
      await client.call(request(0, 0, served.length), 5_000);
      served.push(Date.now() - t);
      // Refused while the load runs. The last try may meet its end on a loaded CI machine (the pair
      // serves from the load's answer on): then that answer is on its way, here a moment later.
      const code = await codeOf(client.call(request(1, 0, 1), 5_000));
      if (code === 'ok') {
        await Promise.race([first, sleep(200)]);
        expect(order).toContain('first');
      } else {
        expect(code).toBe('FAILED_PRECONDITION');
      }
      await sleep(50);
    }
    // Several requests answered during the load, each quickly (not after it).
    expect(served.length).toBeGreaterThanOrEqual(3);
    expect(Math.min(...served)).toBeLessThan(300);
    expect((await first).expertsSpec).toBe('0:0,1:0-1');
    expect(await codeOf(client.call(request(1, 1, 2), 5_000))).toBe('ok');
    expect((await second).expertsSpec).toBe('0:0,1:0-2');
    expect(order).toEqual(['first', 'second']);
    // Serialised: the second's reads started after the first's ended (~3 pairs x 0.45 s in all).
    expect(Date.now() - t0).toBeGreaterThanOrEqual(3 * 3 * 150);
  }, 30_000);

  test('a read failing mid-load, or the caller going away, leaves nothing loaded', async () => {
    reads.delayMs = 0;
    reads.failOn = 'experts.3.w2';
    const err = (await client.loadExperts([{ layer: 0, expert: 1 }, { layer: 0, expert: 3 }], 10_000).catch((e: NodeCallError) => e)) as NodeCallError;
    expect(err.code).toBe(grpc.status.INTERNAL);
    expect(err.detail).toMatch(/^load failed: cannot read model\.layers\.0\.block_sparse_moe\.experts\.3\.w2\.weight: I\/O error/);
    reads.failOn = '';
    const bytes = store.weightBytes;
    expect((await client.info(5_000)).expertsSpec).toBe('0:0,1:0-2');
    reads.delayMs = 200;
    expect(await codeOf(client.loadExperts([{ layer: 0, expert: 1 }, { layer: 0, expert: 2 }, { layer: 0, expert: 3 }], 300))).toBe('DEADLINE_EXCEEDED');
    // The node notices the cancelled call between pairs and drops what it read; the next load waits for that.
    reads.delayMs = 0;
    const info = await client.loadExperts([], 10_000);
    expect(info.expertsSpec).toBe('0:0,1:0-2');
    expect(store.weightBytes).toBe(bytes);
  }, 30_000);
});
