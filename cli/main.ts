// The `turbosparse` command: one file per subcommand, registered here.
import { Command, CommanderError } from 'commander';
import { UserError } from '../core/errors';
import { packageVersion } from '../core/package-version';
import { registerGenerate } from './generate';
import { registerMakeDemoModel } from './make-demo-model';
import { registerDemo } from './demo';
import { registerServe } from './serve';
import { registerWorker } from './worker';
import { registerBatch } from './batch';
import { registerExpertNode } from './expert-node';
import { registerStats } from './stats';
import { registerShardMap } from './shard-map';
import { registerPlan } from './plan';
import { registerRebalance } from './rebalance';
import { registerProfile } from './profile';
import { explainExpertSpec, oneLineErrors } from './options';
import { ExpertsUnavailableError } from '../coordinator/remote-experts';

export function buildProgram(): Command {
  const program = new Command('turbosparse')
    .description('Sparse TurboSparse-Mixtral inference across expert nodes')
    .version(packageVersion(), '-V, --version', 'print the turbosparse version')
    .exitOverride();
  registerGenerate(program);
  registerMakeDemoModel(program);
  registerDemo(program);
  registerServe(program);
  registerWorker(program);
  registerBatch(program);
  registerExpertNode(program);
  registerStats(program);
  registerShardMap(program);
  registerPlan(program);
  registerRebalance(program);
  registerProfile(program);
  return oneLineErrors(explainExpertSpec(program));
}

/**
 * A user error is one line without a stack trace; anything else is a bug and keeps its stack.
 * Exit codes: 0 --help/--version, 2 a usage or user error (commander's own errors too), 3 experts
 * unavailable, 1 a bug.
 */
export function reportError(e: unknown): number {
  if (e instanceof CommanderError) return e.exitCode === 0 ? 0 : 2;
  if (e instanceof UserError) {
    process.stderr.write(`error: ${e.message}\n`);
    return 2;
  }
  // The cluster lost every replica of some experts: an operational failure, not a bug.
  if (e instanceof ExpertsUnavailableError) {
    process.stderr.write(`error: ${e.message}\n`);
    return 3;
  }
  process.stderr.write(`${e instanceof Error ? e.stack : String(e)}\n`);
  return 1;
}

export function main(argv: string[]): void {
  buildProgram()
    .parseAsync(argv)
    .then(
      () => undefined,
      (e) => {
        process.exitCode = reportError(e);
      },
    );
}
