// Original file: proto/expert.proto

import type { RowEncoding as _turbosparse_expert_v1_RowEncoding, RowEncoding__Output as _turbosparse_expert_v1_RowEncoding__Output } from '../../../turbosparse/expert/v1/RowEncoding';

/**
 * `count` rows of `width` values, row-major, in `encoding`.
 */
export interface Rows {
  'encoding'?: (_turbosparse_expert_v1_RowEncoding);
  'count'?: (number);
  'width'?: (number);
  'data'?: (Buffer | Uint8Array | string);
  /**
   * ROW_INT8 only: `count` little-endian f32 scales
   */
  'scales'?: (Buffer | Uint8Array | string);
}

/**
 * `count` rows of `width` values, row-major, in `encoding`.
 */
export interface Rows__Output {
  'encoding': (_turbosparse_expert_v1_RowEncoding__Output);
  'count': (number);
  'width': (number);
  'data': (Buffer);
  /**
   * ROW_INT8 only: `count` little-endian f32 scales
   */
  'scales': (Buffer);
}
