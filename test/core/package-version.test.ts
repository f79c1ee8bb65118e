// packageVersion(): the one lookup behind `--version` and the tracing resource's service.version.
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { packageVersion } from '../../core/package-version';

const ROOT = path.resolve(__dirname, '../..');

test('from core/ it finds the repository package.json', () => {
  const { version } = JSON.parse(fs.readFileSync(path.join(ROOT, 'package.json'), 'utf8')) as { version: string };
  expect(packageVersion()).toBe(version);
});

test('walks up past other packages and unreadable files to the nearest turbosparse; unknown when none', () => {
  const top = fs.mkdtempSync(path.join(os.tmpdir(), 'ts-pkgver-'));
  try {
    const ours = path.join(top, 'app');
    const vendored = path.join(ours, 'node_modules', 'other');
    const broken = path.join(vendored, 'dist');
    const start = path.join(broken, 'core');
    fs.mkdirSync(start, { recursive: true });
    fs.writeFileSync(path.join(ours, 'package.json'), JSON.stringify({ name: 'turbosparse', version: '9.8.7' }));
    fs.writeFileSync(path.join(vendored, 'package.json'), JSON.stringify({ name: 'other', version: '1.0.0' }));
    fs.writeFileSync(path.join(broken, 'package.json'), '{ not json');
    expect(packageVersion(start)).toBe('9.8.7');
    // Named turbosparse but without a version: keep looking rather than answer nothing.
    fs.writeFileSync(path.join(vendored, 'package.json'), JSON.stringify({ name: 'turbosparse' }));
    expect(packageVersion(start)).toBe('9.8.7');
    fs.rmSync(path.join(ours, 'package.json'));
    expect(packageVersion(start)).toBe('unknown');
  } finally {
    fs.rmSync(top, { recursive: true, force: true });
  }
});
