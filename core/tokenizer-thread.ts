// Tokenizing off the main thread: a long text takes the tokenizer tens of milliseconds to
// seconds, during which a server's event loop would answer nothing (no /health, no stream).
// One worker thread holds its own copy of the tokenizer and encodes texts in order; it starts
// on first use, does not keep the process alive while idle, and is started again if it dies.
import { Worker } from 'node:worker_threads';

// Plain JavaScript (eval'd), so it runs the same from the TypeScript sources, from dist/ and under jest.
const WORKER_SOURCE = `
const { parentPort, workerData } = require('node:worker_threads');
const { Tokenizer } = require(workerData.module);
const tok = new Tokenizer(workerData.json, workerData.config);
parentPort.on('message', ({ id, texts }) => {
  try {
    const out = texts.map(({ text, addSpecial }) =>
      Int32Array.from(addSpecial === undefined ? tok.encode(text).ids : tok.encode(text, { add_special_tokens: addSpecial }).ids));
    parentPort.postMessage({ id, ids: out }, out.map((a) => a.buffer));
  } catch (e) {
    parentPort.postMessage({ id, error: String((e && e.message) || e) });
  }
});
`;

export interface ThreadText {
  text: string;
  /** The tokenizer's add_special_tokens; undefined: its default. */
  addSpecial?: boolean;
}

type Pending = { resolve: (ids: number[][]) => void; reject: (e: Error) => void };
type Running = { worker: Worker; pending: Map<number, Pending> };

export class TokenizerThread {
  private current: Running | null = null;
  private nextId = 1;

  /** `json` and `config` as given to the tokenizers package's Tokenizer. */
  constructor(
    private readonly json: object,
    private readonly config: object,
  ) {}

  /** Each text's token ids, in order. */
  encode(texts: ThreadText[]): Promise<number[][]> {
    const { worker, pending } = this.start();
    const id = this.nextId++;
    return new Promise<number[][]>((resolve, reject) => {
      pending.set(id, { resolve, reject });
      worker.ref();
      worker.postMessage({ id, texts });
    });
  }

  /** Stops the thread; texts being encoded are rejected. */
  async close(): Promise<void> {
    const r = this.current;
    this.current = null;
    await r?.worker.terminate();
  }

  private start(): Running {
    if (this.current) return this.current;
    const worker = new Worker(WORKER_SOURCE, {
      eval: true,
      workerData: { module: require.resolve('@huggingface/tokenizers'), json: this.json, config: this.config },
    });
    const r: Running = { worker, pending: new Map() };
    worker.unref();
    worker.on('message', (m: { id: number; ids?: Int32Array[]; error?: string }) => {
      const p = r.pending.get(m.id);
      if (!p) return;
      r.pending.delete(m.id);
      if (r.pending.size === 0) worker.unref();
      if (m.error !== undefined) p.reject(new Error(`tokenizer: ${m.error}`));
      else p.resolve(m.ids!.map((a) => Array.from(a)));
    });
    const fail = (e: Error) => {
      if (this.current === r) this.current = null;
      for (const p of r.pending.values()) p.reject(e);
      r.pending.clear();
    };
    worker.on('error', fail);
    worker.on('exit', (code) => fail(new Error(`tokenizer thread exited (code ${code})`)));
    this.current = r;
    return r;
  }
}
