import type * as grpc from '@grpc/grpc-js';
import type { EnumTypeDefinition, MessageTypeDefinition } from '@grpc/proto-loader';

import type { ExpertId as _turbosparse_expert_v1_ExpertId, ExpertId__Output as _turbosparse_expert_v1_ExpertId__Output } from './turbosparse/expert/v1/ExpertId';
import type { ExpertNodeClient as _turbosparse_expert_v1_ExpertNodeClient, ExpertNodeDefinition as _turbosparse_expert_v1_ExpertNodeDefinition } from './turbosparse/expert/v1/ExpertNode';
import type { ExpertRequest as _turbosparse_expert_v1_ExpertRequest, ExpertRequest__Output as _turbosparse_expert_v1_ExpertRequest__Output } from './turbosparse/expert/v1/ExpertRequest';
import type { ExpertResponse as _turbosparse_expert_v1_ExpertResponse, ExpertResponse__Output as _turbosparse_expert_v1_ExpertResponse__Output } from './turbosparse/expert/v1/ExpertResponse';
import type { ExpertsChange as _turbosparse_expert_v1_ExpertsChange, ExpertsChange__Output as _turbosparse_expert_v1_ExpertsChange__Output } from './turbosparse/expert/v1/ExpertsChange';
import type { InfoRequest as _turbosparse_expert_v1_InfoRequest, InfoRequest__Output as _turbosparse_expert_v1_InfoRequest__Output } from './turbosparse/expert/v1/InfoRequest';
import type { InfoResponse as _turbosparse_expert_v1_InfoResponse, InfoResponse__Output as _turbosparse_expert_v1_InfoResponse__Output } from './turbosparse/expert/v1/InfoResponse';
import type { Mask as _turbosparse_expert_v1_Mask, Mask__Output as _turbosparse_expert_v1_Mask__Output } from './turbosparse/expert/v1/Mask';
import type { RequestError as _turbosparse_expert_v1_RequestError, RequestError__Output as _turbosparse_expert_v1_RequestError__Output } from './turbosparse/expert/v1/RequestError';
import type { Route as _turbosparse_expert_v1_Route, Route__Output as _turbosparse_expert_v1_Route__Output } from './turbosparse/expert/v1/Route';
import type { Rows as _turbosparse_expert_v1_Rows, Rows__Output as _turbosparse_expert_v1_Rows__Output } from './turbosparse/expert/v1/Rows';

type SubtypeConstructor<Constructor extends new (...args: any) => any, Subtype> = {
  new(...args: ConstructorParameters<Constructor>): Subtype;
};

export interface ProtoGrpcType {
  turbosparse: {
    expert: {
      v1: {
        ExpertId: MessageTypeDefinition<_turbosparse_expert_v1_ExpertId, _turbosparse_expert_v1_ExpertId__Output>
        ExpertNode: SubtypeConstructor<typeof grpc.Client, _turbosparse_expert_v1_ExpertNodeClient> & { service: _turbosparse_expert_v1_ExpertNodeDefinition }
        ExpertRequest: MessageTypeDefinition<_turbosparse_expert_v1_ExpertRequest, _turbosparse_expert_v1_ExpertRequest__Output>
        ExpertResponse: MessageTypeDefinition<_turbosparse_expert_v1_ExpertResponse, _turbosparse_expert_v1_ExpertResponse__Output>
        ExpertsChange: MessageTypeDefinition<_turbosparse_expert_v1_ExpertsChange, _turbosparse_expert_v1_ExpertsChange__Output>
        InfoRequest: MessageTypeDefinition<_turbosparse_expert_v1_InfoRequest, _turbosparse_expert_v1_InfoRequest__Output>
        InfoResponse: MessageTypeDefinition<_turbosparse_expert_v1_InfoResponse, _turbosparse_expert_v1_InfoResponse__Output>
        Mask: MessageTypeDefinition<_turbosparse_expert_v1_Mask, _turbosparse_expert_v1_Mask__Output>
        RequestError: MessageTypeDefinition<_turbosparse_expert_v1_RequestError, _turbosparse_expert_v1_RequestError__Output>
        Route: MessageTypeDefinition<_turbosparse_expert_v1_Route, _turbosparse_expert_v1_Route__Output>
        RowEncoding: EnumTypeDefinition
        Rows: MessageTypeDefinition<_turbosparse_expert_v1_Rows, _turbosparse_expert_v1_Rows__Output>
      }
    }
  }
}

