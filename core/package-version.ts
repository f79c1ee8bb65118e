// turbosparse's version from package.json, for `--version` and the tracing resource's service.version.
import fs from 'node:fs';
import path from 'node:path';

/**
 * The version of the nearest package.json named turbosparse at or above `from` (this file's folder:
 * core/ when run from ts, dist/core/ when built), else 'unknown'. Another package's package.json
 * on the way up (a folder we were vendored into) is skipped, not taken.
 */
export function packageVersion(from: string = __dirname): string {
  for (let dir = path.resolve(from); ; dir = path.dirname(dir)) {
    const file = path.join(dir, 'package.json');
    if (fs.existsSync(file)) {
      try {
        const pkg = JSON.parse(fs.readFileSync(file, 'utf8')) as { name?: string; version?: string };
        if (pkg.name === 'turbosparse' && pkg.version) return pkg.version;
      } catch {
        /* unreadable or not JSON: not ours, keep looking */
      }
    }
    if (path.dirname(dir) === dir) return 'unknown';
  }
}
