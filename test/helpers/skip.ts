// Tests that need an optional tool (chromium, kubectl, an arm64 cross toolchain) are real skips
// when it is missing: counted as skipped, with the reason in the title, which the skip summary
// reporter (skip-summary-reporter.js, in jest.config.js) lists once at the end of the run.

/** The title of a test or block skipped for `reason` (none: the title as it is). */
export function skippedTitle(title: string, reason: string | null): string {
  return reason === null ? title : `${title} [skipped: ${reason}]`;
}

/** `test` when `reason` is null, else `test.skip` with the reason in the title. */
export function testUnless(reason: string | null) {
  return (title: string, fn: jest.ProvidesCallback, timeout?: number): void =>
    (reason === null ? test : test.skip)(skippedTitle(title, reason), fn, timeout);
}

/** `describe` when `reason` is null, else `describe.skip` with the reason in the title. */
export function describeUnless(reason: string | null) {
  return (title: string, fn: () => void): void => (reason === null ? describe : describe.skip)(skippedTitle(title, reason), fn);
}
