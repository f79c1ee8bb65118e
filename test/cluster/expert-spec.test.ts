// --experts SPEC parsing and compact formatting.
import { formatExpertSpec, parseExpertSpec } from '../../core/expert-spec';

const dims = { numLayers: 32, numExperts: 8 };
const pairs = (list: [number, number][]) => list.map(([layer, expert]) => ({ layer, expert }));

describe('parseExpertSpec', () => {
  test('ranges, single pairs and * expand to sorted unique pairs', () => {
    expect(parseExpertSpec('0-1:0-1', dims)).toEqual(pairs([[0, 0], [0, 1], [1, 0], [1, 1]]));
    expect(parseExpertSpec('3:*, 0:5,0:1,0:5', dims)).toEqual(pairs([[0, 1], [0, 5], ...[0, 1, 2, 3, 4, 5, 6, 7].map((e) => [3, e] as [number, number])]));
    expect(parseExpertSpec('0-31:0-3', dims)).toHaveLength(128);
    expect(parseExpertSpec('*', { numLayers: 2, numExperts: 4 })).toHaveLength(8);
    expect(parseExpertSpec('*:2', { numLayers: 3, numExperts: 4 })).toEqual(pairs([[0, 2], [1, 2], [2, 2]]));
    // Without model sizes numbers are taken as they are.
    expect(parseExpertSpec('40:9')).toEqual(pairs([[40, 9]]));
  });

  test.each([
    ['', 'empty'],
    ['0:1,,0:2', 'an empty item between commas'],
    ['0-31', '"0-31" is not LAYERS:EXPERTS'],
    ['0:1:2', '"0:1:2" is not LAYERS:EXPERTS'],
    ['0:x', '"x" in "0:x" is not an expert number, range N-M or *'],
    ['5-3:0', 'layer range 5-3 in "5-3:0" runs backwards'],
    ['32:0', 'layer 32 in "32:0" is out of range (the model has 32 layers: 0-31)'],
    ['0:0-8', 'expert 8 in "0:0-8" is out of range (the model has 8 experts: 0-7)'],
  ])('"%s" is rejected: %s', (spec, message) => {
    expect(() => parseExpertSpec(spec, dims)).toThrow(message);
    expect(() => parseExpertSpec(spec, dims)).toThrow(/^--experts ".*": .*\(expected e\.g\. "0-31:0-3" or "0:1,0:5,3:\*"\)$/);
  });

  test('* needs the model sizes', () => {
    expect(() => parseExpertSpec('0:*')).toThrow('"*" in "0:*" needs the model\'s expert count');
  });
});

describe('formatExpertSpec', () => {
  test('merges layers with the same experts and runs of experts', () => {
    expect(formatExpertSpec(parseExpertSpec('0-31:0-3', dims))).toBe('0-31:0-3');
    expect(formatExpertSpec(pairs([[0, 1], [0, 5], [3, 0], [3, 1], [3, 2], [4, 0], [4, 1], [4, 2]]))).toBe('0:1,0:5,3-4:0-2');
    expect(formatExpertSpec(pairs([[0, 0], [2, 0]]))).toBe('0:0,2:0');
    expect(formatExpertSpec([])).toBe('');
  });

  test('round-trips any set of pairs', () => {
    let seed = 7;
    const rand = () => ((seed = (seed * 1103515245 + 12345) % 2 ** 31) / 2 ** 31);
    for (let trial = 0; trial < 50; trial++) {
      const set = pairs(Array.from({ length: 1 + Math.floor(rand() * 40) }, () => [Math.floor(rand() * 6), Math.floor(rand() * 8)] as [number, number]));
      const spec = formatExpertSpec(set);
      expect(formatExpertSpec(parseExpertSpec(spec, dims))).toBe(spec);
      expect(parseExpertSpec(spec, dims)).toEqual(parseExpertSpec(set.map((p) => `${p.layer}:${p.expert}`).join(','), dims));
    }
  });
});
