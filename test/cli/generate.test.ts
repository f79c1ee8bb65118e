// `turbosparse generate` on a small demo model: what it prints after the text, and
// prompt ids outside the vocabulary refused from config.json before anything loads.
import fs from 'node:fs';
import path from 'node:path';
import { makeDemoModel } from '../../core/demo-model';
import { generateWith, runGenerate, type GenerateFlags } from '../../cli/generate';
import { loadEngine } from '../../coordinator/load-engine';
import { Scheduler } from '../../coordinator/scheduler';
import { OpenAIApi } from '../../coordinator/api/openai-api';
import { Registry } from '../../core/metrics';
import { TextTokenizer } from '../../core/tokenizer';
import { buildProgram, reportError } from '../../cli/main';
import { SMALL, tempDir } from '../core/fixtures';
import { SafetensorsFile } from '../../core/safetensors';
import { UserError } from '../../core/errors';
import { describeGolden, goldenJson, TINY_A, TINY_A_MODEL } from '../helpers/golden';

const tmp = tempDir('ts-generate-cli-');
afterAll(() => tmp.cleanup());
beforeAll(() => makeDemoModel(tmp.dir, { ...SMALL, shards: 1 }));

const flags = (over: Partial<GenerateFlags> = {}): GenerateFlags => ({
  model: tmp.dir, experts: 'local', device: 'cpu', threads: 1, weights: 'auto',
  ids: [1, 5, 9], maxTokens: 4, temperature: 0, topK: 0, topP: 1, ...over,
});

/** Runs `fn` with stdout and stderr captured. */
async function capture(fn: () => Promise<unknown>): Promise<{ stdout: string; stderr: string }> {
  const out: string[] = [];
  const err: string[] = [];
  const into = (lines: string[]) => (chunk: string | Uint8Array): boolean => {
    lines.push(String(chunk));
    return true;
  };
  const so = jest.spyOn(process.stdout, 'write').mockImplementation(into(out));
  const se = jest.spyOn(process.stderr, 'write').mockImplementation(into(err));
  try {
    await fn();
  } finally {
    so.mockRestore();
    se.mockRestore();
  }
  return { stdout: out.join(''), stderr: err.join('') };
}

