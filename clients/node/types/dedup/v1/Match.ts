// Original file: protos/dedup/v1/dedup.proto

import type { MatchKind as _dedup_v1_MatchKind, MatchKind__Output as _dedup_v1_MatchKind__Output } from '../../dedup/v1/MatchKind';

export interface Match {
  'image_id'?: (string);
  'similarity'?: (number | string);
  'cluster_id'?: (string);
  'kind'?: (_dedup_v1_MatchKind);
}

export interface Match__Output {
  'image_id': (string);
  'similarity': (number);
  'cluster_id': (string);
  'kind': (_dedup_v1_MatchKind__Output);
}
