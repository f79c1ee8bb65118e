// Shared helpers for the core/ tests: temp folders, the golden data location, and
// a way to rewrite a model folder's weights to make a broken checkpoint.
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { SafetensorsFile, writeSafetensors, type TensorDType } from '../../core/safetensors';

export const GOLDEN = path.resolve(__dirname, '..', '..', '..', 'shared', 'golden');
export const haveGolden = fs.existsSync(path.join(GOLDEN, 'tiny-a', 'model', 'config.json'));

/** `describe` when ../shared/golden exists, else a skipped block that says why. */
export function describeGolden(name: string, fn: () => void): void {
  if (haveGolden) {
    describe(name, fn);
  } else {
    describe.skip(`${name} (skipped: ${GOLDEN} is absent)`, fn);
  }
}

/** A fresh temp directory, removed by the returned cleanup. */
export function tempDir(prefix = 'ts-core-'): { dir: string; cleanup: () => void } {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), prefix));
  return { dir, cleanup: () => fs.rmSync(dir, { recursive: true, force: true }) };
}

/** A small demo model: every test that needs a folder uses these shapes. */
export const SMALL = {
  layers: 2,
  hidden: 64,
  intermediate: 96,
  heads: 4,
  kvHeads: 2,
  experts: 4,
  topK: 2,
  vocab: 320,
  predictorRank: 24,
  seed: 7,
};

export interface RawTensor {
  name: string;
  dtype: TensorDType;
  shape: number[];
  data: Uint8Array;
}

/** Reads every tensor of a safetensors file. */
export async function readAll(file: string): Promise<RawTensor[]> {
  const f = await SafetensorsFile.open(file);
  try {
    const out: RawTensor[] = [];
    for (const t of f.tensors()) out.push({ name: t.name, dtype: t.dtype, shape: t.shape, data: await f.read(t.name) });
    return out;
  } finally {
    await f.close();
  }
}

/** Rewrites a safetensors file through `edit` (drop, reshape or add tensors). */
export async function rewrite(file: string, edit: (tensors: RawTensor[]) => RawTensor[]): Promise<void> {
  const tensors = edit(await readAll(file));
  await writeSafetensors(file, tensors);
}

/** Copies a folder (flat, files only). */
export function copyFolder(from: string, to: string): void {
  fs.mkdirSync(to, { recursive: true });
  for (const f of fs.readdirSync(from)) fs.copyFileSync(path.join(from, f), path.join(to, f));
}

/** Builds a safetensors file byte by byte from a header object and a data section. */
export function rawSafetensors(header: unknown, data: Uint8Array, headerLenOverride?: bigint): Uint8Array {
  const json = new TextEncoder().encode(JSON.stringify(header));
  const out = new Uint8Array(8 + json.byteLength + data.byteLength);
  new DataView(out.buffer).setBigUint64(0, headerLenOverride ?? BigInt(json.byteLength), true);
  out.set(json, 8);
  out.set(data, 8 + json.byteLength);
  return out;
}
