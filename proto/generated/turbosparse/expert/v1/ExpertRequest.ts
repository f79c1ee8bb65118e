// Original file: proto/expert.proto

import type { Rows as _turbosparse_expert_v1_Rows, Rows__Output as _turbosparse_expert_v1_Rows__Output } from '../../../turbosparse/expert/v1/Rows';
import type { Route as _turbosparse_expert_v1_Route, Route__Output as _turbosparse_expert_v1_Route__Output } from '../../../turbosparse/expert/v1/Route';
import type { RowEncoding as _turbosparse_expert_v1_RowEncoding, RowEncoding__Output as _turbosparse_expert_v1_RowEncoding__Output } from '../../../turbosparse/expert/v1/RowEncoding';
import type { Long } from '@grpc/proto-loader';

export interface ExpertRequest {
  /**
   * Unique among this stream's pending requests; the response carries it back.
   * A request reusing the id of one still pending is not run: it is answered
   * INVALID_ARGUMENT after the original's answer, so matching by id stays right.
   */
  'id'?: (number | string | Long);
  /**
   * the coordinator's step, for logs and traces
   */
  'stepId'?: (number | string | Long);
  'layer'?: (number);
  /**
   * each token once, however many of its experts live here
   */
  'hidden'?: (_turbosparse_expert_v1_Rows | null);
  'routes'?: (_turbosparse_expert_v1_Route)[];
  'replyEncoding'?: (_turbosparse_expert_v1_RowEncoding);
  /**
   * 0 = none; a request still queued after this is answered DEADLINE_EXCEEDED
   */
  'timeoutMs'?: (number);
  /**
   * Trace context (W3C traceparent/tracestate) per request: one stream carries
   * many calls, so stream metadata cannot hold it.
   */
  'traceContext'?: ({[key: string]: string});
}

export interface ExpertRequest__Output {
  /**
   * Unique among this stream's pending requests; the response carries it back.
   * A request reusing the id of one still pending is not run: it is answered
   * INVALID_ARGUMENT after the original's answer, so matching by id stays right.
   */
  'id': (number);
  /**
   * the coordinator's step, for logs and traces
   */
  'stepId': (number);
  'layer': (number);
  /**
   * each token once, however many of its experts live here
   */
  'hidden': (_turbosparse_expert_v1_Rows__Output | null);
  'routes': (_turbosparse_expert_v1_Route__Output)[];
  'replyEncoding': (_turbosparse_expert_v1_RowEncoding__Output);
  /**
   * 0 = none; a request still queued after this is answered DEADLINE_EXCEEDED
   */
  'timeoutMs': (number);
  /**
   * Trace context (W3C traceparent/tracestate) per request: one stream carries
   * many calls, so stream metadata cannot hold it.
   */
  'traceContext': ({[key: string]: string});
}
