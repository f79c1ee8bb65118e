// A Hugging Face TurboSparse-Mixtral model folder:
//   config.json, tokenizer.json (+ tokenizer_config.json),
//   model.safetensors  or  model-0000N-of-0000M.safetensors + model.safetensors.index.json
// `open` reads the config, the tokenizer files and every safetensors header, and
// checks that each tensor the architecture needs is present with the shape the
// config implies. No weight data is read until `readTensor`, so a process (an
// expert node, say) loads only the tensors it asks for.
import fs from 'node:fs';
import path from 'node:path';
import { UserError } from './errors';
import { parseConfig, type ModelConfig } from './config';
import { SafetensorsFile, shapeString, type TensorDType, type TensorInfo } from './safetensors';
import type { HostMatrix, SourceDType } from './native';

/** Tensor names of the released checkpoints (see ../shared/golden/README.md). */
export const names = {
  embed: 'model.embed_tokens.weight',
  lmHead: 'lm_head.weight',
  finalNorm: 'model.norm.weight',
  inputNorm: (l: number) => `model.layers.${l}.input_layernorm.weight`,
  postNorm: (l: number) => `model.layers.${l}.post_attention_layernorm.weight`,
  q: (l: number) => `model.layers.${l}.self_attn.q_proj.weight`,
  k: (l: number) => `model.layers.${l}.self_attn.k_proj.weight`,
  v: (l: number) => `model.layers.${l}.self_attn.v_proj.weight`,
  o: (l: number) => `model.layers.${l}.self_attn.o_proj.weight`,
  /** The router, [experts, hidden]. */
  gate: (l: number) => `model.layers.${l}.block_sparse_moe.gate.weight`,
  /** Expert gate projection, [intermediate, hidden]. */
  w1: (l: number, e: number) => `model.layers.${l}.block_sparse_moe.experts.${e}.w1.weight`,
  /** Expert down projection, [hidden, intermediate]. */
  w2: (l: number, e: number) => `model.layers.${l}.block_sparse_moe.experts.${e}.w2.weight`,
  /** Expert up projection, [intermediate, hidden]. */
  w3: (l: number, e: number) => `model.layers.${l}.block_sparse_moe.experts.${e}.w3.weight`,
  /** Activation predictor, [rank, hidden]. */
  fc1: (l: number, e: number) => `model.layers.${l}.block_sparse_moe.experts.${e}.predictor.fc1.weight`,
  /** Activation predictor, [intermediate, rank]. */
  fc2: (l: number, e: number) => `model.layers.${l}.block_sparse_moe.experts.${e}.predictor.fc2.weight`,
};

export interface ModelFolderOptions {
  /** Called after every tensor read with the bytes just read (for loading progress). */
  onRead?: (bytes: number) => void;
}

export interface TensorData {
  dtype: TensorDType;
  shape: number[];
  data: Uint8Array;
}

export const INDEX_FILE = 'model.safetensors.index.json';
export const SINGLE_FILE = 'model.safetensors';
const SHARD_RE = /^model-(\d+)-of-(\d+)\.safetensors$/;

async function readJson(file: string, what: string): Promise<unknown> {
  let text: string;
  try {
    text = await fs.promises.readFile(file, 'utf8');
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === 'ENOENT') {
      throw new UserError(`${file} not found: ${what}`);
    }
    throw new UserError(`${file}: cannot read (${(err as NodeJS.ErrnoException).code ?? String(err)})`);
  }
  try {
    return JSON.parse(text);
  } catch (err) {
    throw new UserError(`${file}: not valid JSON (${(err as Error).message})`);
  }
}

function isObject(v: unknown): v is Record<string, unknown> {
  return typeof v === 'object' && v !== null && !Array.isArray(v);
}

function sameShape(a: readonly number[], b: readonly number[]): boolean {
  return a.length === b.length && a.every((x, i) => x === b[i]);
}

/** The folder's absolute path and its validated config.json. */
async function openConfig(dir: string): Promise<{ abs: string; config: ModelConfig }> {
  const abs = path.resolve(dir);
  let st: fs.Stats;
  try {
    st = await fs.promises.stat(abs);
  } catch {
    throw new UserError(`model folder ${abs} does not exist`);
  }
  if (!st.isDirectory()) throw new UserError(`${abs} is not a directory: --model expects a Hugging Face model folder`);
  const configFile = path.join(abs, 'config.json');
  return { abs, config: parseConfig(await readJson(configFile, 'a model folder needs config.json'), configFile) };
}

