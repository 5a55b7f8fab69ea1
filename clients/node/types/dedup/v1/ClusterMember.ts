// Original file: protos/dedup/v1/dedup.proto


export interface ClusterMember {
  'image_id'?: (string);
  'similarity'?: (number | string);
}

export interface ClusterMember__Output {
  'image_id': (string);
  'similarity': (number);
}
