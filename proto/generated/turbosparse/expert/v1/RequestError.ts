// Original file: proto/expert.proto


export interface RequestError {
  /**
   * a gRPC status code: 3 INVALID_ARGUMENT, 9 FAILED_PRECONDITION, 4 DEADLINE_EXCEEDED, 14 UNAVAILABLE, 13 INTERNAL
   */
  'code'?: (number);
  'message'?: (string);
}

export interface RequestError__Output {
  /**
   * a gRPC status code: 3 INVALID_ARGUMENT, 9 FAILED_PRECONDITION, 4 DEADLINE_EXCEEDED, 14 UNAVAILABLE, 13 INTERNAL
   */
  'code': (number);
  'message': (string);
}
