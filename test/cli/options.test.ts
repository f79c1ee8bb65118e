// Shared option parsers: each names its flag in the error.
import { InvalidArgumentError } from 'commander';
import { weightsOption } from '../../cli/options';

test('--weights takes the store dtypes, and int8 as another spelling of i8', () => {
  for (const v of ['auto', 'f32', 'bf16', 'f16', 'i8'] as const) expect(weightsOption(v)).toBe(v);
  expect(weightsOption('int8')).toBe('i8');
  expect(() => weightsOption('int4')).toThrow(InvalidArgumentError);
  expect(() => weightsOption('int4')).toThrow(/^--weights must be one of auto, f32, bf16, f16, i8$/);
});
