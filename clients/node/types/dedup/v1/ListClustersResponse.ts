// Original file: protos/dedup/v1/dedup.proto

import type { Cluster as _dedup_v1_Cluster, Cluster__Output as _dedup_v1_Cluster__Output } from '../../dedup/v1/Cluster';
import type { Long } from '@grpc/proto-loader';

export interface ListClustersResponse {
  'clusters'?: (_dedup_v1_Cluster)[];
  'next_page_token'?: (string);
  'total_size'?: (number | string | Long);
}

export interface ListClustersResponse__Output {
  'clusters': (_dedup_v1_Cluster__Output)[];
  'next_page_token': (string);
  'total_size': (string);
}
