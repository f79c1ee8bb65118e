// Many deadlines on one timer. Every node call has a deadline and most have a
// hedge time; a setTimeout per call cost two timer-list creations and removals
// per call (each call ends before its timer, and Node drops an emptied list),
// ~25 us a layer on the coordinator's profile. Here the timer stays armed for
// the earliest time still wanted; a call that ends in time only leaves the set,
// and a timer that fires with nothing due re-arms for the next entry or stops.

/** One scheduled callback; pass it to cancel(). */
export interface Due {
  readonly at: number;
  readonly fn: () => void;
}

export class DueTimers {
  private readonly due = new Set<Due>();
  private timer: NodeJS.Timeout | null = null;
  private armedAt = Infinity;

  constructor(private readonly now: () => number = () => performance.now()) {}

  /**
   * Runs `fn` once `ms` have passed unless cancelled first. It runs from a
   * setImmediate after the timer: after a busy spell of this process timers run
   * before sockets are read, and an answer that arrived in time goes first.
   */
  after(ms: number, fn: () => void): Due {
    const d: Due = { at: this.now() + ms, fn };
    this.due.add(d);
    if (d.at < this.armedAt) this.arm(d.at);
    return d;
  }

  cancel(d: Due | undefined): void {
    if (d) this.due.delete(d);
  }

  /** Entries not yet run nor cancelled. */
  get size(): number {
    return this.due.size;
  }

  /** Drops every entry and the timer. */
  clear(): void {
    this.due.clear();
    if (this.timer) clearTimeout(this.timer);
    this.timer = null;
    this.armedAt = Infinity;
  }

  private arm(at: number): void {
    if (this.timer) clearTimeout(this.timer);
    this.armedAt = at;
    // whole milliseconds, at least 1: Node keeps one list per duration
    this.timer = setTimeout(() => setImmediate(() => this.fire()), Math.max(1, Math.ceil(at - this.now())));
    // the calls it guards keep their sockets, and so the process, alive; a lingering timer must not
    this.timer.unref();
  }

  private fire(): void {
    this.timer = null;
    this.armedAt = Infinity;
    const now = this.now();
    const ready: Due[] = [];
    let next = Infinity;
    for (const d of this.due) {
      if (d.at <= now) ready.push(d);
      else if (d.at < next) next = d.at;
    }
    for (const d of ready) this.due.delete(d);
    if (next < Infinity) this.arm(next);
    for (const d of ready) d.fn();
  }
}
