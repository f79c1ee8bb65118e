// `turbosparse profile` end to end on tiny demo models: the routing.json it writes
// (every layer's routes = tokens x top_k), its one-line file errors, and
// `make-demo-model --router-skew S`: S = 0 is today's model byte for byte, the
// measured skew grows with S and the hottest expert is the one the skew picks.
import crypto from 'node:crypto';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { UserError } from '../../core/errors';
import { makeDemoModel, routerSkewRanks, type DemoModelOptions } from '../../core/demo-model';
import { loadRoutingStats, type RoutingStats } from '../../core/placement/routing-stats';
import { runProfile, routingSkew, type ProfileFlags } from '../../cli/profile';

const TINY: Partial<DemoModelOptions> = {
  layers: 2, hidden: 64, intermediate: 128, heads: 4, kvHeads: 2, experts: 8, topK: 2, vocab: 300, predictorRank: 16, shards: 1,
};
const WORDS = 'the of and to in is was he for it with as his on be at by had are but from or have an they which one you were her all she there'.split(' ');

let dir: string;
let prompts: string;
const flags = (model: string, out: string, extra: Partial<ProfileFlags> = {}): ProfileFlags => ({
  model, prompts, out, maxTokens: 6, concurrency: 4, device: 'cpu', threads: 1, weights: 'auto', ...extra,
});

beforeAll(() => {
  dir = fs.mkdtempSync(path.join(os.tmpdir(), 'routing-profile-'));
  prompts = path.join(dir, 'prompts.jsonl');
  const lines: string[] = [];
  for (let i = 0; i < 12; i++) {
    const text = Array.from({ length: 6 + ((i * 7) % 11) }, (_, j) => WORDS[(i * 13 + j * 5) % WORDS.length]).join(' ');
    // Greedy: the same tokens, hence the same counts, every run.
    if (i % 4 === 1) lines.push(JSON.stringify({ messages: [{ role: 'user', content: text }], temperature: 0 }));
    else if (i % 4 === 2) lines.push(JSON.stringify({ url: '/v1/completions', body: { model: 'served-name', prompt: text, temperature: 0, max_tokens: 3 } }));
    else lines.push(JSON.stringify({ prompt: text, temperature: 0, stream: true }));
    if (i === 5) lines.push('');
  }
  fs.writeFileSync(prompts, lines.join('\n') + '\n');
});
afterAll(() => fs.rmSync(dir, { recursive: true, force: true }));

const sha = (file: string) => crypto.createHash('sha256').update(fs.readFileSync(file)).digest('hex');
const meanRatio = (s: RoutingStats) => routingSkew(s).reduce((a, l) => a + l.ratio, 0) / s.model.layers;

test('make-demo-model --router-skew 0 writes today\'s model byte for byte', async () => {
  const m = path.join(dir, 'skew0-f32');
  await makeDemoModel(m, { layers: 3, hidden: 64, intermediate: 128, heads: 4, kvHeads: 2, experts: 8, vocab: 300, predictorRank: 16, shards: 3, dtype: 'f32', routerSkew: 0 });
  // sha256 of the files the code wrote before --router-skew existed (same options).
  expect(sha(path.join(m, 'config.json'))).toBe('1edafd61249bd31a2ae86329230cdc00de8acbc5d080d8ca2a38101ee0691ad1');
  expect(sha(path.join(m, 'model-00001-of-00003.safetensors'))).toBe('8bafd6b0cf981c2d21a337247a061e398f3c840dca0c91bd6ac72733edd89253');
  expect(sha(path.join(m, 'model-00002-of-00003.safetensors'))).toBe('f6436f76b6b11dcd627d3a2f73a274c725251e633db177518c187a79ecc73b5c');
  expect(sha(path.join(m, 'model-00003-of-00003.safetensors'))).toBe('24042594c052f63e17f4205e22e44b69448f4e20fdbf94fe8844d0e3b7c0c2a5');
  await expect(makeDemoModel(path.join(dir, 'bad'), { ...TINY, routerSkew: -1 })).rejects.toThrow(/routerSkew must be a number >= 0/);
}, 30_000);

