// Shared pieces of the cluster tests: random expert batches, in-process expert
// nodes on port 0, and the command that runs `expert-node` from the sources.
import path from 'node:path';
import type { EngineFlags } from '../../cli/engine-flags';
import { Rng } from '../../coordinator/sampler';
import type { ExpertBatch } from '../../core/expert-backend';
import type { ExpertPair } from '../../core/expert-spec';
import type { ModelFolder } from '../../core/model-folder';
import { maskBytes, native, type NativeBackend } from '../../core/native';
import { groupSlotsByExpert, routedBatchFromSlots, scatterToSlots } from '../../core/routed-batch';
import { ExpertStore } from '../../expert-node/expert-store';
import { createServer, type ExpertNodeServer, type ExpertNodeServerOptions } from '../../expert-node/server';

export const ROOT = path.resolve(__dirname, '..', '..');

/** `expert-node` from the TypeScript sources, for LocalCluster's nodeCommand. */
export function sourceNodeCommand(): string[] {
  return [process.execPath, '-r', path.join(__dirname, 'ts-register-cached.js'), path.join(ROOT, 'cli', 'expert-node.ts')];
}

/** Deterministic uniform floats in [0, 1) (the sampler's mulberry32). */
export function rng(seed: number): () => number {
  const r = new Rng(seed);
  return () => r.next();
}


export interface BatchDims {
  hiddenSize: number;
  intermediateSize: number;
  numExperts: number;
}

/** A routed batch plus the slot-form routing it was drawn from ([nRows, topK] experts, weights, mask rows). */
export type SlotBatch = ExpertBatch & { topK: number; experts: Int32Array; weights: Float32Array; masks: Uint8Array };

/** `b` regrouped after its slot-form experts were changed in place. */
export const rerouted = (b: SlotBatch): SlotBatch => ({ ...b, ...routedBatchFromSlots(b) });

/** Per-route values of `b` (group order) in its slot order. */
export const bySlot = (b: SlotBatch, perRoute: Int32Array): Int32Array =>
  scatterToSlots(perRoute, groupSlotsByExpert(b.experts).map((g) => g.slots), b.nRows * b.topK);

/** A routed batch as the forward pass makes one: distinct experts per row, weights summing to 1, random masks. */
export function randomBatch(d: BatchDims, layer: number, nRows: number, seed: number, opts: { topK?: number; density?: number } = {}): SlotBatch {
  const topK = opts.topK ?? 2;
  const density = opts.density ?? 0.3;
  const r = rng(seed);
  const rowBytes = maskBytes(d.intermediateSize);
  const hidden = Float32Array.from({ length: nRows * d.hiddenSize }, () => (r() - 0.5) * 4);
  const experts = new Int32Array(nRows * topK);
  const weights = new Float32Array(nRows * topK);
  const masks = new Uint8Array(nRows * topK * rowBytes);
  for (let row = 0; row < nRows; row++) {
    const chosen: number[] = [];
    while (chosen.length < topK) {
      const e = Math.floor(r() * d.numExperts);
      if (!chosen.includes(e)) chosen.push(e);
    }
    const w = chosen.map(() => 0.1 + r());
    const sum = w.reduce((a, b) => a + b, 0);
    chosen.forEach((e, k) => {
      const s = row * topK + k;
      experts[s] = e;
      weights[s] = w[k] / sum;
      for (let i = 0; i < d.intermediateSize; i++) if (r() < density) masks[s * rowBytes + (i >> 3)] |= 1 << (i & 7);
    });
  }
  const slotForm = { layer, nRows, hidden, topK, experts, weights, masks, maskRowBytes: rowBytes };
  return { ...slotForm, ...routedBatchFromSlots(slotForm) };
}

export function maxAbsDiff(a: ArrayLike<number>, b: ArrayLike<number>): number {
  expect(a.length).toBe(b.length);
  let m = 0;
  for (let i = 0; i < a.length; i++) m = Math.max(m, Math.abs(a[i] - b[i]));
  return m;
}

export interface InProcessNode {
  server: ExpertNodeServer;
  store: ExpertStore;
  backend: NativeBackend;
  port: number;
  address: string;
  stop(): Promise<void>;
}

/** An expert node in this process on a free loopback port, SERVING `pairs` of `folder`. */
export async function startNode(folder: ModelFolder, pairs: ExpertPair[], opts: ExpertNodeServerOptions & { port?: number } = {}): Promise<InProcessNode> {
  const backend = native().createBackend('cpu', 1);
  const server = createServer(opts);
  const port = await server.listen('127.0.0.1', opts.port ?? 0);
  const store = await ExpertStore.load({ source: folder, dims: folder.config, pairs, backend, weights: 'auto' });
  server.setStore(store);
  let stopped = false;
  return {
    server, store, backend, port, address: `127.0.0.1:${port}`,
    stop: async () => {
      if (stopped) return;
      stopped = true;
      server.forceShutdown();
      store.close();
      backend.close();
    },
  };
}

type StoreRun = ExpertStore['run'];

/** Wraps an in-process node's store.run (a slow, hung or broken node); returns the undo. */
export function wrapStoreRun(node: InProcessNode, wrap: (run: StoreRun) => StoreRun): () => void {
  const original = node.store.run;
  node.store.run = wrap(original.bind(node.store));
  return () => {
    node.store.run = original;
  };
}

export function sleep(ms: number): Promise<void> {
  return new Promise((resolve) => setTimeout(resolve, ms));
}

/** The flags `generate` parses from `args` (its action replaced, so nothing runs). */
export async function generateFlags(args: string[]): Promise<EngineFlags> {
  const { buildProgram } = await import('../../cli/main'); // the whole CLI: loaded only by the tests that parse flags
  const program = buildProgram();
  const generate = program.commands.find((c) => c.name() === 'generate')!;
  let flags: EngineFlags | undefined;
  generate.exitOverride().configureOutput({ writeErr: () => undefined, writeOut: () => undefined });
  generate.action((f: EngineFlags) => void (flags = f));
  await program.parseAsync(['generate', '--model', 'm', '--ids', '1', ...args], { from: 'user' });
  return flags!;
}
