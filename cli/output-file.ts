// A file a command writes at its end (generate --dump-logits, profile --out), checked at its start:
// a wrong path is one line before a model loads, not an error after the whole run.
import fs from 'node:fs';
import path from 'node:path';
import { UserError } from '../core/errors';

/**
 * `file` must name a file (not a folder) in a folder that exists and can be written. `flag` names
 * the option in the error (`--out`); `example` is the file name suggested when `file` is a folder.
 */
export function checkOutputFile(flag: string, file: string, example: string): void {
  const dir = path.dirname(path.resolve(file));
  let dirStat: fs.Stats;
  try {
    dirStat = fs.statSync(dir);
  } catch {
    throw new UserError(`${flag} ${file}: folder ${dir} does not exist; create it or give another path`);
  }
  if (!dirStat.isDirectory()) throw new UserError(`${flag} ${file}: ${dir} is not a folder; give a path to a new file`);
  try {
    fs.accessSync(dir, fs.constants.W_OK);
  } catch {
    throw new UserError(`${flag} ${file}: folder ${dir} is not writable; give another path`);
  }
  if (fs.existsSync(file) && fs.statSync(file).isDirectory()) {
    throw new UserError(`${flag} ${file}: is a folder; give a file name such as ${path.join(file, example)}`);
  }
}
