// `turbosparse make-demo-model DIR`: a small random checkpoint in the real layout.
import type { Command } from 'commander';
import { makeDemoModel } from '../core/demo-model';
import { intOption, floatOption, choiceOption } from './options';

export function registerMakeDemoModel(program: Command): void {
  program
    .command('make-demo-model')
    .description('write a small random TurboSparse-Mixtral checkpoint (bf16, sharded, tokenizer, predictors)')
    .argument('<dir>', 'output folder (created)')
    .option('--layers <n>', 'decoder layers', intOption('--layers', 1))
    .option('--hidden <n>', 'hidden size', intOption('--hidden', 8))
    .option('--intermediate <n>', 'expert intermediate size', intOption('--intermediate', 8))
    .option('--heads <n>', 'attention heads', intOption('--heads', 1))
    .option('--kv-heads <n>', 'key/value heads', intOption('--kv-heads', 1))
    .option('--experts <n>', 'experts per layer', intOption('--experts', 1))
    .option('--top-k <n>', 'experts per token', intOption('--top-k', 1))
    .option('--vocab <n>', 'vocabulary size (>= 262)', intOption('--vocab', 262))
    .option('--predictor-rank <n>', 'predictor width', intOption('--predictor-rank', 1))
    .option('--shards <n>', 'safetensors shards (1 = model.safetensors)', intOption('--shards', 1))
    .option('--dtype <t>', 'bf16 | f16 | f32', choiceOption('--dtype', ['bf16', 'f16', 'f32'] as const))
    .option('--seed <n>', 'random seed', intOption('--seed'))
    .option('--active-fraction <f>', 'fraction of neurons the predictors mark active', floatOption('--active-fraction', 0.01, 0.99))
    .option('--router-skew <s>', 'skewed routing: 0 (default) every expert about equally hot; 1: each layer\'s hottest expert ' +
      'gets about 2-3x the mean share of routes, more with larger S (a different expert per layer)', floatOption('--router-skew', 0, 100))
    .action(async (dir: string, o: Record<string, unknown>) => {
      const opts = Object.fromEntries(Object.entries(o).filter(([, v]) => v !== undefined));
      await makeDemoModel(dir, opts);
      process.stderr.write(`wrote a demo model to ${dir}\n`);
    });
}
