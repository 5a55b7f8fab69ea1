// Original file: protos/dedup/v1/dedup.proto

import type { ClusterMember as _dedup_v1_ClusterMember, ClusterMember__Output as _dedup_v1_ClusterMember__Output } from '../../dedup/v1/ClusterMember';

export interface Cluster {
  'cluster_id'?: (string);
  'size'?: (number);
  'representative_id'?: (string);
  'members'?: (_dedup_v1_ClusterMember)[];
}

export interface Cluster__Output {
  'cluster_id': (string);
  'size': (number);
  'representative_id': (string);
  'members': (_dedup_v1_ClusterMember__Output)[];
}
