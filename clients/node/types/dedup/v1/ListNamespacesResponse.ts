// Original file: protos/dedup/v1/dedup.proto

import type { Namespace as _dedup_v1_Namespace, Namespace__Output as _dedup_v1_Namespace__Output } from '../../dedup/v1/Namespace';

export interface ListNamespacesResponse {
  'namespaces'?: (_dedup_v1_Namespace)[];
}

export interface ListNamespacesResponse__Output {
  'namespaces': (_dedup_v1_Namespace__Output)[];
}
