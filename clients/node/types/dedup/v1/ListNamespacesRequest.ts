// Original file: protos/dedup/v1/dedup.proto


export interface ListNamespacesRequest {
}

export interface ListNamespacesRequest__Output {
}
