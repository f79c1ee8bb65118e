// NaN and infinity checks for rows of floats: a step whose hidden states or
// logits hold one must fail, never sample (argmax over NaN picks an arbitrary id).

/** Index of the first NaN or +-Infinity in `a`, or -1. */
export function firstNonFinite(a: Float32Array): number {
  // One multiply-add per value on the common path: x * 0 is 0 unless x is NaN or infinite.
  let s = 0;
  for (let i = 0; i < a.length; i++) s += a[i] * 0;
  if (s === 0) return -1;
  for (let i = 0; i < a.length; i++) if (!Number.isFinite(a[i])) return i;
  return -1;
}

/** A step produced NaN or infinity before sampling. */
export class NonFiniteError extends Error {
  constructor(message: string) {
    super(message);
    this.name = 'NonFiniteError';
  }
}

/**
 * Throws NonFiniteError "`what`: non-finite value (NaN) at row r, column c" when `a` ([rows, width]) holds one;
 * `firstRow` is added to r (a micro-batch's rows start there in the step).
 */
export function assertFinite(a: Float32Array, width: number, what: string, firstRow = 0): void {
  const i = firstNonFinite(a);
  if (i < 0) return;
  throw new NonFiniteError(`${what}: non-finite value (${a[i]}) at row ${firstRow + Math.floor(i / width)}, column ${i % width}; ` +
    'the step stops rather than sample from it');
}
