// Many deadlines on one timer (core/due-timers.ts): each entry runs once, at or after its time, in time order;
// a cancelled one never runs; entries added while armed for a later time re-arm earlier.
import { DueTimers } from '../../core/due-timers';

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

test('each entry runs once, not before its time; cancelled ones never', async () => {
  const timers = new DueTimers();
  const t0 = performance.now();
  const ran: Array<[string, number]> = [];
  const at = (name: string) => () => ran.push([name, performance.now() - t0]);
  timers.after(60, at('late'));
  timers.after(20, at('early')); // earlier than the armed time: re-arms
  const cancelled = timers.after(30, at('cancelled'));
  timers.after(40, at('middle'));
  timers.cancel(cancelled);
  expect(timers.size).toBe(3);
  await sleep(150);
  expect(ran.map(([n]) => n)).toEqual(['early', 'middle', 'late']);
  const want: Record<string, number> = { early: 20, middle: 40, late: 60 };
  for (const [name, ms] of ran) expect(ms).toBeGreaterThanOrEqual(want[name] - 1);
  expect(timers.size).toBe(0);
});

test('entries that end in time leave no work; a later one still fires after an earlier one was cancelled', async () => {
  const timers = new DueTimers();
  let fired = 0;
  for (let i = 0; i < 1000; i++) timers.cancel(timers.after(10 + i / 100, () => fired++));
  const last = timers.after(25, () => fired += 1000);
  await sleep(80);
  expect(fired).toBe(1000);
  expect(timers.size).toBe(0);
  timers.cancel(last); // after it ran: nothing
});

test('clear() drops every entry', async () => {
  const timers = new DueTimers();
  let fired = 0;
  timers.after(5, () => fired++);
  timers.after(10, () => fired++);
  timers.clear();
  await sleep(40);
  expect(fired).toBe(0);
  expect(timers.size).toBe(0);
});

test('a callback scheduled from a callback runs too', async () => {
  const timers = new DueTimers();
  const order: number[] = [];
  timers.after(5, () => {
    order.push(1);
    timers.after(5, () => order.push(2));
  });
  await sleep(60);
  expect(order).toEqual([1, 2]);
});
