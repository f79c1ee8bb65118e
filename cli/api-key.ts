// Where `serve` and `stats` get the API key: --api-key, --api-key-file (so it is not in
// `ps` or the shell history), else $TURBOSPARSE_API_KEY.
import fs from 'node:fs';
import { UserError } from '../core/errors';

export interface ApiKeyFlags {
  apiKey?: string;
  apiKeyFile?: string;
}

/** The key, or undefined for none; a file that cannot be read, or is empty, is one line naming the flag. */
export function resolveApiKey(flags: ApiKeyFlags, env: NodeJS.ProcessEnv = process.env): string | undefined {
  if (flags.apiKey !== undefined && flags.apiKeyFile !== undefined) {
    throw new UserError('--api-key and --api-key-file: give one of them');
  }
  if (flags.apiKeyFile !== undefined) {
    let text: string;
    try {
      text = fs.readFileSync(flags.apiKeyFile, 'utf8');
    } catch (e) {
      throw new UserError(`--api-key-file ${flags.apiKeyFile}: cannot read it (${(e as NodeJS.ErrnoException).code ?? (e as Error).message})`);
    }
    // A trailing newline (echo KEY > file) is not part of the key.
    const key = text.replace(/\r?\n$/, '');
    if (key.trim() === '') throw new UserError(`--api-key-file ${flags.apiKeyFile}: the file is empty; write the key into it`);
    if (/[\r\n]/.test(key)) throw new UserError(`--api-key-file ${flags.apiKeyFile}: the key must be one line`);
    return key;
  }
  if (flags.apiKey !== undefined) {
    if (flags.apiKey.trim() === '') throw new UserError('--api-key: the key is empty');
    return flags.apiKey;
  }
  // Empty counts as unset (a compose file passing through a variable the shell does not set).
  return env.TURBOSPARSE_API_KEY || undefined;
}
