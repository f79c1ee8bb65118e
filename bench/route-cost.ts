// How one sparse-FFN call's time grows with the routes k to one expert (issue 16: the placement's cost
// model). The bench's width (hidden 1024, intermediate 3584, bf16), one thread (an expert node's share
// of a small machine), experts rotated through more weights than the caches hold (as a node reads a model),
// each row with a fresh predictor-like mask of --active (15%); masks either independent per row or
// "--shared S": each neuron's own probability skewed so rows agree (hot neurons, as trained predictors).
// Per k: the median call time, the union of the call's masks (neurons touched at least once) and the
// routes' summed active neurons, and the fits time = a + b x k and time = c x union bytes.
//   node -r test/cluster/ts-register-cached.js bench/route-cost.ts [--reps 40] [--active 0.15]
import { maskBytes, native } from '../core/native';
import { quantile } from '../coordinator/call-latency';
import { randomBf16 } from './bench-shapes';
import { arg } from './models';

const median = (xs: number[]) => quantile(xs, 0.5);

async function main(): Promise<void> {
  const H = Number(arg('hidden', '1024'));
  const I = Number(arg('intermediate', '3584'));
  const reps = Number(arg('reps', '40'));
  const active = Number(arg('active', '0.15'));
  const ks = arg('k', '1,2,4,8,16').split(',').map(Number);
  const nb = native().createBackend('cpu', 1);
  let seed = 12345;
  const rand = () => { seed = (Math.imul(seed, 1103515245) + 12345) >>> 0; return (seed >>> 8) / 2 ** 24; };
  try {
    const count = Math.max(2, Math.ceil((320 << 20) / (3 * H * I * 2)));
    const experts = [];
    for (let e = 0; e < count; e++) experts.push(await nb.createExpert(randomBf16(I, H, 3 * e + 1), randomBf16(I, H, 3 * e + 2), randomBf16(H, I, 3 * e + 3), 'bf16'));
    const rb = maskBytes(I);
    // Per-neuron probabilities: independent = every neuron `active`; skewed = a quarter of the neurons
    // carry 60% of the activations (p 0.36), the rest 0.08: mean 0.15, rows agree more than chance.
    const probs = {
      independent: new Float64Array(I).fill(active),
      skewed: Float64Array.from({ length: I }, (_, j) => ((j * 2654435761) >>> 0) % 4 === 0 ? active * 2.4 : active * (0.4 / 0.75)),
    };
    const x = new Float32Array(16 * H).map((_, i) => Math.sin(i));
    const y = new Float32Array(16 * H);
    console.log(`route-cost ${new Date().toISOString()}: hidden ${H}, intermediate ${I}, bf16, 1 thread, ${count} experts rotated, active ${active}, ${reps} reps`);
    console.log('masks        k   median us  us/route  union frac  routes x frac  us / union MB');
    for (const [name, p] of Object.entries(probs)) {
      const rows: { k: number; us: number; union: number }[] = [];
      for (const k of ks) {
        const times: number[] = [];
        let unionSum = 0;
        for (let r = 0; r < reps + 3; r++) {
          const masks = new Uint8Array(k * rb);
          const union = new Uint8Array(I);
          for (let i = 0; i < k; i++) {
            for (let j = 0; j < I; j++) if (rand() < p[j]) { masks[i * rb + (j >> 3)] |= 1 << (j & 7); union[j] = 1; }
          }
          const call = [{ expert: experts[r % count], rows: Int32Array.from({ length: k }, (_, i) => i), weight: new Float32Array(k).fill(1 / k), masks }];
          const t0 = performance.now();
          await nb.moe('sparse', 16, H, x, call, y, null);
          if (r >= 3) { times.push((performance.now() - t0) * 1000); unionSum += union.reduce((a, b) => a + b, 0) / I; }
        }
        const us = median(times);
        const union = unionSum / reps;
        rows.push({ k, us, union });
        console.log(`${name.padEnd(11)} ${String(k).padStart(2)}  ${us.toFixed(0).padStart(10)}  ${(us / k).toFixed(0).padStart(8)}  ` +
          `${union.toFixed(3).padStart(10)}  ${(k * active).toFixed(2).padStart(13)}  ${(us / (union * 3 * H * I * 2 / 2 ** 20)).toFixed(0).padStart(13)}`);
      }
      // Least squares us = a + b k.
      const n = rows.length;
      const mk = rows.reduce((s, r) => s + r.k, 0) / n;
      const mu = rows.reduce((s, r) => s + r.us, 0) / n;
      const b = rows.reduce((s, r) => s + (r.k - mk) * (r.us - mu), 0) / rows.reduce((s, r) => s + (r.k - mk) ** 2, 0);
      console.log(`${name}: fit us = ${(mu - b * mk).toFixed(0)} + ${b.toFixed(0)} x k; k=1 -> 16: ${(rows[n - 1].us / rows[0].us).toFixed(2)}x the time for 16x the routes`);
    }
  } finally {
    nb.close();
  }
}

main().catch((e) => { process.stderr.write(`${e instanceof Error ? e.stack : e}\n`); process.exitCode = 1; });
