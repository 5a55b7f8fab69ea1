// Original file: protos/dedup/v1/dedup.proto


export interface ListClustersRequest {
  'page_size'?: (number);
  'page_token'?: (string);
  'min_size'?: (number);
  'namespace'?: (string);
  '_min_size'?: "min_size";
}

export interface ListClustersRequest__Output {
  'page_size': (number);
  'page_token': (string);
  'min_size'?: (number);
  'namespace': (string);
  '_min_size'?: "min_size";
}
