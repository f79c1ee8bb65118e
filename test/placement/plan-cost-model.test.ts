// The planner's cost model on hand-computable cases: one expert per layer (every token routes to it, so
// no sampling matters) or a routing.json that sends every token to one expert. Each case compares the
// prediction with the formula written out here.
import { type CostConstants, type CostInput, type ModelCost, predictStep } from '../../core/placement/cost-model';
import { parseLink } from '../../core/placement/link-presets';
import type { NodeDescription } from '../../core/placement/node-descriptions';
import { ROUTING_FORMAT, type RoutingStats } from '../../core/placement/routing-stats';
import { maskWireBytes } from '../../core/wire/masks';

const L = 4;
const H = 256;
const I = 1024;
const F = 0.25;
const EXPERT = 3 * H * I * 2;

/** Round numbers: every rate is in bytes per microsecond x 1e6. */
const K: Partial<CostConstants> = {
  callOverheadUs: 100, callOverheadNsPerByte: 0, nodeCallUs: 0, nodeRouteUs: 0, localCallUs: 0, coordinatorLayerUs: 10, coordinatorStepUs: 50,
  coordinatorRowUs: 0, coordinatorRowLayerUs: 0,
  cpuExtraRowFraction: 0, cudaExtraRowFraction: 0, cudaCallUs: 20, samples: 8,
};

function model(experts: number, topK: number): ModelCost {
  return {
    numLayers: L, numExperts: experts, topK, hiddenSize: H, intermediateSize: I,
    layerDenseBytes: new Array<number>(L).fill(1e6),
    predictorBytes: Array.from({ length: L }, () => new Array<number>(experts).fill(2e5)),
    expertBytes: Array.from({ length: L }, () => new Array<number>(experts).fill(EXPERT)),
    lmHeadBytes: 4e6, kvBytesPerToken: 1000, activeFraction: F,
  };
}

function node(address: string, gbps: number, device = 'cpu'): NodeDescription {
  return { name: address, address, memoryBytes: 2 ** 30, device, bytesPerS: gbps * 1e9 };
}

function oneExpert(over: Partial<CostInput> = {}): CostInput {
  return {
    model: model(1, 1),
    map: { nodes: [{ address: 'a:1', experts: Array.from({ length: L }, (_, layer) => ({ layer, expert: 0 })) }] },
    nodes: [node('a:1', 1)],
    coordinator: { bytesPerS: 1e9, device: 'cpu' },
    link: null,
    wire: 'f32',
    contextTokens: 0,
    constants: K,
    ...over,
  };
}

/** Request and response bytes of one call with `rows` rows, each routed once (the model's fixed fields). */
function callBytes(rows: number): number {
  const out = 40 + rows * H * 4 + rows * (12 + maskWireBytes(I, Math.round(F * I)).bytes);
  const back = 24 + rows * H * 4 + rows * 2;
  return out + back;
}

