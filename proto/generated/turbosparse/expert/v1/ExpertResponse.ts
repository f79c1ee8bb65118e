// Original file: proto/expert.proto

import type { RequestError as _turbosparse_expert_v1_RequestError, RequestError__Output as _turbosparse_expert_v1_RequestError__Output } from '../../../turbosparse/expert/v1/RequestError';
import type { Rows as _turbosparse_expert_v1_Rows, Rows__Output as _turbosparse_expert_v1_Rows__Output } from '../../../turbosparse/expert/v1/Rows';
import type { Long } from '@grpc/proto-loader';

export interface ExpertResponse {
  'id'?: (number | string | Long);
  /**
   * set when this request failed
   */
  'error'?: (_turbosparse_expert_v1_RequestError | null);
  /**
   * one pre-combined row per request hidden row, in request order
   */
  'out'?: (_turbosparse_expert_v1_Rows | null);
  /**
   * neurons computed (mask AND both relus > 0) per route, in request order
   */
  'active'?: (number)[];
  /**
   * from arrival to the start of compute
   */
  'queueUs'?: (number);
  /**
   * the expert kernels
   */
  'computeUs'?: (number);
}

export interface ExpertResponse__Output {
  'id': (number);
  /**
   * set when this request failed
   */
  'error': (_turbosparse_expert_v1_RequestError__Output | null);
  /**
   * one pre-combined row per request hidden row, in request order
   */
  'out': (_turbosparse_expert_v1_Rows__Output | null);
  /**
   * neurons computed (mask AND both relus > 0) per route, in request order
   */
  'active': (number)[];
  /**
   * from arrival to the start of compute
   */
  'queueUs': (number);
  /**
   * the expert kernels
   */
  'computeUs': (number);
}
