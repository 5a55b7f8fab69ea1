// Original file: protos/dedup/v1/dedup.proto


export interface GetClusterRequest {
  'cluster_id'?: (string);
  'namespace'?: (string);
}

export interface GetClusterRequest__Output {
  'cluster_id': (string);
  'namespace': (string);
}
