// Separate machines, emulated on one box with enough cores: `--machine-cpus N` pins each process of a cluster
// bench to its own N CPUs (the coordinator, and local experts in its process, on the first N; each expert node
// on the next N; the link emulator on a CPU of its own, since a real link takes none from the machines). Without
// it every process shares every core, which on a small VM charges the cluster for CPU that separate machines
// would not share. Pinning uses util-linux's `taskset` on every thread of a process; threads started later
// inherit the set.
import { execFileSync } from 'node:child_process';
import os from 'node:os';
import { UserError } from '../core/errors';
import { arg } from './models';

export interface MachineLayout {
  /** CPU lists in taskset's syntax, e.g. "0-1". */
  coordinator: string;
  nodes: string[];
  /** null when no link is emulated. */
  link: string | null;
}

const range = (first: number, count: number) => (count === 1 ? `${first}` : `${first}-${first + count - 1}`);

/** CPUs 0.. in order: coordinator, nodes, then one for the link emulator if any. Throws when the box is too small. */
export function machineLayout(cpus: number, perMachine: number, nodes: number, emulatedLink: boolean): MachineLayout {
  if (!Number.isInteger(perMachine) || perMachine < 1) throw new UserError(`--machine-cpus must be a positive integer, got ${perMachine}`);
  const needed = perMachine * (1 + nodes) + (emulatedLink ? 1 : 0);
  if (needed > cpus) {
    throw new UserError(`--machine-cpus ${perMachine} with ${nodes} node(s) needs ${needed} CPUs (coordinator, nodes${emulatedLink ? ', link emulator' : ''}); ` +
      `this machine has ${cpus}: use fewer CPUs per machine or fewer nodes, or leave --machine-cpus out`);
  }
  return {
    coordinator: range(0, perMachine),
    nodes: Array.from({ length: nodes }, (_, i) => range(perMachine * (1 + i), perMachine)),
    link: emulatedLink ? range(perMachine * (1 + nodes), 1) : null,
  };
}

/** Pins every thread of `pid` to `cpus`. */
export function pinProcess(pid: number, cpus: string): void {
  try {
    execFileSync('taskset', ['-a', '-p', '-c', cpus, String(pid)], { stdio: ['ignore', 'ignore', 'pipe'] });
  } catch (e) {
    const err = e as NodeJS.ErrnoException & { stderr?: Buffer };
    if (err.code === 'ENOENT') throw new UserError('--machine-cpus needs taskset (util-linux): install it or leave --machine-cpus out');
    throw new Error(`taskset -a -p -c ${cpus} ${pid}: ${err.stderr?.toString().trim() || err.message}`);
  }
}

/** `--machine-cpus N` from the command line, for up to `maxNodes` nodes; null when not given (or 0). */
export class Machines {
  private constructor(readonly perMachine: number, readonly layout: MachineLayout) {}

  static fromArgs(maxNodes: number, emulatedLink: boolean): Machines | null {
    const n = Number(arg('machine-cpus', '0'));
    if (n === 0) return null;
    return new Machines(n, machineLayout(os.cpus().length, n, maxNodes, emulatedLink));
  }

  /** This process (the coordinator); call before the engine loads so its thread pool sizes to these CPUs. */
  pinSelf(): void {
    pinProcess(process.pid, this.layout.coordinator);
  }

  pinNodes(pids: number[]): void {
    pids.forEach((pid, i) => pinProcess(pid, this.layout.nodes[i]));
  }

  pinLink(pid: number): void {
    if (this.layout.link === null) throw new Error('Machines: no CPU was set aside for a link emulator');
    pinProcess(pid, this.layout.link);
  }

  /** The echo server stands in for a node: on node 0's CPUs. */
  pinEcho(pid: number): void {
    pinProcess(pid, this.layout.nodes[0]);
  }

  describe(): string {
    const nodes = this.layout.nodes.length ? `, nodes ${this.layout.nodes.join(' / ')}` : '';
    return `each process on its own CPUs (coordinator ${this.layout.coordinator}${nodes}${this.layout.link === null ? '' : `, link emulator ${this.layout.link}`})`;
  }
}
