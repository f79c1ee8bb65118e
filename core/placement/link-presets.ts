// The network links the planner (cli/plan.ts, core/placement/cost-model.ts) and the benches'
// link emulator (bench/link-emulator.ts) both speak of: one-way delay and bandwidth per
// direction. The presets are the figures bench/cluster.ts --link emulates, so a plan and a
// measurement over "1gbe" mean the same link.
import { UserError } from '../errors';

export interface LinkSpec {
  name: string;
  /** One-way delay, microseconds. */
  delayUs: number;
  /** Bandwidth per direction, megabits per second. */
  mbit: number;
}

/** `loopback` is no link at all (connect directly, no proxy). */
export const LINK_PRESETS: Record<string, LinkSpec | null> = {
  loopback: null,
  '10gbe': { name: '10gbe', delayUs: 25, mbit: 10000 },
  '1gbe': { name: '1gbe', delayUs: 100, mbit: 1000 },
  wifi: { name: 'wifi', delayUs: 1500, mbit: 300 },
};

/** `loopback`, `10gbe`, `1gbe`, `wifi` or `DELAY_US:MBIT` (e.g. `1000:100`); null means no proxy. */
export function parseLink(text: string): LinkSpec | null {
  const t = text.trim();
  if (Object.hasOwn(LINK_PRESETS, t)) return LINK_PRESETS[t];
  const m = /^(\d+(?:\.\d+)?):(\d+(?:\.\d+)?)$/.exec(t);
  if (!m || !(Number(m[2]) > 0)) {
    throw new UserError(`--link "${text}": expected ${Object.keys(LINK_PRESETS).join(', ')} or DELAY_US:MBIT with MBIT > 0 (e.g. 100:1000)`);
  }
  return { name: t, delayUs: Number(m[1]), mbit: Number(m[2]) };
}

export function describeLink(spec: LinkSpec | null): string {
  return spec ? `${spec.name} (${spec.delayUs} us one way, ${spec.mbit} Mbit/s)` : 'loopback (no emulator)';
}
