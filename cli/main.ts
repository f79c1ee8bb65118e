// The `turbosparse` command: one file per subcommand, registered here.
import { Command, CommanderError } from 'commander';
import { UserError } from '../core/errors';
import { registerGenerate } from './generate';
import { registerMakeDemoModel } from './make-demo-model';
import { registerDemo } from './demo';

export function buildProgram(): Command {
  const program = new Command('turbosparse')
    .description('Sparse TurboSparse-Mixtral inference across expert nodes')
    .showHelpAfterError()
    .exitOverride();
  registerGenerate(program);
  registerMakeDemoModel(program);
  registerDemo(program);
  return program;
}

/** A user error is one line without a stack trace; anything else is a bug and keeps its stack. */
export function reportError(e: unknown): number {
  if (e instanceof CommanderError) return e.exitCode;
  if (e instanceof UserError) {
    process.stderr.write(`error: ${e.message}\n`);
    return 2;
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
