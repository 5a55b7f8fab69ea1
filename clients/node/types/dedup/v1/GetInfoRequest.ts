// Original file: protos/dedup/v1/dedup.proto


export interface GetInfoRequest {
}

export interface GetInfoRequest__Output {
}
