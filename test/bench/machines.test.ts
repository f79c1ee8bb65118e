import { machineLayout } from '../../bench/machines';
import { UserError } from '../../core/errors';

describe('machineLayout (--machine-cpus)', () => {
  it('gives the coordinator, each node and the link emulator disjoint CPUs, in order', () => {
    expect(machineLayout(16, 2, 2, true)).toEqual({ coordinator: '0-1', nodes: ['2-3', '4-5'], link: '6' });
    expect(machineLayout(16, 3, 4, true)).toEqual({ coordinator: '0-2', nodes: ['3-5', '6-8', '9-11', '12-14'], link: '15' });
    expect(machineLayout(2, 1, 0, true)).toEqual({ coordinator: '0', nodes: [], link: '1' });
    expect(machineLayout(2, 1, 1, false)).toEqual({ coordinator: '0', nodes: ['1'], link: null });
  });

  it('refuses a layout the machine cannot hold, naming the option', () => {
    expect(() => machineLayout(8, 2, 4, true)).toThrow(UserError);
    expect(() => machineLayout(8, 2, 4, true)).toThrow(/--machine-cpus 2 with 4 node\(s\) needs 11 CPUs .* this machine has 8/);
    expect(() => machineLayout(16, 0, 2, true)).toThrow(/--machine-cpus must be a positive integer/);
    expect(() => machineLayout(16, 1.5, 2, false)).toThrow(/--machine-cpus must be a positive integer/);
  });
});
