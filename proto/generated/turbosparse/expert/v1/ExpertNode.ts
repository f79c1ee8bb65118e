// Original file: proto/expert.proto

import type * as grpc from '@grpc/grpc-js'
import type { MethodDefinition } from '@grpc/proto-loader'
import type { ExpertRequest as _turbosparse_expert_v1_ExpertRequest, ExpertRequest__Output as _turbosparse_expert_v1_ExpertRequest__Output } from '../../../turbosparse/expert/v1/ExpertRequest';
import type { ExpertResponse as _turbosparse_expert_v1_ExpertResponse, ExpertResponse__Output as _turbosparse_expert_v1_ExpertResponse__Output } from '../../../turbosparse/expert/v1/ExpertResponse';
import type { ExpertsChange as _turbosparse_expert_v1_ExpertsChange, ExpertsChange__Output as _turbosparse_expert_v1_ExpertsChange__Output } from '../../../turbosparse/expert/v1/ExpertsChange';
import type { InfoRequest as _turbosparse_expert_v1_InfoRequest, InfoRequest__Output as _turbosparse_expert_v1_InfoRequest__Output } from '../../../turbosparse/expert/v1/InfoRequest';
import type { InfoResponse as _turbosparse_expert_v1_InfoResponse, InfoResponse__Output as _turbosparse_expert_v1_InfoResponse__Output } from '../../../turbosparse/expert/v1/InfoResponse';

export interface ExpertNodeClient extends grpc.Client {
  /**
   * What this node holds and runs on. UNAVAILABLE while its weights load.
   */
  Info(argument: _turbosparse_expert_v1_InfoRequest, metadata: grpc.Metadata, options: grpc.CallOptions, callback: grpc.requestCallback<_turbosparse_expert_v1_InfoResponse__Output>): grpc.ClientUnaryCall;
  Info(argument: _turbosparse_expert_v1_InfoRequest, metadata: grpc.Metadata, callback: grpc.requestCallback<_turbosparse_expert_v1_InfoResponse__Output>): grpc.ClientUnaryCall;
  Info(argument: _turbosparse_expert_v1_InfoRequest, options: grpc.CallOptions, callback: grpc.requestCallback<_turbosparse_expert_v1_InfoResponse__Output>): grpc.ClientUnaryCall;
  Info(argument: _turbosparse_expert_v1_InfoRequest, callback: grpc.requestCallback<_turbosparse_expert_v1_InfoResponse__Output>): grpc.ClientUnaryCall;
  /**
   * What this node holds and runs on. UNAVAILABLE while its weights load.
   */
  info(argument: _turbosparse_expert_v1_InfoRequest, metadata: grpc.Metadata, options: grpc.CallOptions, callback: grpc.requestCallback<_turbosparse_expert_v1_InfoResponse__Output>): grpc.ClientUnaryCall;
  info(argument: _turbosparse_expert_v1_InfoRequest, metadata: grpc.Metadata, callback: grpc.requestCallback<_turbosparse_expert_v1_InfoResponse__Output>): grpc.ClientUnaryCall;
  info(argument: _turbosparse_expert_v1_InfoRequest, options: grpc.CallOptions, callback: grpc.requestCallback<_turbosparse_expert_v1_InfoResponse__Output>): grpc.ClientUnaryCall;
  info(argument: _turbosparse_expert_v1_InfoRequest, callback: grpc.requestCallback<_turbosparse_expert_v1_InfoResponse__Output>): grpc.ClientUnaryCall;
  
