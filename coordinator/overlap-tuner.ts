// `--overlap auto` decides by measuring. Two pipelined micro-batches hide the
// network behind the coordinator's compute, but each half re-reads the layer's
// weights (memory-bound kernels, on the coordinator and on every node), so
// whether overlap pays depends on the link, the nodes and the batch: on a slow
// link it wins, on loopback with every process on the same two cores it loses
// (bench/RESULTS.md). Results are bit-identical either way, so the engine can
// simply time steps both ways per batch size and keep the faster, trying the
// other way now and then in case conditions changed.

/** Per row-count bucket: smoothed step time of each way (index 0: one batch, 1: two micro-batches). */
interface Bucket {
  ms: [number, number];
  samples: [number, number];
  steps: number;
}

export interface OverlapTunerOptions {
  /** Steps measured each way before choosing (default 3). */
  warmup?: number;
  /** Every this many steps of a bucket, one step the other way (default 32). */
  exploreEvery?: number;
  /** Weight of a new sample in the smoothed time (default 0.2). */
  alpha?: number;
}

export class OverlapTuner {
  private readonly buckets = new Map<number, Bucket>();
  private readonly warmup: number;
  private readonly exploreEvery: number;
  private readonly alpha: number;

  constructor(opts: OverlapTunerOptions = {}) {
    this.warmup = opts.warmup ?? 3;
    this.exploreEvery = opts.exploreEvery ?? 32;
    this.alpha = opts.alpha ?? 0.2;
  }

  /** Micro-batches for a step of `rows` rows: 1 or 2. */
  choose(rows: number): 1 | 2 {
    if (rows < 2) return 1;
    const b = this.bucket(rows);
    b.steps++;
    if (b.samples[0] < this.warmup) return 1;
    if (b.samples[1] < this.warmup) return 2;
    const faster: 1 | 2 = b.ms[1] < b.ms[0] ? 2 : 1;
    return b.steps % this.exploreEvery === 0 ? (faster === 1 ? 2 : 1) : faster;
  }

  /** A step of `rows` rows run with `microBatches` took `ms` per row. */
  record(rows: number, microBatches: number, ms: number): void {
    if (rows < 2) return;
    const b = this.bucket(rows);
    const i = microBatches > 1 ? 1 : 0;
    const perRow = ms / rows;
    b.ms[i] = b.samples[i] === 0 ? perRow : b.ms[i] + this.alpha * (perRow - b.ms[i]);
    b.samples[i]++;
  }

  /** What the tuner has learned, per bucket (rows 2-3, 4-7, 8-15, ...): ms per row each way. */
  snapshot(): { rows: string; oneBatchMsPerRow: number | null; overlappedMsPerRow: number | null; using: 1 | 2 | null }[] {
    return [...this.buckets].sort((a, b) => a[0] - b[0]).map(([k, b]) => ({
      rows: `${2 ** k}-${2 ** (k + 1) - 1}`,
      oneBatchMsPerRow: b.samples[0] ? b.ms[0] : null,
      overlappedMsPerRow: b.samples[1] ? b.ms[1] : null,
      using: b.samples[0] >= this.warmup && b.samples[1] >= this.warmup ? (b.ms[1] < b.ms[0] ? 2 : 1) : null,
    }));
  }

  private bucket(rows: number): Bucket {
    const k = Math.floor(Math.log2(rows));
    let b = this.buckets.get(k);
    if (!b) this.buckets.set(k, (b = { ms: [0, 0], samples: [0, 0], steps: 0 }));
    return b;
  }
}
