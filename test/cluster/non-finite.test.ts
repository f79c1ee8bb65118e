// NaN and infinity never reach the sampler: a node answering them is failed
// over like an unwell node (and with no replica left the step fails naming
// it); the coordinator checks its own hidden states and logits and fails the
// step with one clear line instead of sampling.
import { allPairs } from '../../core/expert-spec';
import type { ExpertBackend } from '../../core/expert-backend';
import { Registry } from '../../core/metrics';
import { ModelFolder } from '../../core/model-folder';
import type { NativeBackend } from '../../core/native';
import { TextTokenizer } from '../../core/tokenizer';
import { Engine } from '../../coordinator/engine';
import { loadEngine } from '../../coordinator/load-engine';
import { ExpertsUnavailableError, RemoteExperts } from '../../coordinator/remote-experts';
import { GREEDY } from '../../coordinator/sampler';
import { Scheduler, StepError } from '../../coordinator/scheduler';
import { describeGolden, TINY_A_MODEL } from '../helpers/golden';
import { type InProcessNode, maxAbsDiff, randomBatch, sleep, startNode, wrapStoreRun } from './helpers';

const dims = { hiddenSize: 64, intermediateSize: 160, numLayers: 2, numExperts: 4 };

describeGolden('non-finite values (tiny-a)', () => {
  let engine: Engine;
  let folder: ModelFolder;
  const nodes: InProcessNode[] = [];
  const remotes: RemoteExperts[] = [];

  beforeAll(async () => {
    engine = await loadEngine({ modelDir: TINY_A_MODEL, device: 'cpu', threads: 1, log: () => undefined });
    folder = await ModelFolder.open(TINY_A_MODEL);
  });
  afterAll(async () => {
    for (const r of remotes) await r.close();
    for (const n of nodes) await n.stop();
    await folder?.close();
    await engine?.close();
  });

  /** A node whose every answer holds `value` in its first row. */
  function poison(node: InProcessNode, value: number): () => void {
    return wrapStoreRun(node, (run) => async (...args) => {
      const r = await run(...args);
      r.out[5] = value;
      return r;
    });
  }

  test('a node answering NaN or Inf is failed over; with no replica left the step fails naming it', async () => {
    const pair = await Promise.all([startNode(folder, allPairs(dims)), startNode(folder, allPairs(dims))]);
    nodes.push(...pair);
    const remote = await RemoteExperts.connect({
      shardMap: { nodes: pair.map((n) => ({ address: n.address, experts: allPairs(dims) })) }, model: dims, healthCheckIntervalMs: 100,
    });
    remotes.push(remote);
    const b = randomBatch(dims, 0, 4, 3);
    const want = await engine.experts.runExperts(b);
    const undo0 = poison(pair[0], NaN);
    const got = await remote.runExperts(b);
    expect(maxAbsDiff(got.out, want.out)).toBeLessThanOrEqual(1e-6);
    expect(remote.stats()[0]).toMatchObject({ healthy: false, failures: 1, lastError: expect.stringContaining('layer 0: non-finite value (NaN) in output row') });

    // Both broken: no replica left, and the error names what each node did.
    const undo1 = poison(pair[1], Infinity);
    const t0 = Date.now();
    while (!remote.stats()[0].healthy && Date.now() - t0 < 5000) await sleep(20); // SERVING again by its health check
    const err = await remote.runExperts(b).catch((e: Error) => e);
    expect(err).toBeInstanceOf(ExpertsUnavailableError);
    expect((err as Error).message).toMatch(/non-finite value \((NaN|Infinity)\) in output row/);
    expect((err as Error).message).toContain(pair[1].address);
    undo0();
    undo1();
  });

  /** The engine's local experts, with `value` put into layer `layer`'s output row 0 from step `from` on. */
  function brokenExperts(layer: number, from: number, value: number): ExpertBackend {
    const inner = engine.experts;
    return {
      name: 'broken',
      async runExperts(batch, ctx) {
        const r = await inner.runExperts(batch, ctx);
        if (batch.layer === layer && (ctx?.stepId ?? 0) >= from) r.out[5] = value;
        return r;
      },
      close: async () => undefined,
    };
  }

  test('a non-finite hidden state fails the step naming the layer; nothing is sampled from it', async () => {
    const broken = new Engine(engine.folder, engine.backend, engine.weights, brokenExperts(1, 1, Infinity));
    const seq = broken.newSequence([1, 20, 30], { sampling: GREEDY, maxTokens: 5, stopIds: [] });
    try {
      expect((await broken.step([seq])).sampled).toHaveLength(1); // step 0: prefill, fine
      await expect(broken.step([seq])).rejects.toThrow('layer 1: expert output: non-finite value (Infinity) at row 0, column 5; ' +
        'the step stops rather than sample from it');
      expect(seq.outputIds).toHaveLength(1);
    } finally {
      broken.release(seq);
    }

    // Through the scheduler: the request ends with a StepError saying so, after the one good token.
    const scheduler = new Scheduler(new Engine(engine.folder, engine.backend, engine.weights, brokenExperts(0, 3, NaN)),
      TextTokenizer.fromModel(engine.folder), { metrics: new Registry() });
    try {
      const tokens: number[] = [];
      const h = scheduler.submit({ promptIds: [1, 20, 30], sampling: GREEDY, maxTokens: 20, stopIds: [], onDelta: (d) => void tokens.push(...d.tokenIds) });
      const e = await h.result.catch((x: Error) => x);
      expect(e).toBeInstanceOf(StepError);
      expect((e as Error).message).toMatch(/^generation step failed: layer 0: expert output: non-finite value \(NaN\) at row 0, column 5/);
      // Steps 0-2 sampled three tokens (some may still be held back as text); step 3 none.
      expect(tokens.length).toBeLessThanOrEqual(3);
    } finally {
      await scheduler.close();
    }
  });

  test('NaN logits fail the step as "logits", never sampled', async () => {
    const real = engine.backend;
    const lmHead = engine.weights.lmHead;
    const nanHead = new Proxy(real, {
      get(target, prop) {
        const v = Reflect.get(target, prop) as unknown;
        if (prop === 'matmul') {
          return async (...args: Parameters<NativeBackend['matmul']>) => {
            await target.matmul(...args);
            if (args[0] === lmHead) args[3][7] = NaN;
          };
        }
        return typeof v === 'function' ? v.bind(target) : v;
      },
    });
    const broken = new Engine(engine.folder, nanHead, engine.weights, engine.experts);
    const seq = broken.newSequence([1, 20, 30], { sampling: GREEDY, maxTokens: 5, stopIds: [] });
    try {
      await expect(broken.step([seq])).rejects.toThrow('logits: non-finite value (NaN) at row 0, column 7');
      expect(seq.outputIds).toHaveLength(0);
    } finally {
      broken.release(seq);
    }
  });
});
