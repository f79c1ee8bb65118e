// status.json's `rebalance`: where the status JSON finds an engine's live
// rebalancing state (coordinator/rebalancer.ts registers it) without loading
// the rebalancer itself (gRPC, placement) into every process that draws status.
import type { Engine } from './engine';
import type { PairMove } from './remote-experts';

export type RebalanceState = 'idle' | 'planning' | 'moving' | 'done' | 'failed';

/** status.json's `rebalance` (moves: from null = a new copy, to null = a copy removed; nodes named as the node table names them). */
export interface RebalanceStatus {
  state: RebalanceState;
  started?: string;
  finished?: string;
  error?: string;
  moves: PairMove[];
}

const sources = new WeakMap<Engine, () => RebalanceStatus>();

/** Called once per engine by the rebalancer. */
export function registerRebalanceStatus(engine: Engine, status: () => RebalanceStatus): void {
  sources.set(engine, status);
}

/** The engine's rebalance status, or undefined when it has no rebalancer (in-process experts). */
export function rebalanceStatusOf(engine: Engine): RebalanceStatus | undefined {
  return sources.get(engine)?.();
}
