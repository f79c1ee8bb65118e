// What one expert call did, as the coordinator saw it. A "call" is one message
// to one expert node for one layer of one step (or, with `--experts local`, one
// in-process runExperts): it carries every token routed to the experts that
// node holds. Both the tracing (a CLIENT span per call) and the metrics (per
// (layer, expert, node) histograms) are fed from this one record.
import type { ExpertBatch, ExpertOutput } from '../../core/expert-backend';
import { routedRowCount } from '../../core/routed-batch';

export interface ExpertCallRecord {
  layer: number;
  /** Node address or pod name; "local" for in-process experts. */
  node: string;
  /** Distinct expert ids in this call, ascending. */
  experts: number[];
  /** Routed (token, expert) slots per entry of `experts`. */
  slots: number[];
  /** Neurons computed per entry of `experts` (summed over its slots); empty when the call failed. */
  active: number[];
  /** Token rows sent (each once, however many of its experts live there). */
  tokens: number;
  /** Round trip, seconds. */
  seconds: number;
  /** As reported by the node (absent for local calls: all of it is compute). */
  queueUs?: number;
  computeUs?: number;
  /** Request and reply bytes on the wire (0 for local calls). */
  bytesIn: number;
  bytesOut: number;
  /** Row encoding on the wire: f32 | bf16 | int8 (local: "none"). */
  wire: string;
  /** Step id the call belongs to. */
  stepId?: number;
  /** Set when the call failed: a short code (gRPC status name, "TIMEOUT", ...). */
  error?: string;
  errorMessage?: string;
  /** This call was a retry on a replica after another node failed. */
  retry?: boolean;
  /** This call was a hedge: sent to a replica because another node's call of the same routes was late. */
  hedge?: boolean;
}

/** Per-expert routes ("slots") and active neurons of an ExpertBatch, for a call covering `experts` (or all, when omitted). */
export function summariseBatch(
  batch: ExpertBatch,
  result: ExpertOutput | undefined,
  onlyExperts?: readonly number[],
): { experts: number[]; slots: number[]; active: number[]; tokens: number } {
  const experts: number[] = [];
  const slots: number[] = [];
  const active: number[] = [];
  const covered = [];
  let j = 0; // this group's first route in `result.active` (group order)
  for (const g of batch.groups) {
    const n = g.rows.length;
    if (!onlyExperts || onlyExperts.includes(g.expert)) {
      covered.push(g);
      experts.push(g.expert);
      slots.push(n);
      if (result) {
        let a = 0;
        for (let i = j; i < j + n; i++) a += result.active[i];
        active.push(a);
      }
    }
    j += n;
  }
  return { experts, slots, active, tokens: routedRowCount(covered, batch.nRows) };
}
