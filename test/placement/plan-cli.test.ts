// `turbosparse plan` end to end, in process: a small demo model folder (exact expert bytes from its
// tensor headers), the TurboSparse-Mixtral-47B config.json alone (docs/models), the fit verdicts, the
// JSON output, and one-line errors for a bad nodes.yaml, link, model or flag.
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { CommanderError } from 'commander';
import type { Plan } from '../../cli/plan';
import { makeDemoModel } from '../../core/demo-model';
import { COST_CONSTANTS } from '../../core/placement/cost-model';
import { UserError } from '../../core/errors';
import { expertBytes } from '../../core/shard-map';
import { runCliInProcess, runCliJson } from '../helpers/cli';

const CONFIG_47B = path.resolve(__dirname, '..', '..', 'docs', 'models', 'turbosparse-mixtral-47b', 'config.json');
const GiB = 2 ** 30;

const plan = (...args: string[]) => runCliInProcess(['plan', ...args]);

const planJson = (...args: string[]) => runCliJson<Plan>(['plan', ...args, '--json']);

function nodesYaml(dir: string, name: string, nodes: { gib: number; gbps: number; device?: string; address?: string }[]): string {
  const file = path.join(dir, name);
  fs.writeFileSync(file, `nodes:\n${nodes.map((n, i) => `  - name: n${i}\n    address: ${n.address ?? `10.0.0.${i + 1}:50051`}\n` +
    `    memory_gib: ${n.gib}\n    device: ${n.device ?? 'cpu'}\n    gbps: ${n.gbps}\n`).join('')}`);
  return file;
}

