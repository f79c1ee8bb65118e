// Original file: proto/expert.proto

import type { ExpertId as _turbosparse_expert_v1_ExpertId, ExpertId__Output as _turbosparse_expert_v1_ExpertId__Output } from '../../../turbosparse/expert/v1/ExpertId';

export interface ExpertsChange {
  'experts'?: (_turbosparse_expert_v1_ExpertId)[];
}

export interface ExpertsChange__Output {
  'experts': (_turbosparse_expert_v1_ExpertId__Output)[];
}
