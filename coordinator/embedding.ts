// Token ids -> hidden rows, converted from the checkpoint's dtype on lookup
// (the table stays as stored: 2 bytes per element for a bf16 checkpoint).
import type { HostMatrix } from '../core/native';
import { toF32 } from '../core/dtype';

const BYTES = { f32: 4, f16: 2, bf16: 2 } as const;

export function embedTokens(table: HostMatrix, tokens: ArrayLike<number>, out: Float32Array): void {
  const H = table.cols;
  const rowBytes = H * BYTES[table.dtype];
  for (let i = 0; i < tokens.length; i++) {
    const id = tokens[i];
    if (!Number.isInteger(id) || id < 0 || id >= table.rows) {
      throw new RangeError(`token id ${id} is outside the vocabulary (0..${table.rows - 1})`);
    }
    const bytes = table.data.subarray(id * rowBytes, (id + 1) * rowBytes);
    out.set(toF32(table.dtype === 'f32' ? 'F32' : table.dtype === 'f16' ? 'F16' : 'BF16', bytes), i * H);
  }
}
