// Original file: proto/expert.proto

import type { ExpertId as _turbosparse_expert_v1_ExpertId, ExpertId__Output as _turbosparse_expert_v1_ExpertId__Output } from '../../../turbosparse/expert/v1/ExpertId';
import type { Long } from '@grpc/proto-loader';

export interface InfoResponse {
  'modelId'?: (string);
  'hiddenSize'?: (number);
  'intermediateSize'?: (number);
  'numLayers'?: (number);
  'numExperts'?: (number);
  /**
   * the (layer, expert) pairs held
   */
  'experts'?: (_turbosparse_expert_v1_ExpertId)[];
  /**
   * the same, as an --experts SPEC ("0-31:0-3")
   */
  'expertsSpec'?: (string);
  /**
   * weights as stored: f32 | f16 | bf16 | i8
   */
  'dtype'?: (string);
  /**
   * cpu | cuda
   */
  'device'?: (string);
  /**
   * the kernel backend's description, e.g. "cpu avx2 (2 threads)"
   */
  'kernels'?: (string);
  'weightBytes'?: (number | string | Long);
  /**
   * the kernel library's version
   */
  'version'?: (string);
  /**
   * What placement needs (`shard-map --nodes-file`, `rebalance`):
   */
  'memoryBudgetBytes'?: (number | string | Long);
  /**
   * measured at start: weight bytes of active neurons the sparse FFN reads per second
   */
  'ffnBytesPerS'?: (number | string);
  /**
   * --name, for tables (may be empty)
   */
  'nodeName'?: (string);
}

export interface InfoResponse__Output {
  'modelId': (string);
  'hiddenSize': (number);
  'intermediateSize': (number);
  'numLayers': (number);
  'numExperts': (number);
  /**
   * the (layer, expert) pairs held
   */
  'experts': (_turbosparse_expert_v1_ExpertId__Output)[];
  /**
   * the same, as an --experts SPEC ("0-31:0-3")
   */
  'expertsSpec': (string);
  /**
   * weights as stored: f32 | f16 | bf16 | i8
   */
  'dtype': (string);
  /**
   * cpu | cuda
   */
  'device': (string);
  /**
   * the kernel backend's description, e.g. "cpu avx2 (2 threads)"
   */
  'kernels': (string);
  'weightBytes': (number);
  /**
   * the kernel library's version
   */
  'version': (string);
  /**
   * What placement needs (`shard-map --nodes-file`, `rebalance`):
   */
  'memoryBudgetBytes': (number);
  /**
   * measured at start: weight bytes of active neurons the sparse FFN reads per second
   */
  'ffnBytesPerS': (number);
  /**
   * --name, for tables (may be empty)
   */
  'nodeName': (string);
}
