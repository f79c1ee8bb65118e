// `--overlap auto` keeps whichever way (one batch, two micro-batches) measured faster per batch size.
import { OverlapTuner } from '../../coordinator/overlap-tuner';

/** Runs `steps` steps of `rows` rows where one batch takes `oneMs` and two micro-batches `twoMs`; returns the choices. */
function drive(t: OverlapTuner, rows: number, steps: number, oneMs: number, twoMs: number): number[] {
  const chosen: number[] = [];
  for (let i = 0; i < steps; i++) {
    const mb = t.choose(rows);
    chosen.push(mb);
    t.record(rows, mb, mb === 2 ? twoMs : oneMs);
  }
  return chosen;
}

test('measures both ways, then keeps the faster one, trying the other every exploreEvery steps', () => {
  const t = new OverlapTuner({ warmup: 3, exploreEvery: 10 });
  const c = drive(t, 16, 40, 100, 60);
  expect(c.slice(0, 6)).toEqual([1, 1, 1, 2, 2, 2]);
  const after = c.slice(6);
  expect(after.filter((m) => m === 1).length).toBe(4); // steps 10, 20, 30, 40 of the bucket explore
  expect(after.filter((m) => m === 2).length).toBe(30);
  expect(t.snapshot()).toEqual([{ rows: '16-31', oneBatchMsPerRow: 100 / 16, overlappedMsPerRow: 60 / 16, using: 2 }]);
});

test('keeps one batch when overlap is slower, per bucket; single rows never split', () => {
  const t = new OverlapTuner({ warmup: 2, exploreEvery: 1000 });
  expect(drive(t, 4, 20, 10, 14).slice(4)).toEqual(new Array(16).fill(1));
  expect(drive(t, 40, 20, 50, 30).slice(4)).toEqual(new Array(16).fill(2));
  expect(drive(t, 1, 5, 1, 1)).toEqual([1, 1, 1, 1, 1]);
  expect(t.snapshot().map((s) => [s.rows, s.using])).toEqual([['4-7', 1], ['32-63', 2]]);
});

test('follows a change: when overlap stops paying, exploring finds it', () => {
  const t = new OverlapTuner({ warmup: 3, exploreEvery: 4, alpha: 0.5 });
  drive(t, 8, 30, 100, 50);
  expect(t.snapshot()[0].using).toBe(2);
  const later = drive(t, 8, 60, 100, 200);
  expect(later.slice(-8).filter((m) => m === 1).length).toBeGreaterThanOrEqual(6);
  expect(t.snapshot()[0].using).toBe(1);
});
