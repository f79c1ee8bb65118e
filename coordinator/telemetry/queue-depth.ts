// Batch-queue depth as a gauge: the worker polls its BullMQ queue's job counts
// (an async Redis call, so not a collect() callback) into
// turbosparse_queue_jobs{state="waiting"|"active"|"delayed"|"prioritized"|"failed"}.
import { metrics as defaultRegistry, type Registry } from '../../core/metrics';

export const QUEUE_STATES = ['waiting', 'active', 'delayed', 'prioritized', 'failed'] as const;

/** Polls `getCounts` every `intervalMs` (and once now); a failed poll keeps the last values. */
export function watchQueueDepth(
  getCounts: (...states: string[]) => Promise<Record<string, number>>,
  registry: Registry = defaultRegistry,
  intervalMs = 5000,
): { stop(): void; poll(): Promise<void> } {
  const gauge = registry.gauge({ name: 'turbosparse_queue_jobs', help: 'Jobs in the batch queue, by state (polled)', labelNames: ['state'] });
  const poll = async (): Promise<void> => {
    try {
      const counts = await getCounts(...QUEUE_STATES);
      for (const state of QUEUE_STATES) gauge.labels({ state }).set(counts[state] ?? 0);
    } catch {
      /* Redis away for a moment: keep the last values */
    }
  };
  void poll();
  const timer = setInterval(() => void poll(), intervalMs);
  timer.unref();
  return { stop: () => clearInterval(timer), poll };
}
