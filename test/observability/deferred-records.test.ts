// The bookkeeping of expert calls is deferred off the token path and brought up to date
// whenever the metrics or the status are read: each record runs exactly once.
import { Registry } from '../../core/metrics';
import type { ExpertBackend, ExpertBatch, ExpertOutput } from '../../core/expert-backend';
import { routeCount } from '../../core/routed-batch';
import type { Engine } from '../../coordinator/engine';
import { buildStatus, EngineObservability, ObservedExperts } from '../../coordinator/telemetry';

const I = 64;

/** In-process experts whose runExperts returns at once, observed (as observeEngine wraps an engine's). */
function observed(log?: (line: string) => void): { obs: EngineObservability; experts: ExpertBackend } {
  const backend: ExpertBackend = {
    name: 'local',
    runExperts: async (b: ExpertBatch): Promise<ExpertOutput> => ({ out: new Float32Array(b.nRows * 4), active: new Int32Array(routeCount(b.groups)).fill(8) }),
    close: async () => undefined,
  };
  const engine = {
    config: { numLayers: 4, numExperts: 2, topK: 1, hiddenSize: 4, intermediateSize: I },
    folder: { dir: '/models/demo' },
    experts: backend,
  } as unknown as Engine;
  const obs = new EngineObservability(engine, { registry: new Registry(), log });
  return { obs, experts: new ObservedExperts(backend, obs) };
}

const batch = (layer: number): ExpertBatch => ({
  layer,
  nRows: 1,
  hidden: new Float32Array(4),
  maskRowBytes: 8,
  groups: [{ expert: layer % 2, rows: Int32Array.of(0), weights: Float32Array.of(1), masks: new Uint8Array(8) }],
});

test('the status flushes the deferred records once (the registry read already does)', async () => {
  const { obs, experts } = observed();
  for (let layer = 0; layer < 3; layer++) await experts.runExperts(batch(layer));
  const flush = jest.spyOn(obs, 'flush');
  const s = buildStatus(obs);
  expect(flush).toHaveBeenCalledTimes(1);
  expect(s.totals.calls).toBe(3);
});

test('a deferred record that throws is reported and dropped; the others run exactly once', async () => {
  const lines: string[] = [];
  const { obs, experts } = observed((l) => lines.push(l));
  const recorded: number[] = [];
  const recordCall = obs.stats.recordCall.bind(obs.stats);
  jest.spyOn(obs.stats, 'recordCall').mockImplementation((c) => {
    recorded.push(c.layer);
    if (c.layer === 1) throw new Error('bad record');
    recordCall(c);
  });
  // Each call flushes the records before it (on the token path): the throw must not reach the caller.
  for (let layer = 0; layer < 4; layer++) await expect(experts.runExperts(batch(layer))).resolves.toBeDefined();
  obs.flush();
  obs.flush();
  expect(recorded).toEqual([0, 1, 2, 3]);
  expect(obs.stats.snapshot().totals.calls).toBe(3);
  expect(lines).toEqual(['observability: an expert call record failed (bad record); it is dropped']);
  // The metrics read flushes too, with nothing left to run twice.
  await experts.runExperts(batch(1));
  expect(() => obs.registry.text()).not.toThrow();
  expect(recorded).toEqual([0, 1, 2, 3, 1]);
  expect(lines).toHaveLength(1); // the same failure is reported once
});

test('Registry: a throwing onCollect callback is reported and skipped; the others run once per read', () => {
  const lines: string[] = [];
  const reg = new Registry({ log: (l) => lines.push(l) });
  const g = reg.gauge({ name: 'ts_depth', help: 'depth' });
  const runs = { a: 0, b: 0 };
  reg.onCollect(() => void runs.a++);
  reg.onCollect(() => {
    throw new Error('source gone');
  });
  reg.onCollect(() => {
    runs.b++;
    g.set(undefined, 5);
  });
  expect(reg.text()).toContain('ts_depth 5');
  expect(reg.json().metrics[0].series[0].value).toBe(5);
  expect(runs).toEqual({ a: 2, b: 2 });
  expect(lines).toEqual(['metrics: an onCollect callback failed (source gone); the others still ran']);
});