describe('cost model', () => {
  test('one expert, loopback: coordinator + overhead + compute, each by its formula', () => {
    for (const c of [1, 3, 16]) {
      const p = predictStep(oneExpert(), c);
      // 1 GB/s = 1000 bytes per µs.
      const coordinator = 50 + 4e6 / 1000 + L * (10 + 1e6 / 1000 + 2e5 / 1000);
      const compute = L * (c * F * EXPERT) / 1000;
      expect(p.coordinatorMs).toBeCloseTo(coordinator / 1000, 9);
      expect(p.expertMs).toBeCloseTo(compute / 1000, 9);
      expect(p.callOverheadMs).toBeCloseTo((L * 100) / 1000, 9);
      expect(p.linkMs).toBe(0);
      expect(p.stepMs).toBeCloseTo((coordinator + compute + L * 100) / 1000, 9);
      expect(p.tokensPerS).toBeCloseTo(c / (p.stepMs / 1000), 6);
      expect(p.bytesOutPerStep + p.bytesBackPerStep).toBeCloseTo(L * callBytes(c), 6);
    }
  });

  test('the coordinator\'s per-row software terms: rowUs per row per step, rowLayerUs per row per layer', () => {
    for (const c of [1, 3, 16]) {
      const without = predictStep(oneExpert(), c);
      const withRows = predictStep(oneExpert({ constants: { ...K, coordinatorRowUs: 30, coordinatorRowLayerUs: 7 } }), c);
      expect(withRows.coordinatorMs - without.coordinatorMs).toBeCloseTo((30 * c + L * 7 * c) / 1000, 9);
      expect(withRows.expertMs).toBeCloseTo(without.expertMs, 9);
      expect(withRows.callOverheadMs).toBeCloseTo(without.callOverheadMs, 9);
    }
  });

  test('doubling a node\'s bandwidth halves its compute and nothing else', () => {
    const slow = predictStep(oneExpert(), 4);
    const fast = predictStep(oneExpert({ nodes: [node('a:1', 2)] }), 4);
    expect(fast.expertMs).toBeCloseTo(slow.expertMs / 2, 9);
    expect(fast.coordinatorMs).toBeCloseTo(slow.coordinatorMs, 9);
    expect(fast.callOverheadMs).toBeCloseTo(slow.callOverheadMs, 9);
  });

  test('the link: a round trip per layer plus every byte at the bandwidth; more delay or more bandwidth move only that', () => {
    const c = 2;
    const base = predictStep(oneExpert({ link: parseLink('100:1000') }), c);
    const bytesPerLayer = callBytes(c);
    // 1000 Mbit/s = 125 bytes per µs.
    expect(base.linkMs).toBeCloseTo((L * (2 * 100 + bytesPerLayer / 125)) / 1000, 9);
    const slower = predictStep(oneExpert({ link: parseLink('600:1000') }), c);
    expect(slower.linkMs - base.linkMs).toBeCloseTo((L * 2 * 500) / 1000, 9);
    expect(slower.stepMs - base.stepMs).toBeCloseTo((L * 2 * 500) / 1000, 9);
    const wider = predictStep(oneExpert({ link: parseLink('100:2000') }), c);
    expect(wider.linkMs).toBeCloseTo((L * (2 * 100 + bytesPerLayer / 250)) / 1000, 9);
    expect(wider.expertMs).toBeCloseTo(base.expertMs, 9);
    // The presets are the bench's: 1gbe = 100 µs one way at 1000 Mbit/s.
    expect(predictStep(oneExpert({ link: parseLink('1gbe') }), c).linkMs).toBeCloseTo(base.linkMs, 9);
  });

  test('concurrency: rows add compute and bytes per row; on a CPU each extra row costs a fraction of the first', () => {
    const one = predictStep(oneExpert(), 1);
    const eight = predictStep(oneExpert(), 8);
    expect(eight.expertMs).toBeCloseTo(8 * one.expertMs, 9);
    expect(eight.coordinatorMs).toBeCloseTo(one.coordinatorMs, 9); // beta 0: rows ride along with the weight read
    const beta = 0.5;
    const batched = predictStep(oneExpert({ constants: { ...K, cpuExtraRowFraction: beta } }), 8);
    const weightUs = 4e6 / 1000 + L * (1e6 / 1000 + 2e5 / 1000);
    expect(batched.coordinatorMs - eight.coordinatorMs).toBeCloseTo((weightUs * beta * 7) / 1000, 9);
    // A GPU coordinator takes the cuda fraction instead.
    const gpu = predictStep(oneExpert({ coordinator: { bytesPerS: 1e9, device: 'cuda' }, constants: { ...K, cpuExtraRowFraction: beta } }), 8);
    expect(gpu.coordinatorMs).toBeCloseTo(eight.coordinatorMs, 9);
    // Tokens/s grows with concurrency while the step's fixed part dominates.
    expect(eight.tokensPerS).toBeGreaterThan(one.tokensPerS);
  });

  test('context: each row reads its KV cache every layer', () => {
    const p0 = predictStep(oneExpert(), 2);
    const p = predictStep(oneExpert({ contextTokens: 500 }), 2);
    expect(p.coordinatorMs - p0.coordinatorMs).toBeCloseTo((L * 2 * 500 * 1000) / 1000 / 1000, 9);
  });

  test('a GPU node reads the union of its rows\' neurons once, plus one kernel call', () => {
    for (const c of [1, 4]) {
      const p = predictStep(oneExpert({ nodes: [node('a:1', 1, 'cuda')] }), c);
      expect(p.expertMs).toBeCloseTo((L * ((1 - (1 - F) ** c) * EXPERT / 1000 + 20)) / 1000, 9);
    }
  });

  test('a node\'s own time per call and per further route, or the in-process experts\' per layer', () => {
    const with_ = (c: Partial<CostConstants>) => ({ ...K, nodeCallUs: 300, nodeRouteUs: 40, localCallUs: 70, ...c });
    for (const c of [1, 5]) {
      const base = predictStep(oneExpert(), c);
      const p = predictStep(oneExpert({ constants: with_({}) }), c);
      expect(p.expertMs - base.expertMs).toBeCloseTo((L * (300 + 40 * (c - 1))) / 1000, 9);
      expect(p.callOverheadMs).toBeCloseTo(base.callOverheadMs, 9);
      const localMap = { nodes: [{ address: 'local', experts: Array.from({ length: L }, (_, layer) => ({ layer, expert: 0 })) }] };
      const local = predictStep(oneExpert({ map: localMap, nodes: [node('local', 1)], constants: with_({}) }), c);
      expect(local.expertMs - base.expertMs).toBeCloseTo((L * 70) / 1000, 9);
    }
  });

  test('the coordinator\'s own experts ("local") skip the call overhead and the link', () => {
    const p = predictStep(oneExpert({
      map: { nodes: [{ address: 'local', experts: Array.from({ length: L }, (_, layer) => ({ layer, expert: 0 })) }] },
      nodes: [node('local', 1)], link: parseLink('1gbe'),
    }), 4);
    expect(p.callOverheadMs).toBe(0);
    expect(p.linkMs).toBe(0);
    expect(p.bytesOutPerStep).toBe(0);
  });

  test('routing: every token on one expert puts every row on its node; uniform routing splits them', () => {
    const experts = 2;
    const map = {
      nodes: [0, 1].map((e) => ({ address: `n${e}:1`, experts: Array.from({ length: L }, (_, layer) => ({ layer, expert: e })) })),
    };
    const routing: RoutingStats = {
      format: ROUTING_FORMAT, version: 1, source: 'profile', created: '2026-12-03T00:00:00.000Z',
      model: { name: 't', layers: L, experts, top_k: 1, hidden_size: H, intermediate_size: I },
      tokens: 100,
      pairs: Array.from({ length: L }, (_, layer) => [
        { layer, expert: 0, routed_tokens: 100, active_fraction: F },
        { layer, expert: 1, routed_tokens: 0, active_fraction: null },
      ]).flat(),
      nodes: [],
    };
    const input: CostInput = { ...oneExpert(), model: model(experts, 1), map, nodes: [node('n0:1', 1), node('n1:1', 1)] };
    const c = 8;
    const skewed = predictStep({ ...input, routing }, c);
    expect(skewed.expertMs).toBeCloseTo((L * c * F * EXPERT) / 1000 / 1000, 9);
    const uniform = predictStep({ ...input, constants: { ...K, samples: 256 } }, c);
    // The slowest of two nodes sharing 8 rows at random holds between 4 and 8 of them.
    expect(uniform.expertMs).toBeGreaterThan((L * 4 * F * EXPERT) / 1000 / 1000);
    expect(uniform.expertMs).toBeLessThan(skewed.expertMs * 0.8);
    // Sampling is seeded: the same plan every time.
    expect(predictStep({ ...input, constants: { ...K, samples: 256 } }, c)).toEqual(uniform);
  });
});