/** config.json of a model folder alone (no tokenizer, header or weight read): for checks before anything loads. */
export async function readModelConfig(dir: string): Promise<ModelConfig> {
  return (await openConfig(dir)).config;
}

export class ModelFolder {
  readonly dir: string;
  readonly config: ModelConfig;
  /** Activation-predictor width per layer (fc1 rows), read from the tensor shapes. */
  readonly predictorRanks: number[];
  readonly tokenizerJson: object;
  readonly tokenizerConfig: object | null;
  /** Absolute paths of the safetensors files, in shard order. */
  readonly weightFiles: string[];
  private readonly files: SafetensorsFile[];
  private readonly byName: Map<string, { info: TensorInfo; file: SafetensorsFile }>;
  private onRead: ((bytes: number) => void) | undefined;

  private constructor(
    dir: string,
    config: ModelConfig,
    tokenizerJson: object,
    tokenizerConfig: object | null,
    files: SafetensorsFile[],
    byName: Map<string, { info: TensorInfo; file: SafetensorsFile }>,
    onRead: ((bytes: number) => void) | undefined,
  ) {
    this.dir = dir;
    this.config = config;
    this.tokenizerJson = tokenizerJson;
    this.tokenizerConfig = tokenizerConfig;
    this.files = files;
    this.weightFiles = files.map((f) => f.path);
    this.byName = byName;
    this.onRead = onRead;
    this.predictorRanks = this.validate();
  }

  static async open(dir: string, opts: ModelFolderOptions = {}): Promise<ModelFolder> {
    const { abs, config } = await openConfig(dir);
    const tokFile = path.join(abs, 'tokenizer.json');
    const tokenizerJson = await readJson(tokFile, 'a model folder needs tokenizer.json (the Hugging Face fast-tokenizer file)');
    if (!isObject(tokenizerJson) || !isObject(tokenizerJson.model)) {
      throw new UserError(`${tokFile}: not a Hugging Face tokenizer.json (no "model" object)`);
    }
    const tokCfgFile = path.join(abs, 'tokenizer_config.json');
    let tokenizerConfig: object | null = null;
    if (fs.existsSync(tokCfgFile)) {
      const j = await readJson(tokCfgFile, '');
      if (!isObject(j)) throw new UserError(`${tokCfgFile}: expected a JSON object`);
      tokenizerConfig = j;
    }

    const weightMap = await ModelFolder.weightMap(abs);
    const files: SafetensorsFile[] = [];
    const byName = new Map<string, { info: TensorInfo; file: SafetensorsFile }>();
    try {
      for (const [fileName, expected] of weightMap) {
        const f = await SafetensorsFile.open(path.join(abs, fileName));
        files.push(f);
        for (const name of expected ?? []) {
          if (!f.info(name)) {
            throw new UserError(`${path.join(abs, INDEX_FILE)} maps tensor '${name}' to ${fileName}, but that file does not contain it`);
          }
        }
        const wanted = expected ? new Set(expected) : null;
        for (const info of f.tensors()) {
          if (wanted && !wanted.has(info.name)) continue; // the index is authoritative
          const prev = byName.get(info.name);
          if (prev) {
            throw new UserError(`tensor '${info.name}' is in both ${prev.info.file} and ${info.file}: remove one copy`);
          }
          byName.set(info.name, { info, file: f });
        }
      }
      return new ModelFolder(abs, config, tokenizerJson, tokenizerConfig, files, byName, opts.onRead);
    } catch (err) {
      await Promise.all(files.map((f) => f.close()));
      throw err;
    }
  }

