// Original file: proto/expert.proto

import type { Mask as _turbosparse_expert_v1_Mask, Mask__Output as _turbosparse_expert_v1_Mask__Output } from '../../../turbosparse/expert/v1/Mask';

/**
 * One (token, expert) pair routed to this node.
 */
export interface Route {
  /**
   * index into the request's `hidden` rows
   */
  'row'?: (number);
  /**
   * expert id within `layer`
   */
  'expert'?: (number);
  /**
   * renormalised routing weight
   */
  'weight'?: (number | string);
  'mask'?: (_turbosparse_expert_v1_Mask | null);
}

/**
 * One (token, expert) pair routed to this node.
 */
export interface Route__Output {
  /**
   * index into the request's `hidden` rows
   */
  'row': (number);
  /**
   * expert id within `layer`
   */
  'expert': (number);
  /**
   * renormalised routing weight
   */
  'weight': (number);
  'mask': (_turbosparse_expert_v1_Mask__Output | null);
}