  /**
   * Live rebalancing (admin; behind the same mTLS as Run). LoadExperts reads
   * the pairs' weights from the node's model folder and answers once every one
   * is ready to serve (pairs already held are kept); UnloadExperts frees them
   * once no request still running uses them. Both answer the new Info. A pair
   * outside the model is INVALID_ARGUMENT; past the node's memory budget,
   * RESOURCE_EXHAUSTED (nothing is loaded then).
   */
  LoadExperts(argument: _turbosparse_expert_v1_ExpertsChange, metadata: grpc.Metadata, options: grpc.CallOptions, callback: grpc.requestCallback<_turbosparse_expert_v1_InfoResponse__Output>): grpc.ClientUnaryCall;
  LoadExperts(argument: _turbosparse_expert_v1_ExpertsChange, metadata: grpc.Metadata, callback: grpc.requestCallback<_turbosparse_expert_v1_InfoResponse__Output>): grpc.ClientUnaryCall;
  LoadExperts(argument: _turbosparse_expert_v1_ExpertsChange, options: grpc.CallOptions, callback: grpc.requestCallback<_turbosparse_expert_v1_InfoResponse__Output>): grpc.ClientUnaryCall;
  LoadExperts(argument: _turbosparse_expert_v1_ExpertsChange, callback: grpc.requestCallback<_turbosparse_expert_v1_InfoResponse__Output>): grpc.ClientUnaryCall;
  /**
   * Live rebalancing (admin; behind the same mTLS as Run). LoadExperts reads
   * the pairs' weights from the node's model folder and answers once every one
   * is ready to serve (pairs already held are kept); UnloadExperts frees them
   * once no request still running uses them. Both answer the new Info. A pair
   * outside the model is INVALID_ARGUMENT; past the node's memory budget,
   * RESOURCE_EXHAUSTED (nothing is loaded then).
   */
  loadExperts(argument: _turbosparse_expert_v1_ExpertsChange, metadata: grpc.Metadata, options: grpc.CallOptions, callback: grpc.requestCallback<_turbosparse_expert_v1_InfoResponse__Output>): grpc.ClientUnaryCall;
  loadExperts(argument: _turbosparse_expert_v1_ExpertsChange, metadata: grpc.Metadata, callback: grpc.requestCallback<_turbosparse_expert_v1_InfoResponse__Output>): grpc.ClientUnaryCall;
  loadExperts(argument: _turbosparse_expert_v1_ExpertsChange, options: grpc.CallOptions, callback: grpc.requestCallback<_turbosparse_expert_v1_InfoResponse__Output>): grpc.ClientUnaryCall;
  loadExperts(argument: _turbosparse_expert_v1_ExpertsChange, callback: grpc.requestCallback<_turbosparse_expert_v1_InfoResponse__Output>): grpc.ClientUnaryCall;
  
  /**
   * One persistent stream per coordinator connection carries every layer of
   * every step (no stream per call). Each request has an id that its response
   * echoes; responses may complete out of order. A bad request gets a response
   * with `error` set; the stream stays open for the next request. Bytes that
   * are not a readable request and name no id (or an id above 2^53 - 1) end the
   * stream with INVALID_ARGUMENT.
   * The same stream is also served without HTTP/2 on the same port (the "run
   * socket": length-prefixed ExpertRequest/ExpertResponse frames over TCP/TLS,
   * see core/wire/run-frames.ts), which our coordinator uses when it can.
   */
  Run(metadata: grpc.Metadata, options?: grpc.CallOptions): grpc.ClientDuplexStream<_turbosparse_expert_v1_ExpertRequest, _turbosparse_expert_v1_ExpertResponse__Output>;
  Run(options?: grpc.CallOptions): grpc.ClientDuplexStream<_turbosparse_expert_v1_ExpertRequest, _turbosparse_expert_v1_ExpertResponse__Output>;
  /**
   * One persistent stream per coordinator connection carries every layer of
   * every step (no stream per call). Each request has an id that its response
   * echoes; responses may complete out of order. A bad request gets a response
   * with `error` set; the stream stays open for the next request. Bytes that
   * are not a readable request and name no id (or an id above 2^53 - 1) end the
   * stream with INVALID_ARGUMENT.
   * The same stream is also served without HTTP/2 on the same port (the "run
   * socket": length-prefixed ExpertRequest/ExpertResponse frames over TCP/TLS,
   * see core/wire/run-frames.ts), which our coordinator uses when it can.
   */
  run(metadata: grpc.Metadata, options?: grpc.CallOptions): grpc.ClientDuplexStream<_turbosparse_expert_v1_ExpertRequest, _turbosparse_expert_v1_ExpertResponse__Output>;
  run(options?: grpc.CallOptions): grpc.ClientDuplexStream<_turbosparse_expert_v1_ExpertRequest, _turbosparse_expert_v1_ExpertResponse__Output>;
  