  /** Which safetensors files to open, and (for an index) which tensors each must hold. */
  private static async weightMap(dir: string): Promise<Map<string, string[] | null>> {
    const indexFile = path.join(dir, INDEX_FILE);
    const out = new Map<string, string[] | null>();
    if (fs.existsSync(indexFile)) {
      const index = await readJson(indexFile, '');
      if (!isObject(index) || !isObject(index.weight_map)) {
        throw new UserError(`${indexFile}: expected an object with a "weight_map" of tensor name -> file name`);
      }
      for (const [name, file] of Object.entries(index.weight_map)) {
        if (typeof file !== 'string' || file.includes('/') || file.includes('\\') || file.startsWith('..')) {
          throw new UserError(`${indexFile}: weight_map entry '${name}' must be a file name in the folder, got ${JSON.stringify(file)}`);
        }
        if (!out.has(file)) {
          if (!fs.existsSync(path.join(dir, file))) {
            throw new UserError(`${path.join(dir, file)} not found: ${INDEX_FILE} maps tensor '${name}' to it`);
          }
          out.set(file, []);
        }
        out.get(file)!.push(name);
      }
      if (out.size === 0) throw new UserError(`${indexFile}: weight_map is empty`);
      return new Map([...out].sort(([a], [b]) => a.localeCompare(b)));
    }
    if (fs.existsSync(path.join(dir, SINGLE_FILE))) {
      out.set(SINGLE_FILE, null);
      return out;
    }
    const shards = (await fs.promises.readdir(dir)).filter((f) => SHARD_RE.test(f)).sort();
    if (shards.length === 0) {
      throw new UserError(
        `${dir} has no weights: expected ${SINGLE_FILE}, or model-0000N-of-0000M.safetensors shards with ${INDEX_FILE}`,
      );
    }
    const total = Number(SHARD_RE.exec(shards[0])![2]);
    if (shards.length !== total) {
      throw new UserError(`${dir}: found ${shards.length} of ${total} weight shards and no ${INDEX_FILE}: a shard is missing`);
    }
    for (const s of shards) out.set(s, null);
    return out;
  }

  /** Checks every tensor the architecture needs; returns the predictor rank of each layer. */
  private validate(): number[] {
    const c = this.config;
    const H = c.hiddenSize;
    const I = c.intermediateSize;
    const qDim = c.numHeads * c.headDim;
    const kvDim = c.numKvHeads * c.headDim;
    const expect = (name: string, shape: number[], why: string): void => {
      const t = this.info(name);
      if (!t) {
        let hint = '';
        if (name.includes('.predictor.') && !c.architecture.startsWith('TurboSparse')) {
          hint = ` (architecture '${c.architecture}' has no activation predictors; turbosparse needs a TurboSparseMixtralForCausalLM checkpoint)`;
        }
        throw new UserError(`tensor '${name}' is missing from ${this.dir} (looked in ${this.fileList()})${hint}`);
      }
      if (!sameShape(t.shape, shape)) {
        throw new UserError(
          `tensor '${name}' in ${t.file} has shape ${shapeString(t.shape)}, expected ${shapeString(shape)} (${why}): config.json does not match the weights`,
        );
      }
    };
    expect(names.embed, [c.vocabSize, H], 'vocab_size x hidden_size');
    expect(names.lmHead, [c.vocabSize, H], 'vocab_size x hidden_size');
    expect(names.finalNorm, [H], 'hidden_size');
    const ranks: number[] = [];
    for (let l = 0; l < c.numLayers; l++) {
      expect(names.inputNorm(l), [H], 'hidden_size');
      expect(names.postNorm(l), [H], 'hidden_size');
      expect(names.q(l), [qDim, H], 'num_attention_heads*head_dim x hidden_size');
      expect(names.k(l), [kvDim, H], 'num_key_value_heads*head_dim x hidden_size');
      expect(names.v(l), [kvDim, H], 'num_key_value_heads*head_dim x hidden_size');
      expect(names.o(l), [H, qDim], 'hidden_size x num_attention_heads*head_dim');
      expect(names.gate(l), [c.numExperts, H], 'num_local_experts x hidden_size');
      const fc1 = this.info(names.fc1(l, 0));
      const rank = fc1 && fc1.shape.length === 2 && fc1.shape[0] > 0 ? fc1.shape[0] : 1;
      for (let e = 0; e < c.numExperts; e++) {
        expect(names.w1(l, e), [I, H], 'intermediate_size x hidden_size');
        expect(names.w3(l, e), [I, H], 'intermediate_size x hidden_size');
        expect(names.w2(l, e), [H, I], 'hidden_size x intermediate_size');
        const f1 = this.info(names.fc1(l, e));
        if (f1 && f1.shape.length === 2 && f1.shape[1] === H && f1.shape[0] !== rank) {
          throw new UserError(
            `tensor '${names.fc1(l, e)}' in ${f1.file} has shape ${shapeString(f1.shape)}, but expert 0 of layer ${l} has predictor rank ${rank}: all experts of a layer must have the same predictor rank`,
          );
        }
        expect(names.fc1(l, e), [rank, H], `predictor rank ${rank} of layer ${l} x hidden_size`);
        expect(names.fc2(l, e), [I, rank], `intermediate_size x predictor rank ${rank}`);
      }
      ranks.push(rank);
    }
    return ranks;
  }

