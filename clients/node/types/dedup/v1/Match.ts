// Original file: protos/dedup/v1/dedup.proto


export interface Match {
  'image_id'?: (string);
  'similarity'?: (number | string);
  'cluster_id'?: (string);
}

export interface Match__Output {
  'image_id': (string);
  'similarity': (number);
  'cluster_id': (string);
}