test('profile writes routing.json: every layer\'s routes sum to tokens x top_k; the skew grows with --router-skew', async () => {
  const ratios: number[] = [];
  const results: RoutingStats[] = [];
  for (const S of [0, 1, 3]) {
    const model = path.join(dir, `skew${S}`);
    await makeDemoModel(model, { ...TINY, routerSkew: S });
    const out = path.join(dir, `routing-${S}.json`);
    const returned = await runProfile(flags(model, out));
    const s = loadRoutingStats(out);
    expect(s).toEqual(returned);
    results.push(s);
    ratios.push(meanRatio(s));
  }
  const s = results[0];
  expect(s.source).toBe('profile');
  expect(s.model).toEqual({ name: 'skew0', layers: 2, experts: 8, top_k: 2, hidden_size: 64, intermediate_size: 128 });
  expect(s.pairs).toHaveLength(16);
  // 12 prompts of 6-16 words, chat-templated or not, plus up to 6 generated tokens each.
  expect(s.tokens).toBeGreaterThan(12 * 6);
  for (const r of results) {
    for (let L = 0; L < 2; L++) expect(r.pairs.filter((p) => p.layer === L).reduce((a, p) => a + p.routed_tokens, 0)).toBe(r.tokens * 2);
    for (const p of r.pairs) if (p.routed_tokens > 0) expect(p.active_fraction! > 0 && p.active_fraction! < 1).toBe(true);
    expect(r.nodes.map((n) => n.node)).toEqual(['local']);
  }
  // Measured (hottest share / mean share, mean over layers): grows with S; with S = 3 each
  // layer's hottest expert is the one the skew ranks first.
  expect(ratios[1]).toBeGreaterThan(ratios[0]);
  expect(ratios[2]).toBeGreaterThan(ratios[1] + 0.5);
  routingSkew(results[2]).forEach(({ layer, expert }) => expect(routerSkewRanks(42, layer, 8)[expert]).toBe(0));
  process.stderr.write(`routing skew (hottest / mean share, mean over layers) at S = 0, 1, 3: ${ratios.map((r) => r.toFixed(2)).join(', ')}\n`);
}, 60_000);

test('profile: file errors are one line naming file:line', async () => {
  const model = path.join(dir, 'skew0');
  const bad = (name: string, text: string) => {
    const f = path.join(dir, name);
    fs.writeFileSync(f, text);
    return f;
  };
  const run = (p: string, out = path.join(dir, 'x.json')) => runProfile({ ...flags(model, out), prompts: p });
  const cases: [Promise<unknown>, RegExp][] = [
    [run(bad('a.jsonl', '{"prompt": "hi"}\n{"prompt": \n')), /a\.jsonl:2: not valid JSON/],
    [run(bad('b.jsonl', '{"prompt": "hi"}\n\n{"text": "hi"}\n')), /b\.jsonl:3: no "prompt" or "messages"/],
    [run(bad('c.jsonl', '{"prompt": 5}\n')), /c\.jsonl:1: prompt/],
    [run(bad('d.jsonl', '{"messages": [{"role": "user", "content": "hi"}], "max_tokens": -1}\n')), /d\.jsonl:1: max_tokens/],
    [run(bad('e.jsonl', '\n\n')), /no prompts/],
    [run(path.join(dir, 'missing.jsonl')), /--prompts .*missing\.jsonl: cannot read it \(ENOENT\)/],
    [run(prompts, path.join(dir, 'no-such-dir', 'r.json')), /--out .*no-such-dir.*does not exist/],
  ];
  for (const [p, re] of cases) {
    const e = await p.then(() => null, (err: unknown) => err);
    expect(e).toBeInstanceOf(UserError);
    expect((e as Error).message).toMatch(re);
    expect((e as Error).message).not.toContain('\n');
  }
}, 30_000);
