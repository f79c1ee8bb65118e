// `turbosparse demo` — the README's main job: make the built-in demo model if it
// is not there yet, start a local cluster of expert nodes, generate, print tables.
import fs from 'node:fs';
import path from 'node:path';
import type { Command } from 'commander';
import { makeDemoModel } from '../core/demo-model';
import { runGenerate } from './generate';
import { intOption } from './options';

/** The demo model lives next to the package (git-ignored), made once. */
export const DEMO_MODEL_DIR = path.resolve(__dirname, '..', '..', '.demo-model');

export async function ensureDemoModel(dir = DEMO_MODEL_DIR): Promise<string> {
  if (!fs.existsSync(path.join(dir, 'config.json'))) {
    process.stderr.write(`making the demo model in ${dir} (once)\n`);
    await makeDemoModel(dir, {});
  }
  return dir;
}

/** make-demo-model writes a `demo` block (seed, active fraction) into config.json; real checkpoints have none. */
export function isDemoModel(dir: string): boolean {
  try {
    const config = JSON.parse(fs.readFileSync(path.join(dir, 'config.json'), 'utf8')) as Record<string, unknown>;
    return typeof config.demo === 'object' && config.demo !== null;
  } catch {
    return false; // the run that follows reports a missing or broken folder
  }
}

export function registerDemo(program: Command): void {
  program
    .command('demo')
    .description('run the built-in demo model on a local cluster of expert nodes')
    .option('--nodes <n>', 'expert-node processes', intOption('--nodes', 1), 2)
    .option('--prompt <text>', 'prompt text', 'The expert cluster says')
    .option('--max-tokens <n>', 'tokens to generate', intOption('--max-tokens'), 48)
    .option('--model <dir>', 'use this model folder instead of the built-in demo model')
    .action(async (o: { nodes: number; prompt: string; maxTokens: number; model?: string }) => {
      const model = o.model ?? (await ensureDemoModel());
      // A demo model's output is noise: say so before it, so nobody debugs it.
      if (isDemoModel(model)) {
        process.stderr.write('the demo model has random weights: the text it writes is noise; it shows the cluster at work, not a language model\n');
      }
      process.stderr.write(`prompt: ${JSON.stringify(o.prompt)}\n`);
      await runGenerate({
        model,
        experts: `cluster:${o.nodes}`,
        device: 'auto',
        threads: 0,
        weights: 'auto',
        kvDtype: 'f32',
        prompt: o.prompt,
        maxTokens: o.maxTokens,
        temperature: 0.8,
        topK: 40,
        topP: 0.95,
        seed: 42,
      });
    });
}
