// The scheduler's policy in one place: the order requests are admitted in, which running
// sequence gives its KV cache back when an older one needs room, and which sequences a step
// runs. The scheduler (coordinator/scheduler.ts) does the bookkeeping; these decide.

/** What the policy reads of a running sequence. */
export interface PolicySequence {
  /** Submission order: a smaller id was submitted earlier. */
  readonly id: number;
  /** Parked until another sequence has computed a shared prefix: not stepped. */
  readonly waitFor: unknown;
  readonly seq: { readonly pendingPrompt: number } | null;
}

/**
 * Admission order is submission order: inserts h before the first handle submitted after it
 * (a preempted sequence rejoins ahead of every newer request; lists stay in submission order).
 */
export function insertBySubmission<T extends { readonly id: number }>(list: T[], h: T): void {
  const at = list.findIndex((w) => w.id > h.id);
  list.splice(at < 0 ? list.length : at, 0, h);
}

/** The running sequence preempted when the KV budget (or native memory) is short: the newest. */
export function preemptionVictim<T>(running: readonly T[]): T | undefined {
  return running[running.length - 1];
}

/**
 * How many of these first-cache sizes would wait: they start in order while KV and slots last
 * (and nothing waits before them).
 */
export function queuedOf(sizes: number[], free: number, slots: number, noneWaiting: boolean): number {
  let queued = 0;
  for (const bytes of sizes) {
    if (noneWaiting && queued === 0 && bytes <= free && slots > 0) {
      free -= bytes;
      slots--;
    } else queued++;
  }
  return queued;
}

/**
 * Every decoding sequence plus prefilling ones within the prompt-token budget (the first
 * always, so a long prompt advances by one chunk per step).
 */
export function pickBatch<T extends PolicySequence>(running: readonly T[], prefillBudget: number): T[] {
  const batch: T[] = [];
  let budget = prefillBudget;
  let anyPrefill = false;
  for (const h of running) {
    if (h.waitFor) continue; // parked until its source has computed the shared prefix
    const pending = h.seq!.pendingPrompt;
    if (pending === 0) {
      batch.push(h);
      continue;
    }
    const take = Math.min(pending, prefillBudget);
    if (!anyPrefill || take <= budget) {
      batch.push(h);
      budget -= take;
      anyPrefill = true;
    }
  }
  return batch;
}
