// A bounded window of the latest samples and its nearest-rank quantiles: the "p50/p99 right now"
// of the per-node and per-expert tables (expert-stats.ts).

/** The last `cap` samples of a value. */
export class SampleWindow {
  private readonly buf: Float64Array;
  private next = 0;
  private size = 0;
  constructor(cap: number) {
    this.buf = new Float64Array(cap);
  }
  push(v: number): void {
    this.buf[this.next] = v;
    this.next = (this.next + 1) % this.buf.length;
    if (this.size < this.buf.length) this.size++;
  }
  get count(): number {
    return this.size;
  }
  /** Nearest-rank quantiles of the window, NaN when empty. */
  quantiles(qs: number[]): number[] {
    if (this.size === 0) return qs.map(() => NaN);
    const sorted = this.buf.slice(0, this.size).sort();
    return qs.map((q) => sorted[Math.min(this.size - 1, Math.max(0, Math.ceil(q * this.size) - 1))]);
  }
  mean(): number {
    if (this.size === 0) return NaN;
    let s = 0;
    for (let i = 0; i < this.size; i++) s += this.buf[i];
    return s / this.size;
  }
}