test('generate ends with the one per-node and per-expert latency table', async () => {
  const { stderr } = await capture(() => runGenerate(flags()));
  const tail = stderr.slice(stderr.lastIndexOf('\n\nexpert latency per node'));
  expect(tail).toMatch(/^\n\nexpert latency per node /);
  expect(tail).toMatch(/\nnode\s+experts\s+calls\s+p50 ms\s+p99 ms\s+mean ms\s+compute p50\s+active\s+sent B\/tok\s+recv B\/tok\s+errors\s+state\s+via\n/);
  expect(tail).toMatch(/\nlocal\s+-\s+\d+\s/); // experts in process: no shard map, no wire
  expect(tail).toMatch(/\nper expert \(layer:expert\):\nexpert\s+calls\s+tokens\s+p50 ms\s+p99 ms/);
  expect(tail).toMatch(/\nhottest experts: \d+:\d+ \(/);
  // One table: the latency table is the only per-node table.
  expect(stderr.match(/^node\s/gm)).toHaveLength(1);
}, 60000);

describe('--ids outside the vocabulary', () => {
  // config.json alone: no tokenizer, no weights. The id check must not need them.
  const configOnly = path.join(tmp.dir, 'config-only');
  beforeAll(() => {
    fs.mkdirSync(configOnly);
    fs.copyFileSync(path.join(tmp.dir, 'config.json'), path.join(configOnly, 'config.json'));
  });

  test('is refused from config.json vocab_size before the weights load or expert nodes start', async () => {
    const valid = `valid ids are 0..${SMALL.vocab - 1} (config.json vocab_size ${SMALL.vocab})`;
    for (const experts of ['local', 'cluster:2']) {
      await expect(runGenerate(flags({ model: configOnly, experts, ids: [1, SMALL.vocab, 5] })))
        .rejects.toThrow(`--ids: token id ${SMALL.vocab} is outside the model's vocabulary; ${valid}`);
    }
    // The last valid id gets past the check (and then misses the tokenizer this folder lacks).
    await expect(runGenerate(flags({ model: configOnly, ids: [SMALL.vocab - 1] }))).rejects.toThrow(/tokenizer\.json not found/);
  });

  test('the command prints one line and exits 2', async () => {
    const argv = ['node', 'turbosparse', 'generate', '--model', configOnly, '--ids', `1,${SMALL.vocab + 7}`, '--device', 'cpu'];
    const error = await buildProgram().parseAsync(argv).then(() => undefined, (e: unknown) => e);
    let code = 0;
    const { stdout, stderr } = await capture(async () => {
      code = reportError(error);
    });
    expect(code).toBe(2);
    expect(stdout).toBe('');
    expect(stderr).toBe(`error: --ids: token id ${SMALL.vocab + 7} is outside the model's vocabulary; valid ids are 0..${SMALL.vocab - 1} ` +
      `(config.json vocab_size ${SMALL.vocab})\n`);
  });
});

test('generated_tokens leaves out the EOS that ended generation, like the API\'s usage.completion_tokens', async () => {
  const ids = [1, 5, 9];
  const free = JSON.parse((await capture(() => runGenerate(flags({ ids, maxTokens: 8, json: true })))).stdout);
  // A copy of the model whose EOS is a greedy token that did not come earlier.
  const at = (free.tokens as number[]).findIndex((t, i) => i > 0 && !free.tokens.slice(0, i).includes(t));
  expect(at).toBeGreaterThan(0);
  const dir = path.join(tmp.dir, 'eos-copy');
  fs.mkdirSync(dir);
  for (const f of fs.readdirSync(tmp.dir)) {
    if (f !== 'config.json' && /\.(json|safetensors)$/.test(f)) fs.symlinkSync(path.join(tmp.dir, f), path.join(dir, f));
  }
  const cfg = JSON.parse(fs.readFileSync(path.join(tmp.dir, 'config.json'), 'utf8'));
  fs.writeFileSync(path.join(dir, 'config.json'), JSON.stringify({ ...cfg, eos_token_id: free.tokens[at] }));

  const engine = await loadEngine({ modelDir: dir, device: 'cpu', threads: 1, log: () => undefined });
  const scheduler = new Scheduler(engine, TextTokenizer.fromModel(engine.folder), { metrics: new Registry() });
  try {
    const out = JSON.parse((await capture(() => generateWith(engine, flags({ model: dir, ids, maxTokens: 8, json: true })))).stdout);
    expect(out.finish_reason).toBe('stop');
    expect(out.tokens).toEqual(free.tokens.slice(0, at + 1)); // ends with the EOS id
    expect(out.stats.generated_tokens).toBe(at);
    const api = new OpenAIApi({ scheduler, tokenizer: TextTokenizer.fromModel(engine.folder), modelName: 'demo' });
    const res = (await api.run(api.prepare('completions', { prompt: ids, max_tokens: 8, temperature: 0 }))) as { usage: { completion_tokens: number } };
    expect(res.usage.completion_tokens).toBe(out.stats.generated_tokens);
  } finally {
    await scheduler.close();
    await engine.close();
  }
}, 60000);

describe('--dump-logits to a path that cannot be written', () => {
  // config.json alone: the check must come before the tokenizer or weights are needed.
  const configOnly = path.join(tmp.dir, 'config-only-dump');
  beforeAll(() => {
    fs.mkdirSync(configOnly);
    fs.copyFileSync(path.join(tmp.dir, 'config.json'), path.join(configOnly, 'config.json'));
  });

  test('a missing folder or a folder as the file is one line before anything loads', async () => {
    const missing = path.join(tmp.dir, 'no-such-dir', 'logits.safetensors');
    await expect(runGenerate(flags({ model: configOnly, dumpLogits: missing })))
      .rejects.toThrow(`--dump-logits ${missing}: folder ${path.dirname(missing)} does not exist; create it or give another path`);
    await expect(runGenerate(flags({ model: configOnly, dumpLogits: tmp.dir })))
      .rejects.toThrow(`--dump-logits ${tmp.dir}: is a folder; give a file name such as ${path.join(tmp.dir, 'logits.safetensors')}`);
    const file = path.join(tmp.dir, 'config.json');
    await expect(runGenerate(flags({ model: configOnly, dumpLogits: path.join(file, 'x.safetensors') })))
      .rejects.toThrow(`--dump-logits ${path.join(file, 'x.safetensors')}: ${file} is not a folder; give a path to a new file`);
    for (const e of await Promise.all([missing, tmp.dir].map((d) => runGenerate(flags({ model: configOnly, dumpLogits: d })).catch((x: unknown) => x)))) {
      expect(e).toBeInstanceOf(UserError);
    }
  });
});

describeGolden('generate --json --dump-logits on the golden tiny-a', () => {
  const golden = goldenJson();
  const quietFlags = (over: Partial<GenerateFlags>): GenerateFlags => flags({ model: TINY_A_MODEL, json: true, ...over });

  test('prints {tokens, text, stats} with the golden greedy tokens and dumps the golden prompt logits', async () => {
    const p = golden.prompts[0];
    const dump = path.join(tmp.dir, 'golden-logits.safetensors');
    const { stdout } = await capture(() => runGenerate(quietFlags({ ids: p.ids, maxTokens: p.greedy.length, dumpLogits: dump })));
    const lines = stdout.trim().split('\n');
    expect(lines).toHaveLength(1); // one JSON object, no streamed text
    const out = JSON.parse(lines[0]);
    expect(out.tokens).toEqual(p.greedy);
    expect(typeof out.text).toBe('string');
    expect(out.finish_reason).toBe('length');
    expect(out.stats).toMatchObject({ prompt_tokens: p.ids.length, generated_tokens: p.greedy.length });
    for (const k of ['prefill_ms', 'decode_tokens_per_s', 'active_fraction']) expect(typeof out.stats[k]).toBe('number');
    expect(out.stats.active_fraction).toBeGreaterThan(0);
    expect(out.stats.active_fraction).toBeLessThan(1);

    const f = await SafetensorsFile.open(dump);
    const want = await SafetensorsFile.open(path.join(TINY_A, 'golden.safetensors')).catch(async (e: unknown) => {
      await f.close();
      throw e;
    });
    try {
      expect(f.names()).toEqual(['logits']);
      expect(f.info('logits')).toMatchObject({ dtype: 'F32', shape: [p.ids.length, 512] });
      const a = new Float32Array((await f.read('logits')).buffer);
      const b = new Float32Array((await want.read('logits.0')).buffer);
      let worst = 0;
      for (let i = 0; i < a.length; i++) worst = Math.max(worst, Math.abs(a[i] - b[i]));
      expect(worst).toBeLessThanOrEqual(golden.tolerance.logits_max_abs);
    } finally {
      await f.close();
      await want.close();
    }
  }, 60000);

  test('generation that stops at EOS ends its tokens with the EOS id, as transformers does; the text leaves it out', async () => {
    // tiny-a with eos_token_id set to the third greedy token of prompt 0.
    const p = golden.prompts[0];
    const eos = p.greedy[2];
    const dir = path.join(tmp.dir, 'tiny-a-eos');
    fs.mkdirSync(dir);
    for (const f of fs.readdirSync(TINY_A_MODEL)) {
      if (f !== 'config.json') fs.symlinkSync(path.join(TINY_A_MODEL, f), path.join(dir, f));
    }
    const cfg = JSON.parse(fs.readFileSync(path.join(TINY_A_MODEL, 'config.json'), 'utf8'));
    fs.writeFileSync(path.join(dir, 'config.json'), JSON.stringify({ ...cfg, eos_token_id: eos }));
    const { stdout } = await capture(() => runGenerate(quietFlags({ model: dir, ids: p.ids, maxTokens: 12 })));
    const out = JSON.parse(stdout);
    expect(out.tokens).toEqual(p.greedy.slice(0, 3));
    expect(out.finish_reason).toBe('stop');
    // tokens keeps the EOS; generated_tokens counts what was generated before it (as usage.completion_tokens does).
    expect(out.stats.generated_tokens).toBe(2);
    const plain = JSON.parse((await capture(() => runGenerate(quietFlags({ ids: p.ids, maxTokens: 2 })))).stdout);
    expect(out.text).toBe(plain.text); // the EOS adds no text
  }, 60000);
});

test('--min-p reaches the sampler: min-p 1 at temperature 1.5 gives the greedy tokens; out of range is one line', async () => {
  const engine = await loadEngine({ modelDir: tmp.dir, device: 'cpu', threads: 1, log: () => undefined });
  try {
    const run = async (over: Partial<GenerateFlags>) =>
      JSON.parse((await capture(() => generateWith(engine, flags({ maxTokens: 12, json: true, ...over })))).stdout).tokens;
    const greedy = await run({});
    expect(await run({ temperature: 1.5, topP: 1, minP: 1, seed: 3 })).toEqual(greedy);
    expect(await run({ temperature: 1.5, topP: 1, seed: 3 })).not.toEqual(greedy); // without it the draws differ
  } finally {
    await engine.close();
  }
  const err = await capture(async () => {
    try {
      await buildProgram().exitOverride().parseAsync(['node', 'turbosparse', 'generate', '--model', tmp.dir, '--min-p', '2'], { from: 'node' });
    } catch (e) {
      reportError(e);
    }
  });
  expect(err.stderr).toMatch(/--min-p/);
}, 60000);

test('--speculative: the same tokens, and --json stats say forward passes, proposed and kept tokens; a bad spec is one line', async () => {
  // A prompt that repeats itself, so prompt lookup finds matches.
  const ids = [1, 5, 9, 13, 17, 5, 9, 13, 17, 5, 9];
  const plain = JSON.parse((await capture(() => runGenerate(flags({ ids, maxTokens: 12, json: true })))).stdout);
  const spec = JSON.parse((await capture(() => runGenerate(flags({ ids, maxTokens: 12, json: true, speculative: 'ngram:4:2' })))).stdout);
  expect(spec.tokens).toEqual(plain.tokens);
  expect(plain.stats.draft_tokens).toBeUndefined();
  expect(plain.stats.forward_passes).toBe(plain.tokens.length); // the prefill gives the first token, then a pass per token
  expect(spec.stats.draft_tokens).toBeGreaterThan(0);
  expect(spec.stats.accepted_tokens).toBeLessThanOrEqual(spec.stats.draft_tokens);
  expect(spec.stats.accepted_tokens).toBeGreaterThan(0);
  // Each kept proposal saves a pass (one more when max_tokens cut a step's kept proposal short).
  expect(spec.stats.forward_passes).toBeLessThanOrEqual(plain.stats.forward_passes - spec.stats.accepted_tokens);
  expect(spec.stats.forward_passes).toBeGreaterThanOrEqual(plain.stats.forward_passes - spec.stats.accepted_tokens - 1);

  const argv = ['node', 'turbosparse', 'generate', '--model', tmp.dir, '--ids', '1,2', '--device', 'cpu', '--speculative', 'ngram:99'];
  const error = await buildProgram().parseAsync(argv).then(() => undefined, (e: unknown) => e);
  let code = 0;
  const { stderr } = await capture(async () => {
    code = reportError(error);
  });
  expect(code).toBe(2);
  expect(stderr).toBe('error: --speculative "ngram:99": K must be in 1..16, got 99; use ngram[:K[:N]], suffix[:K] or draft:DIR[:K] ' +
    '(K 1..16, default 4; N 1..8, default 3)\n');
});
