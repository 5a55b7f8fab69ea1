// Original file: protos/dedup/v1/dedup.proto

import type { Long } from '@grpc/proto-loader';

export interface GetInfoResponse {
  'model_name'?: (string);
  'input_size'?: (number);
  'embedding_dim'?: (number);
  'execution_providers'?: (string)[];
  'default_threshold'?: (number | string);
  'milvus_backend'?: (string);
  'indexed_images'?: (number | string | Long);
  'version'?: (string);
  'clusters'?: (number | string | Long);
  'namespace'?: (string);
  'threshold'?: (number | string);
  'copy_similarity'?: (number | string);
  'near_duplicate_threshold'?: (number | string);
}

export interface GetInfoResponse__Output {
  'model_name': (string);
  'input_size': (number);
  'embedding_dim': (number);
  'execution_providers': (string)[];
  'default_threshold': (number);
  'milvus_backend': (string);
  'indexed_images': (string);
  'version': (string);
  'clusters': (string);
  'namespace': (string);
  'threshold': (number);
  'copy_similarity': (number);
  'near_duplicate_threshold': (number);
}
