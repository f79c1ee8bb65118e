// Builds an Engine from a model folder: opens the checkpoint, picks the device,
// loads the coordinator's weights and the chosen expert backend, prints a summary.
import { UserError } from '../core/errors';
import type { ExpertBackend } from '../core/expert-backend';
import { ModelFolder, names } from '../core/model-folder';
import { native, type Device, type FfnMode, type KvDType, type NativeBackend, type StoreDType } from '../core/native';
import { Engine, type OverlapMode } from './engine';
import { DraftModelProposer } from './speculative/draft-model';
import type { SpeculativeChoice } from './speculative/parse';
import { LocalExperts } from './local-experts';
import { loadProgress } from './load-progress';
import { loadCoordinatorWeights } from './model-weights';

/** `--experts local | cluster:N | FILE` */
export type ExpertsChoice = { kind: 'local' } | { kind: 'cluster'; nodes: number } | { kind: 'file'; path: string };

export function parseExpertsChoice(value: string): ExpertsChoice {
  if (value === 'local') return { kind: 'local' };
  const m = /^cluster:(\d+)$/.exec(value);
  if (m) {
    const nodes = Number(m[1]);
    if (nodes < 1) throw new UserError(`--experts ${value}: a cluster needs at least 1 node`);
    return { kind: 'cluster', nodes };
  }
  if (value.startsWith('cluster')) throw new UserError(`--experts ${value}: expected cluster:N with N a number, e.g. cluster:2`);
  return { kind: 'file', path: value };
}

/** Builds a remote expert backend (cluster:N or a shard-map file); injected so this module stays transport-free. */
export type RemoteExpertsFactory = (
  choice: Exclude<ExpertsChoice, { kind: 'local' }>,
  folder: ModelFolder,
  log: (line: string) => void,
  /** The coordinator's device and weight settings, for a shard map's "local" node (experts run in process). */
  local?: LocalExpertsSetup,
) => Promise<ExpertBackend>;

export interface LocalExpertsSetup {
  backend: NativeBackend;
  store: StoreDType | 'auto';
  mode: FfnMode;
}

export interface EngineOptions {
  modelDir: string;
  experts?: ExpertsChoice;
  remoteExperts?: RemoteExpertsFactory;
  device?: Device | 'auto';
  threads?: number;
  /** Weight storage: 'auto' keeps the checkpoint's dtype. */
  weights?: StoreDType | 'auto';
  /** Dense-with-mask FFN instead of sparse (same tokens; the speed baseline). */
  dense?: boolean;
  /** How KV caches store K/V. Default f32. */
  kvDtype?: KvDType;
  /** Two pipelined micro-batches per step (Engine's overlap); default auto. */
  overlap?: OverlapMode;
  /** Speculative decoding (`--speculative`): a proposer, or a draft model folder loaded next to the model. */
  speculative?: SpeculativeChoice;
  /** Steps with more decoding sequences than this propose nothing (Engine.speculativeMaxBatch). */
  speculativeMaxBatch?: number;
  /** Where progress and the summary go (stderr by default). */
  log?: (line: string) => void;
  progressStream?: NodeJS.WriteStream;
}

function countParams(folder: ModelFolder): number {
  let n = 0;
  for (const name of folder.tensorNames()) n += folder.info(name)!.shape.reduce((a, b) => a * b, 1);
  return n;
}

function expertTensorNames(folder: ModelFolder): string[] {
  const c = folder.config;
  const out: string[] = [];
  for (let L = 0; L < c.numLayers; L++)
    for (let E = 0; E < c.numExperts; E++) out.push(names.w1(L, E), names.w2(L, E), names.w3(L, E));
  return out;
}

