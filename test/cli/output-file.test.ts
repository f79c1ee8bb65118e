// checkOutputFile: the start-of-run check of a file written at the end (generate --dump-logits, profile --out).
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { UserError } from '../../core/errors';
import { checkOutputFile } from '../../cli/output-file';

let dir: string;
beforeAll(() => {
  dir = fs.mkdtempSync(path.join(os.tmpdir(), 'ts-output-file-'));
});
afterAll(() => fs.rmSync(dir, { recursive: true, force: true }));

function message(fn: () => void): string {
  try {
    fn();
  } catch (e) {
    expect(e).toBeInstanceOf(UserError);
    return (e as Error).message;
  }
  throw new Error('expected a UserError');
}

test.each([
  ['--out', 'routing.json'],
  ['--dump-logits', 'logits.safetensors'],
])('%s: each wrong path is one line naming the flag; a new or existing file passes', (flag, example) => {
  const missing = path.join(dir, 'no-such-dir', 'f.json');
  expect(message(() => checkOutputFile(flag, missing, example)))
    .toBe(`${flag} ${missing}: folder ${path.dirname(missing)} does not exist; create it or give another path`);
  expect(message(() => checkOutputFile(flag, dir, example)))
    .toBe(`${flag} ${dir}: is a folder; give a file name such as ${path.join(dir, example)}`);
  const plain = path.join(dir, 'plain.txt');
  fs.writeFileSync(plain, 'x');
  const under = path.join(plain, 'f.json');
  expect(message(() => checkOutputFile(flag, under, example))).toBe(`${flag} ${under}: ${plain} is not a folder; give a path to a new file`);
  expect(() => checkOutputFile(flag, path.join(dir, 'new.json'), example)).not.toThrow();
  expect(() => checkOutputFile(flag, plain, example)).not.toThrow();
});
