// How long a node call may take: each node keeps a rolling window of its
// recent successful round trips, one per size class (rows in the message,
// by powers of two: a 256-row prefill chunk must not be judged by 1-row decode
// calls). From the window's p99 come the hedge delay (past it a replica gets
// the same request) and the deadline (past it the node is failed over).

export interface CallPolicy {
  /** The flag --call-timeout-ms: the deadline's ceiling, and the deadline while nothing is measured. */
  ceilingMs: number;
  /** deadline = clamp(k x expected, floorMs, ceilingMs). */
  k: number;
  floorMs: number;
  /** A hedge is sent no sooner than this after the call (timer noise must not double every call). */
  hedgeFloorMs: number;
  /** Samples a size class needs before its p99 is trusted. */
  minSamples: number;
  /** Recent samples kept per size class. */
  window: number;
}

export const DEFAULT_CALL_POLICY: Omit<CallPolicy, 'ceilingMs'> = { k: 4, floorMs: 500, hedgeFloorMs: 5, minSamples: 8, window: 64 };

/** 0 for 1 row, else ceil(log2(rows)): class c holds 2^(c-1)+1 .. 2^c rows. */
export function sizeClass(rows: number): number {
  return rows <= 1 ? 0 : Math.ceil(Math.log2(rows));
}

/** The fewest rows a message of class `c` has. */
export function classMinRows(c: number): number {
  return c === 0 ? 1 : 2 ** (c - 1) + 1;
}

/**
 * Nearest-rank quantile of unsorted values. Asked on every node call: the top rank (a p99 of up to 100
 * values, as the latency windows hold) is the maximum, found without copying or sorting.
 */
export function quantile(values: ArrayLike<number>, q: number): number {
  const rank = Math.min(values.length - 1, Math.max(0, Math.ceil(q * values.length) - 1));
  if (rank === values.length - 1) {
    let max = values[0];
    for (let i = 1; i < values.length; i++) if (values[i] > max) max = values[i];
    return max;
  }
  return Float64Array.from(values).sort()[rank];
}

class Ring {
  readonly values: number[] = [];
  private next = 0;
  constructor(private readonly size: number) {}
  add(v: number): void {
    if (this.values.length < this.size) this.values.push(v);
    else this.values[this.next] = v;
    this.next = (this.next + 1) % this.size;
  }
}

/** One node's round trips, per size class. */
export class LatencyWindow {
  private readonly classes = new Map<number, Ring>();

  constructor(private readonly policy: Pick<CallPolicy, 'minSamples' | 'window'> = DEFAULT_CALL_POLICY) {}

  add(rows: number, ms: number): void {
    const c = sizeClass(rows);
    let ring = this.classes.get(c);
    if (!ring) this.classes.set(c, (ring = new Ring(this.policy.window)));
    ring.add(ms);
  }

  /**
   * The p99 round trip expected for a message of `rows` rows: its own class's;
   * else the nearest larger class's (more rows take no less time); else the
   * nearest smaller class's scaled by the row ratio (an overestimate: the
   * fixed cost is scaled too). Null while nothing is known.
   */
  expectedMs(rows: number): number | null {
    const c = sizeClass(rows);
    const p99 = (k: number) => {
      const ring = this.classes.get(k);
      return ring && ring.values.length >= this.policy.minSamples ? quantile(ring.values, 0.99) : null;
    };
    const own = p99(c);
    if (own !== null) return own;
    const known = [...this.classes.keys()].filter((k) => p99(k) !== null);
    const larger = known.filter((k) => k > c).sort((a, b) => a - b)[0];
    if (larger !== undefined) return p99(larger);
    const smaller = known.filter((k) => k < c).sort((a, b) => b - a)[0];
    if (smaller !== undefined) return p99(smaller)! * (rows / classMinRows(smaller));
    return null;
  }
}

/** A call's deadline: clamp(k x expected, floor, ceiling); the ceiling while nothing is known. */
export function callDeadlineMs(expected: number | null, p: CallPolicy): number {
  if (expected === null) return p.ceilingMs;
  return Math.min(p.ceilingMs, Math.max(p.floorMs, p.k * expected));
}

/** When to hedge a call still unanswered: past the expected p99 (at least the floor); null: never (nothing known). */
export function hedgeDelayMs(expected: number | null, p: CallPolicy): number | null {
  return expected === null ? null : Math.max(p.hedgeFloorMs, expected);
}