  private fileList(): string {
    return this.files.map((f) => path.basename(f.path)).join(', ');
  }

  /** Replaces the loading-progress listener (null removes it). */
  setProgressListener(fn: ((bytes: number) => void) | null): void {
    this.onRead = fn ?? undefined;
  }

  /** Every tensor name present in the weight files, sorted. */
  tensorNames(): string[] {
    return [...this.byName.keys()].sort();
  }

  /** lm_head.weight falls back to the embedding when tie_word_embeddings is set and it is absent. */
  private resolve(name: string): { info: TensorInfo; file: SafetensorsFile } | undefined {
    const hit = this.byName.get(name);
    if (hit) return hit;
    if (name === names.lmHead && this.config.tieWordEmbeddings) return this.byName.get(names.embed);
    return undefined;
  }

  info(name: string): TensorInfo | undefined {
    const r = this.resolve(name);
    return r && { ...r.info, shape: [...r.info.shape] };
  }

  has(name: string): boolean {
    return this.resolve(name) !== undefined;
  }

  /** Reads one tensor (lazily, by offset); with `expectShape`, a different shape is a UserError. */
  async readTensor(name: string, expectShape?: number[]): Promise<TensorData> {
    const r = this.resolve(name);
    if (!r) throw new UserError(`tensor '${name}' is missing from ${this.dir} (looked in ${this.fileList()})`);
    const { info, file } = r;
    if (expectShape && !sameShape(info.shape, expectShape)) {
      throw new UserError(`tensor '${name}' in ${info.file} has shape ${shapeString(info.shape)}, expected ${shapeString(expectShape)}`);
    }
    const data = new Uint8Array(new ArrayBuffer(info.nbytes));
    await file.readInto(info, data);
    this.onRead?.(info.nbytes);
    return { dtype: info.dtype, shape: [...info.shape], data };
  }

  /** Reads a tensor as a rows x cols matrix for the native backend; a 1-D [cols] tensor is a 1 x cols matrix. */
  async readMatrix(name: string, rows: number, cols: number): Promise<HostMatrix> {
    const info = this.info(name);
    const expectShape = info && info.shape.length === 1 && rows === 1 ? [cols] : [rows, cols];
    const t = await this.readTensor(name, expectShape);
    return { dtype: t.dtype.toLowerCase() as SourceDType, rows, cols, data: t.data };
  }

  /** Bytes of the named tensors (default: every tensor in the folder). */
  totalBytes(tensorNames?: string[]): number {
    if (!tensorNames) return [...this.byName.values()].reduce((s, r) => s + r.info.nbytes, 0);
    return tensorNames.reduce((s, n) => {
      const r = this.resolve(n);
      if (!r) throw new UserError(`tensor '${n}' is missing from ${this.dir} (looked in ${this.fileList()})`);
      return s + r.info.nbytes;
    }, 0);
  }

  /** The dtypes of the tensors, most common first (for a summary line: "bf16"). */
  dtypes(): TensorDType[] {
    const count = new Map<TensorDType, number>();
    for (const { info } of this.byName.values()) count.set(info.dtype, (count.get(info.dtype) ?? 0) + info.nbytes);
    return [...count].sort((a, b) => b[1] - a[1]).map(([d]) => d);
  }

  async close(): Promise<void> {
    await Promise.all(this.files.map((f) => f.close()));
  }
}
