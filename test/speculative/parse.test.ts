import { UserError } from '../../core/errors';
import { NgramProposer } from '../../coordinator/speculative/ngram';
import { parseSpeculative, parseSpeculativeChoice } from '../../coordinator/speculative/parse';
import { SuffixProposer } from '../../coordinator/speculative/suffix';

describe('parseSpeculative', () => {
  test('ngram forms and defaults', () => {
    const a = parseSpeculative('ngram');
    expect(a).toBeInstanceOf(NgramProposer);
    expect(a.name).toBe('ngram:4:3');
    expect(a.k).toBe(4);
    expect(parseSpeculative('ngram:7').name).toBe('ngram:7:3');
    const b = parseSpeculative('ngram:16:8') as NgramProposer;
    expect([b.k, b.n]).toEqual([16, 8]);
    expect(parseSpeculative('ngram:1:1').name).toBe('ngram:1:1');
  });

  test('suffix forms and defaults', () => {
    const a = parseSpeculative('suffix');
    expect(a).toBeInstanceOf(SuffixProposer);
    expect(a.name).toBe('suffix:4');
    expect(parseSpeculative('suffix:12').k).toBe(12);
  });

  test('the parsed proposers work', () => {
    expect(parseSpeculative('ngram:2').propose(1, [1, 2, 3, 1, 2], 8)).toEqual([3, 1]);
    expect(parseSpeculative('suffix:3').propose(1, [1, 2, 3, 1, 2], 8)).toEqual([3, 1, 2]);
  });

  test('draft:DIR[:K] is a folder and K for the engine to load; parseSpeculative alone refuses it', () => {
    expect(parseSpeculativeChoice('draft:/models/tiny')).toEqual({ draft: { dir: '/models/tiny', k: 4 } });
    expect(parseSpeculativeChoice('draft:/models/tiny:6')).toEqual({ draft: { dir: '/models/tiny', k: 6 } });
    expect(parseSpeculativeChoice('draft:C:/m:2')).toEqual({ draft: { dir: 'C:/m', k: 2 } });
    expect(() => parseSpeculativeChoice('draft:')).toThrow(/^--speculative "draft:": draft needs a model folder/);
    expect(() => parseSpeculativeChoice('draft:/m:17')).toThrow(/K must be in 1..16, got 17/);
    expect(parseSpeculativeChoice('ngram:2')).toEqual({ proposer: expect.any(NgramProposer) });
    expect(() => parseSpeculative('draft:/models/tiny')).toThrow(UserError);
  });

  test.each([
    ['', 'unknown proposer'],
    ['eagle', 'unknown proposer'],
    ['NGRAM', 'unknown proposer'],
    ['ngram:', 'K must be an integer'],
    ['ngram:0', 'K must be in 1..16, got 0'],
    ['ngram:17', 'K must be in 1..16, got 17'],
    ['ngram:4:0', 'N must be in 1..8, got 0'],
    ['ngram:4:9', 'N must be in 1..8, got 9'],
    ['ngram:4:3:1', 'too many fields'],
    ['ngram:-1', 'K must be an integer'],
    ['ngram:2.5', 'K must be an integer'],
    ['ngram:x', 'K must be an integer'],
    ['suffix:0', 'K must be in 1..16, got 0'],
    ['suffix:4:3', 'too many fields'],
    ['suffix:1e1', 'K must be an integer'],
  ])('%j is a one-line UserError naming --speculative and the accepted forms', (spec, why) => {
    let err: unknown;
    try {
      parseSpeculative(spec);
    } catch (e) {
      err = e;
    }
    expect(err).toBeInstanceOf(UserError);
    const msg = (err as Error).message;
    expect(msg).not.toContain('\n');
    expect(msg).toContain('--speculative');
    expect(msg).toContain(why);
    expect(msg).toContain('ngram[:K[:N]], suffix[:K] or draft:DIR[:K]');
  });
});