  UnloadExperts(argument: _turbosparse_expert_v1_ExpertsChange, metadata: grpc.Metadata, options: grpc.CallOptions, callback: grpc.requestCallback<_turbosparse_expert_v1_InfoResponse__Output>): grpc.ClientUnaryCall;
  UnloadExperts(argument: _turbosparse_expert_v1_ExpertsChange, metadata: grpc.Metadata, callback: grpc.requestCallback<_turbosparse_expert_v1_InfoResponse__Output>): grpc.ClientUnaryCall;
  UnloadExperts(argument: _turbosparse_expert_v1_ExpertsChange, options: grpc.CallOptions, callback: grpc.requestCallback<_turbosparse_expert_v1_InfoResponse__Output>): grpc.ClientUnaryCall;
  UnloadExperts(argument: _turbosparse_expert_v1_ExpertsChange, callback: grpc.requestCallback<_turbosparse_expert_v1_InfoResponse__Output>): grpc.ClientUnaryCall;
  unloadExperts(argument: _turbosparse_expert_v1_ExpertsChange, metadata: grpc.Metadata, options: grpc.CallOptions, callback: grpc.requestCallback<_turbosparse_expert_v1_InfoResponse__Output>): grpc.ClientUnaryCall;
  unloadExperts(argument: _turbosparse_expert_v1_ExpertsChange, metadata: grpc.Metadata, callback: grpc.requestCallback<_turbosparse_expert_v1_InfoResponse__Output>): grpc.ClientUnaryCall;
  unloadExperts(argument: _turbosparse_expert_v1_ExpertsChange, options: grpc.CallOptions, callback: grpc.requestCallback<_turbosparse_expert_v1_InfoResponse__Output>): grpc.ClientUnaryCall;
  unloadExperts(argument: _turbosparse_expert_v1_ExpertsChange, callback: grpc.requestCallback<_turbosparse_expert_v1_InfoResponse__Output>): grpc.ClientUnaryCall;
  
}

export interface ExpertNodeHandlers extends grpc.UntypedServiceImplementation {
  /**
   * What this node holds and runs on. UNAVAILABLE while its weights load.
   */
  Info: grpc.handleUnaryCall<_turbosparse_expert_v1_InfoRequest__Output, _turbosparse_expert_v1_InfoResponse>;
  
  /**
   * Live rebalancing (admin; behind the same mTLS as Run). LoadExperts reads
   * the pairs' weights from the node's model folder and answers once every one
   * is ready to serve (pairs already held are kept); UnloadExperts frees them
   * once no request still running uses them. Both answer the new Info. A pair
   * outside the model is INVALID_ARGUMENT; past the node's memory budget,
   * RESOURCE_EXHAUSTED (nothing is loaded then).
   */
  LoadExperts: grpc.handleUnaryCall<_turbosparse_expert_v1_ExpertsChange__Output, _turbosparse_expert_v1_InfoResponse>;
  
  /**
   * One persistent stream per coordinator connection carries every layer of
   * every step (no stream per call). Each request has an id that its response
   * echoes; responses may complete out of order. A bad request gets a response
   * with `error` set; the stream stays open for the next request. Bytes that
   * are not a readable request and name no id (or an id above 2^53 - 1) end the
   * stream with INVALID_ARGUMENT.
   * The same stream is also served without HTTP/2 on the same port (the "run
   * socket": length-prefixed ExpertRequest/ExpertResponse frames over TCP/TLS,
   * see core/wire/run-frames.ts), which our coordinator uses when it can.
   */
  Run: grpc.handleBidiStreamingCall<_turbosparse_expert_v1_ExpertRequest__Output, _turbosparse_expert_v1_ExpertResponse>;
  
  UnloadExperts: grpc.handleUnaryCall<_turbosparse_expert_v1_ExpertsChange__Output, _turbosparse_expert_v1_InfoResponse>;
  
}

export interface ExpertNodeDefinition extends grpc.ServiceDefinition {
  Info: MethodDefinition<_turbosparse_expert_v1_InfoRequest, _turbosparse_expert_v1_InfoResponse, _turbosparse_expert_v1_InfoRequest__Output, _turbosparse_expert_v1_InfoResponse__Output>
  LoadExperts: MethodDefinition<_turbosparse_expert_v1_ExpertsChange, _turbosparse_expert_v1_InfoResponse, _turbosparse_expert_v1_ExpertsChange__Output, _turbosparse_expert_v1_InfoResponse__Output>
  Run: MethodDefinition<_turbosparse_expert_v1_ExpertRequest, _turbosparse_expert_v1_ExpertResponse, _turbosparse_expert_v1_ExpertRequest__Output, _turbosparse_expert_v1_ExpertResponse__Output>
  UnloadExperts: MethodDefinition<_turbosparse_expert_v1_ExpertsChange, _turbosparse_expert_v1_InfoResponse, _turbosparse_expert_v1_ExpertsChange__Output, _turbosparse_expert_v1_InfoResponse__Output>
}
