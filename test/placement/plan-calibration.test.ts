// `plan --calibration FILE`: the coordinator's software costs and GB/s measured by bench/coordinator-cost.ts
// replace the built-in constants (explicit flags still win), each term by its formula; a bad file is one
// UserError line naming it.
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { CommanderError } from 'commander';
import { DEFAULT_COORDINATOR_GBPS, type Plan } from '../../cli/plan';
import { makeDemoModel } from '../../core/demo-model';
import { CALIBRATION_KIND, COST_CONSTANTS, parseCalibration } from '../../core/placement/cost-model';
import { UserError } from '../../core/errors';
import { runCliInProcess, runCliJson } from '../helpers/cli';

const plan = (...args: string[]) => runCliInProcess(['plan', ...args]);

const planJson = (...args: string[]) => runCliJson<Plan>(['plan', ...args, '--json']);

const calibration = (constants: Record<string, unknown>, gbps: unknown = 8) => ({
  kind: CALIBRATION_KIND, measured: '2026-12-03T16:45:00Z', machine: 'test', model: 'test', coordinatorGbps: gbps, constants,
});

describe('plan --calibration', () => {
  let dir: string;
  let modelDir: string;
  let nodes: string;
  const write = (name: string, body: unknown) => {
    const file = path.join(dir, name);
    fs.writeFileSync(file, typeof body === 'string' ? body : JSON.stringify(body));
    return file;
  };

  beforeAll(async () => {
    dir = fs.mkdtempSync(path.join(os.tmpdir(), 'ts-plan-calibration-'));
    modelDir = path.join(dir, 'model');
    await makeDemoModel(modelDir, { layers: 2, hidden: 64, intermediate: 128, heads: 4, kvHeads: 2, experts: 4, topK: 2, vocab: 300,
      predictorRank: 16, shards: 1, dtype: 'bf16', seed: 3, activeFraction: 0.2 });
    nodes = write('nodes.yaml', 'nodes:\n  - name: n0\n    address: 10.0.0.1:50051\n    memory_gib: 1\n    device: cpu\n    gbps: 5\n');
  });
  afterAll(() => fs.rmSync(dir, { recursive: true, force: true }));

  test('the file\'s terms and GB/s replace the defaults; each term adds what its formula says', async () => {
    const base = ['--model', modelDir, '--nodes-file', nodes, '--link', 'loopback', '--concurrency', '1,5'];
    const zero = write('zero.json', calibration({ coordinatorStepUs: 0, coordinatorRowUs: 0, coordinatorLayerUs: 0, coordinatorRowLayerUs: 0 }));
    const some = write('some.json', calibration({ coordinatorStepUs: 1000, coordinatorRowUs: 100, coordinatorLayerUs: 300, coordinatorRowLayerUs: 20 }));
    const p0 = await planJson(...base, '--calibration', zero);
    const p1 = await planJson(...base, '--calibration', some);
    expect(p0.coordinator.gbps).toBe(8);
    expect(p1.calibration).toBe(some);
    expect([p1.coordinatorStepUs, p1.coordinatorRowUs, p1.coordinatorLayerUs, p1.coordinatorRowLayerUs]).toEqual([1000, 100, 300, 20]);
    for (const [i, c] of [[0, 1], [1, 5]]) {
      // 2 layers: step 1000 + 100 c, per layer 300 + 20 c.
      const added = 1000 + 100 * c + 2 * (300 + 20 * c);
      expect(p1.predictions[i].coordinatorMs - p0.predictions[i].coordinatorMs).toBeCloseTo(added / 1000, 9);
      expect(p1.predictions[i].expertMs).toBeCloseTo(p0.predictions[i].expertMs, 9);
    }
    // Explicit flags win over the file: the GB/s and the per-layer glue.
    const flagged = await planJson(...base, '--calibration', some, '--coordinator-gbps', '16', '--coordinator-layer-us', '0');
    expect(flagged.coordinator.gbps).toBe(16);
    expect(flagged.coordinatorLayerUs).toBe(0);
    expect(flagged.coordinatorRowLayerUs).toBe(20);
    // Without a file: the built-in constants and the default GB/s.
    const plain = await planJson(...base);
    expect(plain.calibration).toBeNull();
    expect(plain.coordinator.gbps).toBe(DEFAULT_COORDINATOR_GBPS);
    expect(plain.coordinatorRowLayerUs).toBe(COST_CONSTANTS.coordinatorRowLayerUs);
    // The human-readable plan names the file.
    expect((await plan(...base, '--calibration', some)).stdout).toContain(`calibration ${some}`);
  });

  test('a bad calibration file is one UserError line naming it', async () => {
    const ok = { coordinatorStepUs: 1, coordinatorRowUs: 1, coordinatorLayerUs: 1, coordinatorRowLayerUs: 1 };
    const cases: [string, unknown, RegExp][] = [
      ['not-json.json', '{ nope', /not JSON/],
      ['array.json', [], /"kind" must be/],
      ['kind.json', { ...calibration(ok), kind: 'other' }, /"kind" must be/],
      ['gbps.json', calibration(ok, 0), /"coordinatorGbps" must be a number > 0/],
      ['no-constants.json', { ...calibration(ok), constants: null }, /"constants" must be an object/],
      ['missing.json', calibration({ ...ok, coordinatorRowLayerUs: undefined }), /"constants\.coordinatorRowLayerUs" must be a number/],
      ['string.json', calibration({ ...ok, coordinatorStepUs: '5' }), /"constants\.coordinatorStepUs" must be a number/],
      ['negative.json', calibration({ ...ok, coordinatorRowUs: -50, coordinatorRowLayerUs: 10 }), /per-row costs sum below 0/],
    ];
    for (const [name, body, re] of cases) {
      const file = write(name, body);
      const r = await plan('--model', modelDir, '--nodes-file', nodes, '--link', 'loopback', '--calibration', file);
      expect(r.error).toBeInstanceOf(UserError);
      const msg = (r.error as Error).message;
      expect(msg).toMatch(re);
      expect(msg).toContain(`--calibration ${file}`);
      expect(msg).not.toContain('\n');
    }
    const missing = await plan('--model', modelDir, '--nodes-file', nodes, '--link', 'loopback', '--calibration', path.join(dir, 'absent.json'));
    expect((missing.error as Error).message).toMatch(/cannot read it \(ENOENT\)/);
    // A slightly negative single term (a noisy fit) is kept as long as the per-row total is not below 0.
    expect(parseCalibration(calibration({ ...ok, coordinatorStepUs: -300, coordinatorRowUs: -5, coordinatorRowLayerUs: 30 }), 'f').constants.coordinatorStepUs).toBe(-300);
    // The flag itself needs a value.
    const noValue = await plan('--model', modelDir, '--nodes-file', nodes, '--link', 'loopback', '--calibration');
    expect(noValue.error).toBeInstanceOf(CommanderError);
  });
});
