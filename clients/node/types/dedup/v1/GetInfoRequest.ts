// Original file: protos/dedup/v1/dedup.proto


export interface GetInfoRequest {
  'namespace'?: (string);
}

export interface GetInfoRequest__Output {
  'namespace': (string);
}
