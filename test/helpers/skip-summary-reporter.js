// A jest reporter: at the end of a run, every skipped test with why (the "[skipped: ...]" its
// title carries, see test/helpers/skip.ts), so a missing optional tool is seen, not silently
// lost in the log. Tests skipped without a reason are counted per file.
'use strict';
const path = require('node:path');

const REASON = /\[skipped: (.*)\]/;

class SkipSummaryReporter {
  constructor(globalConfig) {
    this.rootDir = globalConfig.rootDir;
  }

  onRunComplete(_contexts, results) {
    const reasons = new Map(); // reason -> files
    const unexplained = new Map(); // file -> count
    for (const file of results.testResults) {
      const rel = path.relative(this.rootDir, file.testFilePath);
      for (const t of file.testResults) {
        if (t.status !== 'pending' && t.status !== 'skipped' && t.status !== 'todo') continue;
        const why = REASON.exec(t.fullName);
        if (why) {
          if (!reasons.has(why[1])) reasons.set(why[1], new Set());
          reasons.get(why[1]).add(rel);
        } else unexplained.set(rel, (unexplained.get(rel) ?? 0) + 1);
      }
    }
    if (reasons.size === 0 && unexplained.size === 0) return;
    const lines = ['', 'Skipped tests:'];
    for (const [why, files] of reasons) lines.push(`  ${why} (${[...files].join(', ')})`);
    for (const [file, n] of unexplained) lines.push(`  ${file}: ${n} skipped (see the file's own message)`);
    process.stderr.write(lines.join('\n') + '\n\n');
  }
}

module.exports = SkipSummaryReporter;
