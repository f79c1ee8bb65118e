/** Unit tests run next to no server; integration tests start real processes on loopback. */
module.exports = {
  testEnvironment: 'node',
  roots: ['<rootDir>/test'],
  testMatch: ['**/*.test.ts'],
  transform: { '^.+\\.ts$': ['ts-jest', { tsconfig: 'tsconfig.json', diagnostics: { warnOnly: false } }] },
  testTimeout: 120000,
  maxWorkers: 2,
  // After the usual output: which tests were skipped (a missing optional tool) and why.
  reporters: ['default', '<rootDir>/test/helpers/skip-summary-reporter.js'],
};
