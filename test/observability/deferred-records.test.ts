// The bookkeeping of expert calls is deferred off the token path and brought up to date
// whenever the metrics or the status are read: each record runs exactly once.
import { Registry } from '../../core/metrics';
import type { ExpertBackend, ExpertBatch, ExpertOutput } from '../../core/expert-backend';
import type { Engine } from '../../coordinator/engine';
import { buildStatus, observeEngine, type EngineObservability } from '../../coordinator/telemetry';

const I = 64;

/** An engine with in-process experts whose runExperts returns at once, instrumented. */
function observed(): { obs: EngineObservability; experts: ExpertBackend } {
  const backend: ExpertBackend = {
    name: 'local',
    runExperts: async (b: ExpertBatch): Promise<ExpertOutput> => ({ out: new Float32Array(b.nRows * 4), active: new Int32Array(b.nRows * b.topK).fill(8) }),
    close: async () => undefined,
  };
  const engine = {
    config: { numLayers: 4, numExperts: 2, topK: 1, hiddenSize: 4, intermediateSize: I },
    folder: { dir: '/models/demo' },
    experts: backend,
    step: async () => ({ sampled: [] }),
  } as unknown as Engine;
  const obs = observeEngine(engine, { registry: new Registry() });
  return { obs, experts: engine.experts };
}

const batch = (layer: number): ExpertBatch => ({
  layer,
  nRows: 1,
  hidden: new Float32Array(4),
  topK: 1,
  experts: Int32Array.of(layer % 2),
  weights: Float32Array.of(1),
  masks: new Uint8Array(8),
  maskRowBytes: 8,
});

test('the status flushes the deferred records once (the registry read already does)', async () => {
  const { obs, experts } = observed();
  for (let layer = 0; layer < 3; layer++) await experts.runExperts(batch(layer));
  const flush = jest.spyOn(obs, 'flush');
  const s = buildStatus(obs);
  expect(flush).toHaveBeenCalledTimes(1);
  expect(s.totals.calls).toBe(3);
});
