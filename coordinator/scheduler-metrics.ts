// The scheduler's gauges and counters. Gauges read a stats getter when collected, so this
// module knows nothing of the Scheduler itself.
import type { Registry } from '../core/metrics';

/**
 * Sequences in the batch now / waiting; bytes of KV cache running sequences hold, and
 * finished ones kept for their prefixes; preemptions so far.
 */
export interface SchedulerStats {
  running: number;
  waiting: number;
  kvBytes: number;
  kvBudget: number;
  prefixCacheBytes: number;
  preemptions: number;
}

/** Registers the scheduler's instruments in reg; returns the counters and histograms it updates. */
export function schedulerMetrics(reg: Registry, stats: () => SchedulerStats) {
  reg.gauge({
    name: 'turbosparse_scheduler_running_sequences',
    help: 'Sequences in the continuous batch',
    collect: (g) => g.set(undefined, stats().running),
  });
  reg.gauge({
    name: 'turbosparse_scheduler_waiting_requests',
    help: 'Sequences waiting for KV-cache budget',
    collect: (g) => g.set(undefined, stats().waiting),
  });
  reg.gauge({
    name: 'turbosparse_kv_cache_reserved_bytes',
    help: 'KV-cache bytes held by running sequences',
    collect: (g) => g.set(undefined, stats().kvBytes),
  });
  reg.gauge({
    name: 'turbosparse_prefix_cache_bytes',
    help: 'KV-cache bytes of finished sequences kept for their prefixes (evicted when running ones need room)',
    collect: (g) => g.set(undefined, stats().prefixCacheBytes),
  });
  reg.gauge({
    name: 'turbosparse_kv_cache_budget_bytes',
    help: 'KV-cache budget of the scheduler',
    collect: (g) => g.set(undefined, stats().kvBudget),
  });
  const m = {
    tokens: reg.counter({ name: 'turbosparse_generated_tokens_total', help: 'Tokens generated' }),
    finished: reg.counter({ name: 'turbosparse_sequences_finished_total', help: 'Sequences ended, by reason', labelNames: ['reason'] }),
    rejected: reg.counter({ name: 'turbosparse_queue_full_rejections_total', help: 'Requests rejected because the wait queue was full' }),
    stepErrors: reg.counter({ name: 'turbosparse_step_errors_total', help: 'Engine steps that failed' }),
    specDraft: reg.counter({ name: 'turbosparse_spec_draft_tokens_total', help: 'Speculative decoding: proposed tokens verified' }),
    specAccepted: reg.counter({ name: 'turbosparse_spec_accepted_tokens_total', help: 'Speculative decoding: proposed tokens the model kept' }),
    prefixQueried: reg.counter({
      name: 'turbosparse_prefix_cache_queried_tokens_total',
      help: 'Prompt tokens of sequences starting (the prefix cache was asked for them)',
    }),
    prefixHit: reg.counter({
      name: 'turbosparse_prefix_cache_hit_tokens_total',
      help: 'Prompt tokens copied from the prefix cache instead of computed',
    }),
    preemptions: reg.counter({
      name: 'turbosparse_scheduler_preemptions_total',
      help: 'Running sequences whose KV cache was freed for an older one (they recompute when readmitted)',
    }),
    stepSeconds: reg.histogram({ name: 'turbosparse_step_seconds', help: 'Wall time of one batched engine step' }),
    stepRows: reg.histogram({
      name: 'turbosparse_step_rows',
      help: 'Token rows in one engine step',
      buckets: [1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1024],
    }),
    ttft: reg.histogram({ name: 'turbosparse_time_to_first_token_seconds', help: 'Submit to first generated token' }),
  };
  // Exported as 0 from the start (rates and the hit share need a series before the first event).
  for (const c of [m.prefixQueried, m.prefixHit, m.preemptions, m.rejected, m.stepErrors]) c.labels();
  return m;
}
