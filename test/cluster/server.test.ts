// The expert node in process: every kind of bad request gets the right status
// and message as an error response for its id, and the same stream keeps
// serving; health, Info and a graceful drain.
import path from 'node:path';
import * as grpc from '@grpc/grpc-js';
import * as protoLoader from '@grpc/proto-loader';
import { parseExpertSpec } from '../../core/expert-spec';
import { ModelFolder, names } from '../../core/model-folder';
import { native } from '../../core/native';
import { encodeExpertRequest } from './wire-reference';
import { LocalExperts } from '../../coordinator/local-experts';
import { encodeMask } from '../../core/wire/masks';
import { decodeRows, encodeRows } from '../../core/wire/rows';
import { EXPERT_SERVICE_NAME, type ExpertRequest } from '../../core/wire/expert-proto';
import { ExpertClient } from '../../coordinator/expert-client';
import { createServer } from '../../expert-node/server';
import { ExpertStore } from '../../expert-node/expert-store';
import { describeGolden, TINY_A_MODEL } from '../helpers/golden';
import { bySlot, type InProcessNode, maxAbsDiff, randomBatch, rerouted, type SlotBatch, startNode } from './helpers';

describeGolden('expert node server (tiny-a, in process)', () => {
  let folder: ModelFolder;
  let node: InProcessNode;
  let client: ExpertClient;
  const H = 64;
  const I = 160;

  beforeAll(async () => {
    folder = await ModelFolder.open(TINY_A_MODEL);
    node = await startNode(folder, parseExpertSpec('0:0-1', folder.config));
    client = new ExpertClient(node.address);
  });
  afterAll(async () => {
    client?.close();
    await node?.stop();
    await folder?.close();
  });

  /** 3 tokens of layer 0, each routed to experts 0 and 1 (what this node holds). */
  function goodBatch(): SlotBatch {
    const b = randomBatch(folder.config, 0, 3, 11, { topK: 2 });
    b.experts.set([0, 1, 1, 0, 0, 1]);
    return rerouted(b);
  }

  /** The request the remote backend would send for goodBatch(). */
  function goodRequest(): Omit<ExpertRequest, 'id'> & { routes: NonNullable<ExpertRequest['routes']> } {
    const b = goodBatch();
    const routes = Array.from({ length: 6 }, (_, s) => ({
      row: Math.floor(s / 2), expert: b.experts[s], weight: b.weights[s],
      mask: encodeMask(b.masks.subarray(s * b.maskRowBytes, (s + 1) * b.maskRowBytes), I),
    }));
    return { layer: 0, hidden: encodeRows(b.hidden, H, null, 'f32'), routes, replyEncoding: 'ROW_F32' };
  }

  test('Info describes what the node holds; health is SERVING', async () => {
    const info = await client.info(5000);
    expect(info).toMatchObject({ hiddenSize: 64, intermediateSize: 160, numLayers: 2, numExperts: 4, expertsSpec: '0:0-1', device: 'cpu' });
    expect(info.experts).toEqual([{ layer: 0, expert: 0 }, { layer: 0, expert: 1 }]);
    expect(await client.health(5000)).toBe('SERVING');
  });

  test('a good request gives exactly what the in-process backend gives', async () => {
    const backend = native().createBackend('cpu', 1);
    try {
      const local = await LocalExperts.load(folder, backend, { store: 'auto', mode: 'sparse' });
      const want = await local.runExperts(goodBatch());
      // Routes in slot order (not grouped by expert): the node answers per route in request order.
      const { response } = await client.call(goodRequest(), 5000);
      expect(maxAbsDiff(decodeRows(response.out, 3, H, 'out'), want.out)).toBe(0);
      expect(response.active).toEqual(Array.from(bySlot(goodBatch(), want.active)));
      // Routes in group order, as the coordinator's codec sends them: the same answer.
      const b = goodBatch();
      const grouped = encodeExpertRequest(b, b.groups, { stepId: 0, wire: 'f32', timeoutMs: 0, traceContext: {}, hiddenSize: H, intermediateSize: I });
      const again = (await client.call(grouped.request, 5000)).response;
      expect(maxAbsDiff(decodeRows(again.out, 3, H, 'out'), want.out)).toBe(0);
      expect(again.active).toEqual(Array.from(want.active));
      expect(response.computeUs).toBeGreaterThan(0);
      await local.close();
    } finally {
      backend.close();
    }
  });

  const bad: [string, (r: ReturnType<typeof goodRequest>) => void, number, string][] = [
    ['a layer out of range', (r) => (r.layer = 7), grpc.status.INVALID_ARGUMENT, 'layer 7 out of range: the model has 2 layers (0-1)'],
    ['a layer the node does not hold', (r) => (r.layer = 1), grpc.status.FAILED_PRECONDITION, 'this node holds no expert of layer 1 (it holds 0:0-1); check the shard map'],
    ['an expert the node does not hold', (r) => (r.routes[3].expert = 2), grpc.status.FAILED_PRECONDITION, 'routes[3]: this node does not hold expert 0:2 (it holds 0:0-1)'],
    ['an expert out of range', (r) => (r.routes[0].expert = 9), grpc.status.INVALID_ARGUMENT, 'routes[0].expert 9 out of range: the model has 4 experts per layer'],
    ['a wrong row width', (r) => (r.hidden = encodeRows(new Float32Array(3 * 63), 63, null, 'f32')), grpc.status.INVALID_ARGUMENT, 'hidden: rows are 63 values wide, expected 64'],
    ['a byte length that does not match', (r) => (r.hidden = { ...r.hidden, data: (r.hidden!.data as Uint8Array).subarray(2) }), grpc.status.INVALID_ARGUMENT, 'hidden: 3 rows x 64 values in f32 need 768 bytes, got 766'],
    ['a mask index out of range', (r) => (r.routes[2].mask = { indices16: new Uint8Array(Uint16Array.from([5, 160]).buffer) }), grpc.status.INVALID_ARGUMENT, 'routes[2].mask: mask index 160 out of range (intermediate size 160)'],
    ['a bit mask of the wrong size', (r) => (r.routes[1].mask = { bits: new Uint8Array(21) }), grpc.status.INVALID_ARGUMENT, 'routes[1].mask: bit mask of 21 bytes, expected 20 for 160 neurons'],
    ['a route to a row that is not there', (r) => (r.routes[4].row = 3), grpc.status.INVALID_ARGUMENT, 'routes[4].row 3 out of range (the request has 3 hidden rows)'],
    ['the same (row, expert) twice', (r) => (r.routes[2].row = 0), grpc.status.INVALID_ARGUMENT, 'routes[2]: row 0 is routed to expert 1 twice'],
    ['no routes', (r) => r.routes.splice(0), grpc.status.INVALID_ARGUMENT, 'routes: empty'],
    // Counted before anything is allocated for them: 3 rows x the 2 experts held.
    ['more routes than rows x held experts', (r) => r.routes.push({ ...r.routes[0] }), grpc.status.INVALID_ARGUMENT,
      'routes: 7 routes for 3 hidden rows, but a row goes at most once to each of the 2 experts of layer 0 this node holds (at most 6 routes)'],
    ['a huge route count', (r) => (r.routes = r.routes.concat(Array.from({ length: 300_000 }, () => ({})))), grpc.status.INVALID_ARGUMENT,
      'routes: 300006 routes for 3 hidden rows'],
    ['a missing mask', (r) => (r.routes[0].mask = null), grpc.status.INVALID_ARGUMENT, 'routes[0].mask: missing mask'],
    ['a NaN weight', (r) => (r.routes[0].weight = NaN), grpc.status.INVALID_ARGUMENT, 'routes[0].weight is NaN, not a finite number'],
    ['missing int8 scales', (r) => (r.hidden = { ...encodeRows(new Float32Array(3 * 64), 64, null, 'int8'), scales: new Uint8Array(4) }), grpc.status.INVALID_ARGUMENT, 'hidden: int8 rows need 3 f32 scales (12 bytes), got 4 bytes'],
  ];
  test.each(bad)('%s -> an error response on the stream, which keeps serving', async (_what, spoil, code, message) => {
    const req = goodRequest();
    spoil(req);
    await expect(client.call(req, 5000)).rejects.toMatchObject({ code, detail: expect.stringContaining(message) });
    // Same client, same stream: the next request is answered normally.
    const { response } = await client.call(goodRequest(), 5000);
    expect(response.out!.count).toBe(3);
  });

  test('a request still queued past its timeout_ms is answered DEADLINE_EXCEEDED without computing', async () => {
    // A big request (4000 tokens x 2 experts) keeps the node busy; the small one behind it
    // allows itself 1 ms in the queue.
    const big = randomBatch(folder.config, 0, 4000, 12);
    big.experts.set(Array.from({ length: 8000 }, (_, s) => s % 2));
    const bigReq = {
      layer: 0, hidden: encodeRows(big.hidden, H, null, 'f32'), replyEncoding: 'ROW_F32' as const,
      routes: Array.from({ length: 8000 }, (_, s) => ({ row: Math.floor(s / 2), expert: s % 2, weight: 0.5,
        mask: encodeMask(big.masks.subarray(s * big.maskRowBytes, (s + 1) * big.maskRowBytes), I) })),
    };
    const first = client.call(bigReq, 30_000);
    const late = client.call({ ...goodRequest(), timeoutMs: 1 }, 30_000);
    await expect(late).rejects.toMatchObject({ code: grpc.status.DEADLINE_EXCEEDED, detail: expect.stringMatching(/^waited [\d.]+ ms in the queue, past its 1 ms deadline$/) });
    const { response } = await first;
    expect(response.out!.count).toBe(4000);
    expect(response.computeUs).toBeGreaterThan(1000);
  });

  test('server reflection lists the ExpertNode service', async () => {
    const def = protoLoader.loadSync('grpc/reflection/v1/reflection.proto', {
      includeDirs: [path.join(path.dirname(require.resolve('@grpc/reflection')), '..', 'proto')], keepCase: true, oneofs: true,
    });
    const Reflection = (grpc.loadPackageDefinition(def) as any).grpc.reflection.v1.ServerReflection; // eslint-disable-line @typescript-eslint/no-explicit-any
    const rc = new Reflection(node.address, grpc.credentials.createInsecure());
    try {
      const services = await new Promise<string[]>((resolve, reject) => {
        const call = rc.ServerReflectionInfo();
        call.on('data', (m: { list_services_response?: { service: { name: string }[] } }) => {
          resolve(m.list_services_response!.service.map((x) => x.name));
          call.end();
        });
        call.on('error', reject);
        call.write({ list_services: '' });
      });
      expect(services).toContain(EXPERT_SERVICE_NAME);
    } finally {
      rc.close();
    }
  });

  test('past maxQueuedBytes a request is answered RESOURCE_EXHAUSTED instead of queued; the node goes on', async () => {
    const small = await startNode(folder, parseExpertSpec('0:0-1', folder.config), { maxQueuedBytes: 1 });
    const c = new ExpertClient(small.address);
    try {
      // A big request keeps the node busy; the first request behind it is queued (an empty queue
      // always takes one), the next ones find the queue over its 1 byte.
      const big = randomBatch(folder.config, 0, 4000, 12);
      const running = c.call({
        layer: 0, hidden: encodeRows(big.hidden, H, null, 'f32'), replyEncoding: 'ROW_F32' as const,
        routes: Array.from({ length: 8000 }, (_, s) => ({ row: Math.floor(s / 2), expert: s % 2, weight: 0.5,
          mask: encodeMask(big.masks.subarray(s * big.maskRowBytes, (s + 1) * big.maskRowBytes), I) })),
      }, 30_000);
      const behind = [0, 1, 2].map(() => c.call(goodRequest(), 30_000));
      const settled = await Promise.allSettled([running, ...behind]);
      expect(settled.map((x) => x.status)).toEqual(['fulfilled', 'fulfilled', 'rejected', 'rejected']);
      for (const x of settled.slice(2)) {
        expect((x as PromiseRejectedResult).reason).toMatchObject({ code: grpc.status.RESOURCE_EXHAUSTED,
          detail: expect.stringMatching(/^the node's queue is full \(1 requests, \d+ bytes waiting, at most 1\); not run$/) });
      }
      expect((await c.call(goodRequest(), 5000)).response.out!.count).toBe(3);
    } finally {
      c.close();
      await small.stop();
    }
  });

  test('many requests in flight on one stream are matched by id', async () => {
    const reqs = Array.from({ length: 12 }, (_, i) => {
      const r = goodRequest();
      if (i % 3 === 1) r.layer = 1; // every third one is bad, interleaved with good ones
      return r;
    });
    const settled = await Promise.allSettled(reqs.map((r) => client.call(r, 5000)));
    settled.forEach((s, i) => expect(s.status).toBe(i % 3 === 1 ? 'rejected' : 'fulfilled'));
    const outs = settled.filter((s) => s.status === 'fulfilled').map((s) => decodeRows((s as PromiseFulfilledResult<Awaited<ReturnType<ExpertClient['call']>>>).value.response.out, 3, H, 'out'));
    // goodRequest() is deterministic, so every good answer is the same.
    for (const o of outs) expect(maxAbsDiff(o, outs[0])).toBe(0);
  });
});

describeGolden('expert store', () => {
  test('a node reads only the w1/w3/w2 tensors of the pairs it holds', async () => {
    const folder = await ModelFolder.open(TINY_A_MODEL);
    const backend = native().createBackend('cpu', 1);
    const read: string[] = [];
    const source = { readMatrix: (name: string, rows: number, cols: number) => {
      read.push(name);
      return folder.readMatrix(name, rows, cols);
    } };
    try {
      const pairs = parseExpertSpec('0:1,1:2-3', folder.config);
      const store = await ExpertStore.load({ source, dims: folder.config, pairs, backend, weights: 'auto' });
      const want = pairs.flatMap((p) => [names.w1(p.layer, p.expert), names.w2(p.layer, p.expert), names.w3(p.layer, p.expert)]);
      expect([...read].sort()).toEqual(want.sort());
      expect(store.has(0, 1) && store.has(1, 3) && !store.has(0, 0) && !store.has(1, 1)).toBe(true);
      store.close();
    } finally {
      backend.close();
      await folder.close();
    }
  });
});

describeGolden('expert node drain', () => {
  test('shutdown() answers every request already queued, refuses new ones, then ends the stream', async () => {
    const folder = await ModelFolder.open(TINY_A_MODEL);
    let accepted = 0;
    const node = await startNode(folder, parseExpertSpec('0:0-1', folder.config), { hooks: { onRequest: () => void accepted++ } });
    const client = new ExpertClient(node.address);
    try {
      const big = (seed: number) => {
        const b = randomBatch(folder.config, 0, 2000, seed);
        return {
          layer: 0, hidden: encodeRows(b.hidden, 64, null, 'f32'), replyEncoding: 'ROW_F32' as const,
          routes: Array.from({ length: 4000 }, (_, s) => ({ row: Math.floor(s / 2), expert: s % 2, weight: 0.5,
            mask: encodeMask(b.masks.subarray(s * b.maskRowBytes, (s + 1) * b.maskRowBytes), 160) })),
        };
      };
      const calls = [1, 2, 3, 4].map((i) => client.call(big(60 + i), 60_000));
      // All four accepted: one running, three waiting in the node's queue.
      while (accepted < 4) await new Promise((r) => setTimeout(r, 2));
      const stopped = node.server.shutdown(60_000);
      const late = client.call(big(70), 60_000);
      const answered = await Promise.all(calls);
      expect(answered.map((a) => a.response.out!.count)).toEqual([2000, 2000, 2000, 2000]);
      await expect(late).rejects.toMatchObject({ code: grpc.status.UNAVAILABLE });
      await stopped;
    } finally {
      client.close();
      await node.stop();
      await folder.close();
    }
  });
});

describeGolden('expert node lifecycle', () => {
  test('NOT_SERVING and UNAVAILABLE while loading, SERVING after; drain ends streams and refuses new work', async () => {
    const folder = await ModelFolder.open(TINY_A_MODEL);
    const backend = native().createBackend('cpu', 1);
    const server = createServer();
    const port = await server.listen('127.0.0.1', 0);
    const client = new ExpertClient(`127.0.0.1:${port}`);
    try {
      expect(await client.health(5000)).toBe('NOT_SERVING');
      await expect(client.info(5000)).rejects.toMatchObject({ code: grpc.status.UNAVAILABLE, detail: expect.stringContaining('weights are still loading') });
      const b = randomBatch(folder.config, 1, 1, 3);
      const req = { layer: 1, hidden: encodeRows(b.hidden, 64, null, 'f32'), routes: [{ row: 0, expert: 3, weight: 1, mask: encodeMask(b.masks, 160) }] };
      await expect(client.call(req, 5000)).rejects.toMatchObject({ code: grpc.status.UNAVAILABLE });

      const store = await ExpertStore.load({ source: folder, dims: folder.config, pairs: parseExpertSpec('1:2-3', folder.config), backend, weights: 'auto' });
      server.setStore(store);
      expect(await client.health(5000)).toBe('SERVING');
      expect((await client.call(req, 5000)).response.active).toHaveLength(1);

      await server.shutdown(2000);
      // The node ended our stream; a new call cannot reach it.
      await expect(client.call(req, 2000)).rejects.toMatchObject({ code: expect.any(Number) });
      await expect(client.health(1000)).rejects.toBeDefined();
      store.close();
    } finally {
      client.close();
      server.forceShutdown();
      backend.close();
      await folder.close();
    }
  });
});
