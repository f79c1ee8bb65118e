// Heavy calls run on the thread pool: timers and setImmediate keep firing
// while a big matmul is in flight, and calls queued on one backend wait their
// turn without occupying the pool that fs shares.
import fs from 'node:fs';
import { native, type NativeBackend } from '../../core/native';
import { hostMatrix, randomF32 } from './helpers';

let backend: NativeBackend;
beforeAll(() => {
  // One kernel thread: on a 2-core machine two busy kernel threads can starve the JS thread
  // at the OS level, which says nothing about whether compute left the event loop.
  backend = native().createBackend('cpu', 1);
});
afterAll(() => backend.close());

test('the event loop stays responsive during a big matmul', async () => {
  const ROWS = 2048;
  const COLS = 4096;
  const N = 256; // 2 G multiply-adds: far longer than a few timer ticks on any CPU
  const w = await backend.createWeight(hostMatrix(randomF32(ROWS * COLS, 1), ROWS, COLS).m, 'f32');
  const x = randomF32(N * COLS, 2);
  const y = new Float32Array(N * ROWS);

  // Compute on the JS thread would block the loop every time; a loaded CI machine can starve the JS
  // thread for one whole call at the OS level: the best of three calls counts.
  let best = { timerTicks: 0, immediates: 0, ms: 0 };
  for (let attempt = 0; attempt < 3 && (best.timerTicks === 0 || best.immediates <= 1); attempt++) {
    let done = false;
    let timerTicks = 0;
    let immediates = 0;
    const interval = setInterval(() => {
      if (!done) timerTicks++;
    }, 1);
    const spin = (): void => {
      if (done) return;
      immediates++;
      setImmediate(spin);
    };
    setImmediate(spin);
    const t0 = Date.now();
    await backend.matmul(w, N, x, y).finally(() => {
      done = true;
    });
    clearInterval(interval);
    if (timerTicks > 0 && immediates > best.immediates) best = { timerTicks, immediates, ms: Date.now() - t0 };
  }
  expect(best.timerTicks).toBeGreaterThan(0);
  expect(best.immediates).toBeGreaterThan(1);
  // eslint-disable-next-line no-console
  console.log(`matmul ${ROWS}x${COLS} n=${N}: ${best.ms} ms, ${best.timerTicks} timer ticks, ${best.immediates} immediates`);
  w.free();
});

test('calls on one backend run in call order and leave the thread pool to fs', async () => {
  const ROWS = 2048;
  const COLS = 4096;
  const N = 128; // each call far longer than reading a small file
  const CALLS = 6; // more than libuv's 4 pool threads
  const w = await backend.createWeight(hostMatrix(randomF32(ROWS * COLS, 3), ROWS, COLS).m, 'f32');
  const x = randomF32(N * COLS, 4);
  const order: number[] = [];
  const calls = Array.from({ length: CALLS }, (_, i) =>
    backend.matmul(w, N, x, new Float32Array(N * ROWS)).then(() => {
      order.push(i);
    }),
  );
  // fs work queued after all six still gets a pool thread at once.
  await fs.promises.readFile(__filename);
  const doneWhenFsFinished = order.length;
  await Promise.all(calls);
  expect(doneWhenFsFinished).toBeLessThanOrEqual(1);
  expect(order).toEqual([0, 1, 2, 3, 4, 5]);
  w.free();
});
