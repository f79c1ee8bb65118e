// benchModelDir: a bench's model written once per shape, layer count and router skew (bench/placement.ts
// uses the skew; the cluster benches the plain model).
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { makeDemoModel } from '../../core/demo-model';
import { BENCH_SHAPES, benchModelDir } from '../../bench/bench-shapes';

// A tiny shape of our own (the real ones are hundreds of MB), named per process so runs do not share it.
const SHAPE = `test-tiny-${process.pid}`;
const DIR = `turbosparse-bench-test-tiny-${process.pid}`;
let ref: string;

beforeAll(() => {
  BENCH_SHAPES[SHAPE] = {
    dir: DIR,
    opts: { hidden: 64, intermediate: 128, heads: 4, kvHeads: 2, experts: 4, topK: 2, vocab: 300, predictorRank: 16, shards: 1, dtype: 'bf16', seed: 3 },
  };
  ref = fs.mkdtempSync(path.join(os.tmpdir(), 'ts-bench-shapes-ref-'));
});

afterAll(() => {
  delete BENCH_SHAPES[SHAPE];
  for (const d of fs.readdirSync(os.tmpdir()).filter((n) => n.startsWith(DIR))) fs.rmSync(path.join(os.tmpdir(), d), { recursive: true, force: true });
  fs.rmSync(ref, { recursive: true, force: true });
});

const files = (dir: string) => fs.readdirSync(dir).sort();
function expectSameFiles(a: string, b: string): void {
  expect(files(a)).toEqual(files(b));
  for (const f of files(a)) expect(fs.readFileSync(path.join(a, f)).equals(fs.readFileSync(path.join(b, f)))).toBe(true);
}

test('the router skew is written into the model, in its own folder; skew 0 is the plain model', async () => {
  const lines: string[] = [];
  const log = (l: string) => lines.push(l);
  const plain = await benchModelDir(SHAPE, 2, log);
  const skewed = await benchModelDir(SHAPE, 2, log, { routerSkew: 1.5 });
  expect(plain).toBe(path.join(os.tmpdir(), `${DIR}-2l`));
  expect(skewed).toBe(path.join(os.tmpdir(), `${DIR}-skew1.5-2l`));
  expect(lines).toEqual([
    `writing a ${SHAPE}-shaped 2-layer random bf16 model to ${plain} (once)`,
    `writing a ${SHAPE}-shaped 2-layer random bf16 model with router skew 1.5 to ${skewed} (once)`,
  ]);

  // Byte for byte what make-demo-model writes with the same options.
  const refSkewed = path.join(ref, 'skewed');
  await makeDemoModel(refSkewed, { ...BENCH_SHAPES[SHAPE].opts, layers: 2, routerSkew: 1.5 });
  expectSameFiles(skewed, refSkewed);
  const refPlain = path.join(ref, 'plain');
  await makeDemoModel(refPlain, { ...BENCH_SHAPES[SHAPE].opts, layers: 2 });
  expectSameFiles(plain, refPlain);
  // The skew changes the weights (the routers), so the two folders must differ.
  expect(files(plain).some((f) => !fs.readFileSync(path.join(plain, f)).equals(fs.readFileSync(path.join(skewed, f))))).toBe(true);

  // Written once: later calls (skew 0 included) reuse the folders without writing.
  expect(await benchModelDir(SHAPE, 2, log, { routerSkew: 0 })).toBe(plain);
  expect(await benchModelDir(SHAPE, 2, log, { routerSkew: 1.5 })).toBe(skewed);
  expect(lines).toHaveLength(2);
}, 60_000);
