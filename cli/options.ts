// Option parsers shared by subcommands: each names the flag in its error.
import { type Command, InvalidArgumentError } from 'commander';

export function intOption(flag: string, min = 0) {
  return (value: string): number => {
    const n = Number(value);
    if (!Number.isInteger(n) || n < min) throw new InvalidArgumentError(`${flag} must be an integer >= ${min}`);
    return n;
  };
}

export function floatOption(flag: string, min: number, max: number) {
  return (value: string): number => {
    const n = Number(value);
    if (!Number.isFinite(n) || n < min || n > max) throw new InvalidArgumentError(`${flag} must be a number in [${min}, ${max}]`);
    return n;
  };
}

export function idsOption(value: string): number[] {
  const ids = value.split(',').map((s) => s.trim()).filter((s) => s.length > 0).map(Number);
  if (ids.length === 0 || ids.some((n) => !Number.isInteger(n) || n < 0)) {
    throw new InvalidArgumentError('--ids must be comma-separated token ids, e.g. 1,5,9');
  }
  return ids;
}

export function choiceOption<T extends string>(flag: string, choices: readonly T[]) {
  return (value: string): T => {
    if (!(choices as readonly string[]).includes(value)) {
      throw new InvalidArgumentError(`${flag} must be one of ${choices.join(', ')}`);
    }
    return value as T;
  };
}

/** --weights values: a StoreDType, or auto (as in the checkpoint). */
export const WEIGHTS_CHOICES = ['auto', 'f32', 'bf16', 'f16', 'i8'] as const;
export const WEIGHTS_HELP = 'weight storage: auto (as in the checkpoint) | f32 | bf16 | f16 | i8 (also spelled int8: per-row scale)';

/** --weights: one of WEIGHTS_CHOICES; `int8` is taken as i8. */
export function weightsOption(value: string): (typeof WEIGHTS_CHOICES)[number] {
  return choiceOption('--weights', WEIGHTS_CHOICES)(value === 'int8' ? 'i8' : value);
}

/** --device, --threads, --weights, --dense: how a process that holds expert weights runs them. */
export function addKernelOptions(cmd: Command, denseHelp: string): Command {
  return cmd
    .option('--device <d>', 'auto | cpu | cuda', choiceOption('--device', ['auto', 'cpu', 'cuda'] as const), 'auto')
    .option('--threads <n>', 'CPU kernel threads; 0 = all cores', intOption('--threads'), 0)
    .option('--weights <dtype>', WEIGHTS_HELP, weightsOption, 'auto')
    .option('--dense', denseHelp);
}

/**
 * Commander's parse errors as one line, with where the usage is: its "(Did you mean ...?)"
 * goes on the same line (bad input gets one clear line). Applied to `cmd` and, named by
 * their path, to its subcommands, so call it once they are registered.
 */
export function oneLineErrors(cmd: Command, name = cmd.name()): Command {
  cmd.configureOutput({ outputError: (str, write) => write(`${str.trim().replace(/\s*\n\s*/g, ' ')} (see ${name} --help)\n`) });
  for (const sub of cmd.commands) oneLineErrors(sub, `${name} ${sub.name()}`);
  return cmd;
}

/** The (layer, expert) pair notation of --experts SPEC and shard maps (core/expert-spec.ts), for --help. */
export const EXPERT_SPEC_HELP = `
Expert pairs (SPEC): comma-separated LAYERS:EXPERTS items; each side is N, N-M (inclusive) or * (all).
  0-3:0,0-3:2   experts 0 and 2 of layers 0..3 (8 pairs)
  0-31:0-3      experts 0..3 of every layer 0..31
  0:1,0:5,3:*   experts 1 and 5 of layer 0, and every expert of layer 3
  *             every pair of the model`;

/** Explains SPEC under the help of every command (of `cmd` and below) that takes `--experts <spec>`. */
export function explainExpertSpec(cmd: Command): Command {
  if (cmd.options.some((o) => o.long === '--experts' && /<spec>/i.test(o.flags))) cmd.addHelpText('after', EXPERT_SPEC_HELP);
  for (const sub of cmd.commands) explainExpertSpec(sub);
  return cmd;
}
