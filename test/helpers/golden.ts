// Access to ../shared/golden: tests that need it skip with a message when it is absent.
import fs from 'node:fs';
import path from 'node:path';

export const GOLDEN_DIR = path.resolve(__dirname, '..', '..', '..', 'shared', 'golden');
export const TINY_A = path.join(GOLDEN_DIR, 'tiny-a');
export const TINY_A_MODEL = path.join(TINY_A, 'model');

export const haveGolden = fs.existsSync(path.join(TINY_A, 'golden.json'));

/** describe() that skips, saying why, when the golden folder is absent. */
export function describeGolden(name: string, fn: () => void): void {
  if (haveGolden) {
    describe(name, fn);
  } else {
    // jest runs a skipped describe's body to collect its tests; the body may read golden
    // files, so it is not run at all: one skipped test says why.
    describe(name, () => {
      test.skip(`skipped: golden data not found at ${GOLDEN_DIR}`, () => undefined);
    });
    // eslint-disable-next-line no-console
    console.warn(`skipping "${name}": golden data not found at ${GOLDEN_DIR}`);
  }
}

export interface GoldenPrompt {
  ids: number[];
  greedy: number[];
  experts: number[][][];
  route_weights: number[][][];
  active_neurons: number[][][];
  mean_active_fraction: number;
}

export function goldenJson(): { prompts: GoldenPrompt[]; tolerance: { logits_max_abs: number } } {
  return JSON.parse(fs.readFileSync(path.join(TINY_A, 'golden.json'), 'utf8'));
}
