// Original file: proto/expert.proto

/**
 * How hidden and output rows travel. The coordinator chooses; f32 is bit-exact.
 */
export const RowEncoding = {
  /**
   * 4 bytes per value, little-endian IEEE float
   */
  ROW_F32: 'ROW_F32',
  /**
   * 2 bytes per value: the upper half of the f32, rounded to nearest even
   */
  ROW_BF16: 'ROW_BF16',
  /**
   * 1 byte per value, value = q * scale, one f32 scale per row in `scales`
   */
  ROW_INT8: 'ROW_INT8',
} as const;

/**
 * How hidden and output rows travel. The coordinator chooses; f32 is bit-exact.
 */
export type RowEncoding =
  /**
   * 4 bytes per value, little-endian IEEE float
   */
  | 'ROW_F32'
  | 0
  /**
   * 2 bytes per value: the upper half of the f32, rounded to nearest even
   */
  | 'ROW_BF16'
  | 1
  /**
   * 1 byte per value, value = q * scale, one f32 scale per row in `scales`
   */
  | 'ROW_INT8'
  | 2

/**
 * How hidden and output rows travel. The coordinator chooses; f32 is bit-exact.
 */
export type RowEncoding__Output = typeof RowEncoding[keyof typeof RowEncoding]
