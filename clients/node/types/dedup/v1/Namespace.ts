// Original file: protos/dedup/v1/dedup.proto

import type { Long } from '@grpc/proto-loader';

export interface Namespace {
  'name'?: (string);
  'indexed_images'?: (number | string | Long);
  'clusters'?: (number | string | Long);
}

export interface Namespace__Output {
  'name': (string);
  'indexed_images': (string);
  'clusters': (string);
}
