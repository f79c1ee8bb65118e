// Original file: proto/expert.proto

import type { RowEncoding as _turbosparse_expert_v1_RowEncoding, RowEncoding__Output as _turbosparse_expert_v1_RowEncoding__Output } from '../../../turbosparse/expert/v1/RowEncoding';

/**
 * `count` rows of `width` values, row-major, in `encoding`. Every value must be
 * finite: a request whose hidden rows hold NaN or +-Infinity (or an int8 scale
 * that is not a finite number >= 0) is rejected INVALID_ARGUMENT, naming the row.
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
 * `count` rows of `width` values, row-major, in `encoding`. Every value must be
 * finite: a request whose hidden rows hold NaN or +-Infinity (or an int8 scale
 * that is not a finite number >= 0) is rejected INVALID_ARGUMENT, naming the row.
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
