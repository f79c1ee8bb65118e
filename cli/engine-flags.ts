// Flags every command that runs the model shares: where experts run, device, threads, weights.
import type { Command } from 'commander';
import { parseExpertsChoice, type EngineOptions } from '../coordinator/load-engine';
import { remoteExpertsFactory } from '../coordinator/remote-factory';
import type { Device, StoreDType } from '../core/native';
import { choiceOption, intOption } from './options';

export interface EngineFlags {
  model: string;
  experts: string;
  device: Device | 'auto';
  threads: number;
  weights: StoreDType | 'auto';
  dense?: boolean;
}

export function addEngineOptions(cmd: Command): Command {
  return cmd
    .option('--experts <where>', 'local | cluster:N (N expert-node processes on loopback) | shard-map FILE', 'local')
    .option('--device <d>', 'auto | cpu | cuda', choiceOption('--device', ['auto', 'cpu', 'cuda'] as const), 'auto')
    .option('--threads <n>', 'CPU kernel threads; 0 = all cores', intOption('--threads'), 0)
    .option('--weights <dtype>', 'weight storage: auto (as in the checkpoint) | f32 | bf16 | f16 | i8',
      choiceOption('--weights', ['auto', 'f32', 'bf16', 'f16', 'i8'] as const), 'auto')
    .option('--dense', 'dense-with-mask expert FFN (same tokens; the speed baseline)');
}

export function engineOptionsFrom(flags: EngineFlags): EngineOptions {
  return {
    modelDir: flags.model,
    experts: parseExpertsChoice(flags.experts),
    device: flags.device,
    threads: flags.threads,
    weights: flags.weights,
    dense: flags.dense,
    // cluster:N nodes inherit this command's weights/device/threads/FFN choices.
    remoteExperts: remoteExpertsFactory({ weights: flags.weights, device: flags.device, threads: flags.threads, dense: flags.dense }),
  };
}