describe('turbosparse plan', () => {
  let dir: string;
  let modelDir: string;

  beforeAll(async () => {
    dir = fs.mkdtempSync(path.join(os.tmpdir(), 'ts-plan-cli-'));
    modelDir = path.join(dir, 'model');
    await makeDemoModel(modelDir, { layers: 2, hidden: 64, intermediate: 128, heads: 4, kvHeads: 2, experts: 4, topK: 2, vocab: 300,
      predictorRank: 16, shards: 1, dtype: 'bf16', seed: 3, activeFraction: 0.2 });
  });
  afterAll(() => fs.rmSync(dir, { recursive: true, force: true }));

  test('a demo model folder: fit table, map, and predictions per concurrency and link', async () => {
    const nodes = nodesYaml(dir, 'two.yaml', [{ gib: 1, gbps: 5 }, { gib: 1, gbps: 5 }]);
    const text = await plan('--model', modelDir, '--nodes-file', nodes, '--link', '1gbe', '--concurrency', '1,16');
    expect(text.error).toBeUndefined();
    expect(text.stdout).toMatch(/2 layers x 4 experts \(top-2\), hidden 64, intermediate 128, weights bf16/);
    expect(text.stdout).toMatch(/^n0 .* yes$/m);
    expect(text.stdout).toMatch(/fits: every node holds its experts/);
    expect(text.stdout).toMatch(/link: 1gbe \(100 us one way, 1000 Mbit\/s\)/);
    expect(text.stdout).toMatch(/^\s+16\s+\d+\.\d/m);

    const p = await planJson('--model', modelDir, '--nodes-file', nodes, '--link', '1gbe', '--concurrency', '1,16');
    expect(p.fits).toBe(true);
    expect(p.model.configOnly).toBe(false);
    // Exact bytes from the folder: 2 layers x 4 experts of 3 x 64 x 128 bf16.
    expect(p.model.expertBytes).toBe(8 * expertBytes(64, 128, 'bf16'));
    expect(p.map.source).toMatch(/^placement/);
    expect(p.nodes.map((n) => n.pairs)).toEqual([4, 4]);
    expect(p.model.activeFraction).toBe(0.2); // the demo model's own, from its config
    expect(p.predictions.map((s) => s.concurrency)).toEqual([1, 16]);
    for (const s of p.predictions) {
      expect(s.stepMs).toBeCloseTo(s.coordinatorMs + s.linkMs + s.callOverheadMs + s.expertMs, 9);
      expect(s.tokensPerS).toBeCloseTo(s.concurrency / (s.stepMs / 1000), 6);
      expect(s.linkMs).toBeGreaterThan(2 * 2 * 0.1 - 1e-9); // 2 layers x a 200 µs round trip at least
    }
    // The same plan over loopback: no link time, faster; a wifi link: slower.
    const loop = await planJson('--model', modelDir, '--nodes-file', nodes, '--link', 'loopback', '--concurrency', '1');
    const wifi = await planJson('--model', modelDir, '--nodes-file', nodes, '--link', 'wifi', '--concurrency', '1');
    expect(loop.predictions[0].linkMs).toBe(0);
    expect(loop.predictions[0].tokensPerS).toBeGreaterThan(p.predictions[0].tokensPerS);
    expect(wifi.predictions[0].tokensPerS).toBeLessThan(p.predictions[0].tokensPerS);
    // The software costs can be overridden (what-if: a faster host): no call overhead at all.
    const lean = await planJson('--model', modelDir, '--nodes-file', nodes, '--link', '1gbe', '--concurrency', '1',
      '--call-overhead-us', '0', '--call-ns-per-byte', '0', '--coordinator-layer-us', '0', '--node-call-us', '0');
    expect(lean.predictions[0].callOverheadMs).toBe(0);
    expect(lean.predictions[0].expertMs).toBeLessThan(p.predictions[0].expertMs);
    expect(lean.predictions[0].linkMs).toBeCloseTo(p.predictions[0].linkMs, 9);
    expect(p.predictions[0].coordinatorMs - lean.predictions[0].coordinatorMs).toBeCloseTo((2 * COST_CONSTANTS.coordinatorLayerUs) / 1000, 9);
    // int8 weights hold about half the bytes.
    const i8 = await planJson('--model', modelDir, '--nodes-file', nodes, '--link', '1gbe', '--weights', 'int8');
    expect(i8.model.expertBytes).toBe(8 * expertBytes(64, 128, 'i8'));
  });

  test('the 47B config.json alone: does not fit 2 x 24 GiB at bf16, fits 4 x 24 GiB at bf16 and 2 x 24 GiB at int8', async () => {
    const two = nodesYaml(dir, 'gpu2.yaml', [{ gib: 24, gbps: 600, device: 'cuda' }, { gib: 24, gbps: 600, device: 'cuda' }]);
    const four = nodesYaml(dir, 'gpu4.yaml', Array.from({ length: 4 }, () => ({ gib: 24, gbps: 600, device: 'cuda' })));
    const r = await plan('--model', CONFIG_47B, '--nodes-file', two, '--link', '10gbe');
    expect(r.error).toBeUndefined();
    expect(r.stdout).toMatch(/config\.json only/);
    expect(r.stdout).toMatch(/32 layers x 8 experts \(top-2\), hidden 4096, intermediate 14336, weights bf16/);
    expect(r.stdout).toMatch(/DOES NOT FIT: n0, n1 would hold more than its memory/);
    expect(r.stdout).toMatch(/^n0 .* NO \(\d+\.\d\d GiB over\)$/m);

    const bf16 = await planJson('--model', CONFIG_47B, '--nodes-file', two, '--link', '10gbe');
    expect(bf16.model.expertBytes).toBe(256 * 3 * 4096 * 14336 * 2);
    expect(bf16.model.predictorRanks).toMatch(/1024 \(assumed/);
    expect(bf16.fits).toBe(false);
    expect(bf16.map.source).toMatch(/^balanced by bytes \(the placement refuses: the experts need 84\.00 GiB but the nodes hold 48\.00 GiB/);
    expect(bf16.nodes[0].bytes).toBeCloseTo(bf16.model.expertBytes / 2, 0);

    const fits4 = await planJson('--model', path.dirname(CONFIG_47B), '--nodes-file', four, '--link', '10gbe');
    expect(fits4.fits).toBe(true);
    expect(Math.max(...fits4.nodes.map((n) => n.bytes)) / GiB).toBeLessThan(24);

    const int8 = await planJson('--model', CONFIG_47B, '--nodes-file', two, '--link', '10gbe', '--weights', 'int8');
    expect(int8.fits).toBe(true);
    // 10 GbE is faster than 1 GbE for the same nodes; both predict a positive rate.
    const slow = await planJson('--model', CONFIG_47B, '--nodes-file', two, '--link', '1gbe', '--weights', 'int8');
    expect(slow.predictions[0].tokensPerS).toBeGreaterThan(0);
    expect(slow.predictions[0].tokensPerS).toBeLessThan(int8.predictions[0].tokensPerS);
  });

  test('one-line errors: bad nodes.yaml, link, model, flags', async () => {
    const good = nodesYaml(dir, 'good.yaml', [{ gib: 1, gbps: 5 }]);
    const noGbps = path.join(dir, 'no-gbps.yaml');
    fs.writeFileSync(noGbps, 'nodes:\n  - name: a\n    address: 10.0.0.1:50051\n    memory_gib: 4\n');
    const badAddress = nodesYaml(dir, 'bad-address.yaml', [{ gib: 1, gbps: 5, address: 'nohost' }]);
    const expectUserError = async (re: RegExp, ...args: string[]) => {
      const r = await plan(...args);
      expect(r.error).toBeInstanceOf(UserError);
      const msg = (r.error as Error).message;
      expect(msg).toMatch(re);
      expect(msg).not.toMatch(/\n/);
    };
    await expectUserError(/--nodes-file .*no-gbps\.yaml: nodes\.0\.gbps/, '--model', modelDir, '--nodes-file', noGbps, '--link', '1gbe');
    await expectUserError(/nodes\.0\.address "nohost" is not host:port/, '--model', modelDir, '--nodes-file', badAddress, '--link', '1gbe');
    await expectUserError(/--nodes-file .*missing\.yaml: cannot read it/, '--model', modelDir, '--nodes-file', path.join(dir, 'missing.yaml'), '--link', '1gbe');
    await expectUserError(/--link "5g": expected loopback, 10gbe, 1gbe, wifi or DELAY_US:MBIT/, '--model', modelDir, '--nodes-file', good, '--link', '5g');
    await expectUserError(/--model .*nowhere: no such file or folder/, '--model', path.join(dir, 'nowhere'), '--nodes-file', good, '--link', '1gbe');
    const badConfig = path.join(dir, 'bad-config.json');
    fs.writeFileSync(badConfig, JSON.stringify({ hidden_size: 64 }));
    await expectUserError(/bad-config\.json: field 'intermediate_size' is missing/, '--model', badConfig, '--nodes-file', good, '--link', '1gbe');
    await expectUserError(/--replicas 2 needs at least 2 nodes/, '--model', modelDir, '--nodes-file', good, '--link', '1gbe', '--replicas', '2');

    const expectFlagError = async (re: RegExp, ...args: string[]) => {
      const r = await plan(...args);
      expect(r.error).toBeInstanceOf(CommanderError);
      expect(r.stderr.trim()).toMatch(re);
      expect(r.stderr.trim()).not.toMatch(/\n/);
    };
    await expectFlagError(/--concurrency must be positive integers/, '--model', modelDir, '--nodes-file', good, '--link', '1gbe', '--concurrency', '1,0');
    await expectFlagError(/--coordinator-gbps must be a number > 0/, '--model', modelDir, '--nodes-file', good, '--link', '1gbe', '--coordinator-gbps', 'fast');
    await expectFlagError(/--wire must be one of f32, bf16, int8/, '--model', modelDir, '--nodes-file', good, '--link', '1gbe', '--wire', 'fp8');
    await expectFlagError(/--call-ns-per-byte must be a number >= 0/, '--model', modelDir, '--nodes-file', good, '--link', '1gbe', '--call-ns-per-byte', '-1');
    await expectFlagError(/--weights must be one of/, '--model', modelDir, '--nodes-file', good, '--link', '1gbe', '--weights', 'q4');
    await expectFlagError(/required option '--nodes-file <file>' not specified/, '--model', modelDir, '--link', '1gbe');
  });
});
