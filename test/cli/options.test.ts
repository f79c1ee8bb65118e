// Shared option parsers: each names its flag in the error.
import { type Command, CommanderError, InvalidArgumentError } from 'commander';
import { weightsOption } from '../../cli/options';
import { buildProgram, reportError } from '../../cli/main';
import { expertNodeProgram } from '../../cli/expert-node';

test('--weights takes the store dtypes, and int8 as another spelling of i8', () => {
  for (const v of ['auto', 'f32', 'bf16', 'f16', 'i8'] as const) expect(weightsOption(v)).toBe(v);
  expect(weightsOption('int8')).toBe('i8');
  expect(() => weightsOption('int4')).toThrow(InvalidArgumentError);
  expect(() => weightsOption('int4')).toThrow(/^--weights must be one of auto, f32, bf16, f16, i8$/);
});

describe('a command-line usage error is one line (the team rule for bad input) and exits 2 like every user error', () => {
  /** Parses argv with stderr captured; returns what was written and the exit code main() would set. */
  async function parse(program: Command, argv: string[]): Promise<{ stderr: string; code: number }> {
    const err: string[] = [];
    const spy = jest.spyOn(process.stderr, 'write').mockImplementation((chunk: string | Uint8Array) => {
      err.push(String(chunk));
      return true;
    });
    let code = 0;
    try {
      const e = await program.parseAsync(['node', 'turbosparse', ...argv]).then(() => undefined, (x: unknown) => x);
      expect(e).toBeInstanceOf(CommanderError);
      code = reportError(e);
    } finally {
      spy.mockRestore();
    }
    return { stderr: err.join(''), code };
  }

  test.each([
    [['generate', '--model', 'm', '--prompt', 'x', '--bogus'], /^error: unknown option '--bogus' \(see turbosparse generate --help\)\n$/],
    [['generate', '--prompt', 'x'], /^error: required option '--model <dir>' not specified \(see turbosparse generate --help\)\n$/],
    [['generate', '--model', 'm', '--weights', 'int4'], /^error: option .*--weights must be one of auto, f32, bf16, f16, i8 \(see turbosparse generate --help\)\n$/],
    [['batch', 'submit'], /^error: missing required argument 'file' \(see turbosparse batch submit --help\)\n$/],
    // commander puts its "(Did you mean ...?)" on a second line: it joins the first here.
    [['generat'], /^error: unknown command 'generat' \(Did you mean generate\?\) \(see turbosparse --help\)\n$/],
  ])('%j', async (argv, want) => {
    const { stderr, code } = await parse(buildProgram(), argv);
    expect(stderr).toMatch(want);
    expect(code).toBe(2);
  });

  test('the standalone expert-node command too', async () => {
    const { stderr, code } = await parse(expertNodeProgram(), ['--model', 'm', '--port', 'x']);
    expect(stderr).toMatch(/^error: option '--port <p>' argument 'x' is invalid\. --port must be an integer >= 0 \(see turbosparse expert-node --help\)\n$/);
    expect(code).toBe(2);
  });
});
