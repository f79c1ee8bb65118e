// The JSONL job reader shared by `batch submit FILE` and `profile --prompts FILE`: each command's
// own wording, 1-based line numbers counting blank lines, one-line UserErrors, the accepted shapes.
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { UserError } from '../../core/errors';
import { readJobsFile } from '../../cli/batch';
import { readPromptLines } from '../../cli/profile';

let dir: string;
beforeAll(() => {
  dir = fs.mkdtempSync(path.join(os.tmpdir(), 'ts-job-lines-'));
});
afterAll(() => fs.rmSync(dir, { recursive: true, force: true }));

const file = (name: string, text: string) => {
  const f = path.join(dir, name);
  fs.writeFileSync(f, text);
  return f;
};

async function message(p: Promise<unknown>): Promise<string> {
  const e = await p.then(() => null, (err: unknown) => err);
  expect(e).toBeInstanceOf(UserError);
  const m = (e as Error).message;
  expect(m).not.toContain('\n');
  return m;
}

const GOOD = [
  '{"prompt": "hi", "max_tokens": 3}',
  '',
  '   ',
  '{"messages": [{"role": "user", "content": "hi"}]}',
  '{"custom_id": "c1", "method": "POST", "url": "/v1/chat/completions", "body": {"messages": [{"role": "user", "content": "x"}]}}',
  '{"endpoint": "completions", "prompt": "abc"}',
].join('\n') + '\n';

test('both commands accept the same lines and give the same jobs; profile keeps each line\'s file:line', async () => {
  const f = file('good.jsonl', GOOD);
  const jobs = await readJobsFile(f);
  const prompts = await readPromptLines(f);
  expect(prompts.map((p) => p.data)).toEqual(jobs);
  expect(prompts.map((p) => p.where)).toEqual([1, 4, 5, 6].map((n) => `${f}:${n}`));
  expect(jobs.map((j) => j.endpoint)).toEqual(['completions', 'chat.completions', 'chat.completions', 'completions']);
  expect(jobs[0]).toEqual({ prompt: 'hi', max_tokens: 3, endpoint: 'completions' });
  expect(jobs[2]).toEqual({ messages: [{ role: 'user', content: 'x' }], custom_id: 'c1', endpoint: 'chat.completions' });
});

test('batch submit wording', async () => {
  const missing = path.join(dir, 'missing.jsonl');
  expect(await message(readJobsFile(missing))).toBe(`${missing}: cannot read (ENOENT)`);
  const bad = file('b-bad.jsonl', '{"prompt": "hi"}\n\n{"prompt": \n');
  expect(await message(readJobsFile(bad))).toMatch(new RegExp(`^${bad}:3: not valid JSON \\([^)]+\\)$`));
  const empty = file('b-empty.jsonl', '\n  \n');
  expect(await message(readJobsFile(empty))).toBe(`${empty}: no requests (expected one JSON request per line)`);
  // No prompt check of its own: a line without one fails jobDataFrom's validation, naming the line.
  const noPrompt = file('b-noprompt.jsonl', '{"prompt": "hi"}\n{"text": "hi"}\n');
  expect(await message(readJobsFile(noPrompt))).toMatch(new RegExp(`^${noPrompt}:2: `));
  expect(await message(readJobsFile(noPrompt))).not.toMatch(/no "prompt" or "messages"/);
  const notObject = file('b-array.jsonl', '[1]\n');
  expect(await message(readJobsFile(notObject))).toBe(`${notObject}:1: expected a JSON object`);
});

test('profile --prompts wording', async () => {
  const expected = 'expected {"prompt": "..."} or {"messages": [...]}';
  const missing = path.join(dir, 'missing.jsonl');
  expect(await message(readPromptLines(missing))).toBe(`--prompts ${missing}: cannot read it (ENOENT)`);
  const bad = file('p-bad.jsonl', '{"prompt": "hi"}\n\n{"prompt": \n');
  expect(await message(readPromptLines(bad))).toMatch(new RegExp(`^${bad}:3: not valid JSON \\([^)]+\\); ${expected.replace(/[[\]{}.()]/g, '\\$&')}$`));
  const empty = file('p-empty.jsonl', '\n  \n');
  expect(await message(readPromptLines(empty))).toBe(`--prompts ${empty}: no prompts (expected one JSON object per line)`);
  const noPrompt = file('p-noprompt.jsonl', '{"prompt": "hi"}\n\n{"text": "hi"}\n');
  expect(await message(readPromptLines(noPrompt))).toBe(`${noPrompt}:3: no "prompt" or "messages"; ${expected}`);
  // Not an object: the check leaves it to jobDataFrom.
  const notObject = file('p-array.jsonl', '[1]\n');
  expect(await message(readPromptLines(notObject))).toBe(`${notObject}:1: expected a JSON object`);
  const badField = file('p-field.jsonl', '{"prompt": 5}\n');
  expect(await message(readPromptLines(badField))).toMatch(new RegExp(`^${badField}:1: prompt`));
});
