// Every proposer on the golden model, in process and on expert nodes (f32 wire): greedy tokens
// and every emitted token's logits identical to decoding without speculation. And the CLI:
// `generate --speculative` reports forward passes, proposed and kept tokens; a bad spec is one line.
import { balancedShardMap, uniformPairs } from '../../core/shard-map';
import { ModelFolder } from '../../core/model-folder';
import type { Engine } from '../../coordinator/engine';
import { loadEngine } from '../../coordinator/load-engine';
import { RemoteExperts } from '../../coordinator/remote-experts';
import { GREEDY } from '../../coordinator/sampler';
import { parseSpeculativeChoice } from '../../coordinator/speculative/parse';
import { DraftModelProposer } from '../../coordinator/speculative/draft-model';
import { startNode, type InProcessNode } from '../cluster/helpers';
import { describeGolden, goldenJson, TINY_A_MODEL } from '../helpers/golden';

const quiet = { log: () => undefined };

/** Prompts that repeat a span (so ngram and suffix find matches) plus the golden ones. */
function prompts(): number[][] {
  const span = [11, 52, 93, 34, 75, 16, 57, 98];
  return [[1, ...span, 7, ...span, 7, ...span.slice(0, 3)], ...goldenJson().prompts.map((p) => p.ids)];
}

async function decode(engine: Engine, ps: number[][], maxTokens: number): Promise<{ tokens: number[][]; logits: Buffer[] }> {
  const seqs = ps.map((p) => engine.newSequence(p, { sampling: GREEDY, maxTokens, stopIds: [] }));
  const logits: Buffer[][] = seqs.map(() => []);
  while (seqs.some((s) => !s.finished)) {
    const r = await engine.step(seqs.filter((s) => !s.finished));
    for (const s of r.sampled) logits[seqs.indexOf(s.seq)].push(Buffer.from(s.logits.slice().buffer));
  }
  const out = { tokens: seqs.map((s) => [...s.outputIds]), logits: logits.map((l) => Buffer.concat(l)) };
  for (const s of seqs) engine.release(s);
  return out;
}

describeGolden('speculative decoding on tiny-a: identical greedy output with every proposer', () => {
  let local: Engine;
  let remote: Engine;
  let folder: ModelFolder;
  let plain: { tokens: number[][]; logits: Buffer[] };
  let plainRemote: { tokens: number[][]; logits: Buffer[] };
  const nodes: InProcessNode[] = [];

  beforeAll(async () => {
    local = await loadEngine({ modelDir: TINY_A_MODEL, device: 'cpu', ...quiet });
    folder = await ModelFolder.open(TINY_A_MODEL);
    const dims = { hiddenSize: 64, intermediateSize: 160, numLayers: 2, numExperts: 4 };
    const plan = balancedShardMap(uniformPairs(dims, 1), ['a:1', 'b:1']);
    nodes.push(...(await Promise.all(plan.nodes.map((n) => startNode(folder, n.experts)))));
    const shardMap = { nodes: plan.nodes.map((n, i) => ({ address: nodes[i].address, experts: n.experts })) };
    remote = await loadEngine({
      modelDir: TINY_A_MODEL, device: 'cpu', ...quiet, experts: { kind: 'file', path: 'test' }, overlap: 'off',
      remoteExperts: () => RemoteExperts.connect({ shardMap, model: dims, callTimeoutMs: 10_000 }),
    });
    plain = await decode(local, prompts(), 16);
    plainRemote = await decode(remote, prompts(), 16);
  });
  afterAll(async () => {
    await local?.close();
    await remote?.close();
    for (const n of nodes) await n.stop();
    await folder?.close();
  });

  test.each(['ngram:4', 'ngram:3:2', 'suffix:4', 'draft'])('%s, in process and on two expert nodes', async (spec) => {
    for (const engine of [local, remote]) {
      const draftEngine = spec === 'draft' ? await loadEngine({ modelDir: TINY_A_MODEL, device: 'cpu', ...quiet }) : null;
      engine.proposer = draftEngine ? new DraftModelProposer(draftEngine, engine, 4) : (parseSpeculativeChoice(spec) as { proposer: Engine['proposer'] }).proposer;
      engine.speculativeMaxBatch = 64; // every prompt at once: identity, not the batch gate, is tested here
      const before = { ...engine.speculation };
      try {
        // Nodes run their kernels on 1 thread, in process on 2: each is compared with itself without speculation.
        const want = engine === local ? plain : plainRemote;
        const got = await decode(engine, prompts(), 16);
        expect(got.tokens).toEqual(want.tokens);
        expect(got.tokens).toEqual(plain.tokens);
        got.logits.forEach((l, i) => expect(l.equals(want.logits[i])).toBe(true));
        expect(engine.speculation.draftTokens - before.draftTokens).toBeGreaterThan(0);
      } finally {
        await engine.proposer?.close?.();
        engine.proposer = null;
      }
    }
  });
});
