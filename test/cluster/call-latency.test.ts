// The latency window behind a node call's deadline and hedge delay (coordinator/call-latency.ts).
import {
  type CallPolicy, callDeadlineMs, classMinRows, DEFAULT_CALL_POLICY, hedgeDelayMs, LatencyWindow, quantile, sizeClass,
} from '../../coordinator/call-latency';

const policy: CallPolicy = { ...DEFAULT_CALL_POLICY, ceilingMs: 30_000 };

test('size classes: 1 row, then powers of two', () => {
  expect([1, 2, 3, 4, 5, 8, 9, 256, 257].map(sizeClass)).toEqual([0, 1, 2, 2, 3, 3, 4, 8, 9]);
  expect([0, 1, 2, 3, 9].map(classMinRows)).toEqual([1, 2, 3, 5, 257]);
  // Every row count lies in its class's range.
  for (let rows = 1; rows < 600; rows++) {
    const c = sizeClass(rows);
    expect(rows).toBeGreaterThanOrEqual(classMinRows(c));
    expect(rows).toBeLessThan(classMinRows(c + 1));
  }
});

test('quantile is nearest-rank', () => {
  const v = Array.from({ length: 100 }, (_, i) => 100 - i); // 100..1, unsorted
  expect(quantile(v, 0.99)).toBe(99);
  expect(quantile(v, 0.5)).toBe(50);
  expect(quantile([7], 0.99)).toBe(7);
  // The top rank (the maximum) and a lower one agree with a full sort, also with negative values and ties.
  const r = Array.from({ length: 64 }, (_, i) => ((i * 37) % 64) - 20.5);
  const sorted = [...r].sort((a, b) => a - b);
  expect(quantile(r, 0.99)).toBe(sorted[63]);
  expect(quantile(r, 1)).toBe(sorted[63]);
  expect(quantile(r, 0.9)).toBe(sorted[Math.ceil(0.9 * 64) - 1]);
  expect(quantile([3, 3, 3], 0.99)).toBe(3);
});

test('nothing known: no expectation, the ceiling is the deadline and there is no hedge', () => {
  const w = new LatencyWindow();
  expect(w.expectedMs(1)).toBeNull();
  for (let i = 0; i < policy.minSamples - 1; i++) w.add(1, 2);
  expect(w.expectedMs(1)).toBeNull(); // too few samples
  expect(callDeadlineMs(null, policy)).toBe(30_000);
  expect(hedgeDelayMs(null, policy)).toBeNull();
});

test('a class\'s p99 over its recent window; old samples leave it', () => {
  const w = new LatencyWindow({ minSamples: 8, window: 64 });
  for (let i = 0; i < 64; i++) w.add(1, 100);
  expect(w.expectedMs(1)).toBe(100);
  for (let i = 0; i < 63; i++) w.add(1, 2);
  expect(w.expectedMs(1)).toBe(100); // one slow call still in the window is its p99
  w.add(1, 2);
  expect(w.expectedMs(1)).toBe(2);
  // Mostly 2 ms with one 9 ms outlier in 64: nearest-rank p99 of 64 samples is their maximum.
  w.add(1, 9);
  expect(w.expectedMs(1)).toBe(9);
});

test('prefill rows are judged by their own class, a larger one, or a smaller one scaled up (never a decode call\'s p99)', () => {
  const w = new LatencyWindow({ minSamples: 8, window: 64 });
  for (let i = 0; i < 8; i++) w.add(1, 3);
  // 100 rows (class 7, 65..128 rows) with only 1-row calls known: 3 ms x 100 / 1.
  expect(w.expectedMs(100)).toBeCloseTo(300, 6);
  for (let i = 0; i < 8; i++) w.add(4, 5); // class 2 (3..4 rows)
  expect(w.expectedMs(100)).toBeCloseTo(5 * 100 / 3, 6);
  expect(w.expectedMs(3)).toBe(5);
  // A class with no samples of its own takes the nearest larger known class as it is.
  expect(w.expectedMs(2)).toBe(5);
  for (let i = 0; i < 8; i++) w.add(200, 40); // class 8
  expect(w.expectedMs(100)).toBe(40);
  expect(w.expectedMs(300)).toBeCloseTo(40 * 300 / 129, 6);
  expect(w.expectedMs(1)).toBe(3);
});

test('deadline = clamp(k x p99, floor, ceiling); hedge after the p99, at least its floor', () => {
  expect(callDeadlineMs(3, policy)).toBe(policy.floorMs);
  expect(callDeadlineMs(400, policy)).toBe(1600);
  expect(callDeadlineMs(20_000, policy)).toBe(30_000);
  expect(callDeadlineMs(400, { ...policy, ceilingMs: 1000 })).toBe(1000);
  expect(hedgeDelayMs(0.4, policy)).toBe(policy.hedgeFloorMs);
  expect(hedgeDelayMs(40, policy)).toBe(40);
  // A decode call measured on loopback: the hung node is given up well under 2 s.
  expect(callDeadlineMs(30, policy)).toBeLessThan(2000);
});
