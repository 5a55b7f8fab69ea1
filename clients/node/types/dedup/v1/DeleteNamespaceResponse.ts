// Original file: protos/dedup/v1/dedup.proto

import type { Long } from '@grpc/proto-loader';

export interface DeleteNamespaceResponse {
  'deleted_images'?: (number | string | Long);
}

export interface DeleteNamespaceResponse__Output {
  'deleted_images': (string);
}
