// Original file: proto/expert.proto


export interface InfoRequest {
}

export interface InfoRequest__Output {
}