export async function loadEngine(opts: EngineOptions): Promise<Engine> {
  const log = opts.log ?? ((line: string) => process.stderr.write(line + '\n'));
  const folder = await ModelFolder.open(opts.modelDir);
  if (folder.config.hiddenAct && folder.config.hiddenAct !== 'relu') {
    log(`warning: config.json hidden_act is '${folder.config.hiddenAct}'; TurboSparse experts are dReLU (relu), results assume relu`);
  }
  const sw = folder.config.slidingWindow;
  if (sw !== null && sw < folder.config.maxPositionEmbeddings) {
    log(
      `warning: config.json sliding_window is ${sw}; turbosparse attends over the whole context, ` +
        `so sequences longer than ${sw} tokens differ from sliding-window attention`,
    );
  }
  const choice = opts.experts ?? { kind: 'local' };
  const device = opts.device ?? 'auto';
  let backend: NativeBackend | undefined;
  // Every throw after the open closes the folder (its weight FileHandles) below.
  try {
    const mod = native();
    if (device === 'cuda' && !mod.deviceAvailable('cuda')) {
      throw new UserError('--device cuda: no usable CUDA device (or the addon was built without CUDA); use --device cpu');
    }
    backend = mod.createBackend(device, opts.threads ?? 0);
    log(`device: ${backend.description}${device === 'auto' ? ' (auto)' : ''}`);

    const expertNames = new Set(expertTensorNames(folder));
    const needed = folder.tensorNames().filter((n) => choice.kind === 'local' || !expertNames.has(n));
    const progress = loadProgress(folder.totalBytes(needed), needed.length, opts.progressStream);
    const t0 = Date.now();
    const store = opts.weights ?? 'auto';
    const weights = await loadCoordinatorWeights(folder, backend, { store, onTensor: (n, b) => progress.tensor(n, b) });
    const mode: FfnMode = opts.dense ? 'dense' : 'sparse';
    let experts: ExpertBackend;
    if (choice.kind === 'local') {
      experts = await LocalExperts.load(folder, backend, { store, mode, onTensor: (n, b) => progress.tensor(n, b) });
      progress.done();
    } else {
      progress.done();
      if (!opts.remoteExperts) throw new Error('remote experts requested but no factory was given');
      experts = await opts.remoteExperts(choice, folder, log, { backend, store, mode });
    }
    const c = folder.config;
    const dtypes = [...new Set(folder.tensorNames().map((n) => folder.info(n)!.dtype))].join('/');
    log(
      `model: ${c.numLayers} layers, ${c.numExperts} experts (top-${c.topK}), ` +
        `${(countParams(folder) / 1e6).toFixed(1)}M parameters, ${dtypes}` +
        `${store !== 'auto' ? ` stored as ${store}` : ''}, predictor widths ${[...new Set(folder.predictorRanks)].join('/')}, ` +
        `${(backend.weightBytes() / 1e6).toFixed(1)} MB of weights on ${backend.device}, ` +
        `experts ${experts.name}, ffn ${mode}, loaded in ${((Date.now() - t0) / 1000).toFixed(1)} s`,
    );
    const engine = new Engine(folder, backend, weights, experts, { kvDtype: opts.kvDtype, overlap: opts.overlap, speculativeMaxBatch: opts.speculativeMaxBatch });
    if (opts.speculative) await withProposer(engine, opts.speculative, opts, log);
    return engine;
  } catch (e) {
    backend?.close();
    await folder.close();
    throw e;
  }
}

/** Installs `--speculative`: a draft model loads like a model of its own (experts in process, same device). */
async function withProposer(engine: Engine, choice: SpeculativeChoice, opts: EngineOptions, log: (line: string) => void): Promise<void> {
  if ('proposer' in choice) {
    engine.proposer = choice.proposer;
  } else {
    const draft = await loadEngine({ modelDir: choice.draft.dir, device: opts.device, threads: opts.threads, weights: opts.weights,
      kvDtype: opts.kvDtype, log: (line) => log(`draft: ${line}`), progressStream: opts.progressStream });
    try {
      engine.proposer = new DraftModelProposer(draft, engine, choice.draft.k);
    } catch (e) {
      await draft.close();
      throw e;
    }
  }
  log(`speculative decoding: ${engine.proposer.name} (up to ${engine.proposer.k} proposed tokens per decode step)`);
}
