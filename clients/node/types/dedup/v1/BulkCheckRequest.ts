// Original file: protos/dedup/v1/dedup.proto

import type { Priority as _dedup_v1_Priority, Priority__Output as _dedup_v1_Priority__Output } from '../../dedup/v1/Priority';
import type { MatchMode as _dedup_v1_MatchMode, MatchMode__Output as _dedup_v1_MatchMode__Output } from '../../dedup/v1/MatchMode';

export interface BulkCheckRequest {
  'image_id'?: (string);
  'image'?: (Buffer | Uint8Array | string);
  'add_to_index'?: (boolean);
  'threshold'?: (number | string);
  'top_k'?: (number);
  'priority'?: (_dedup_v1_Priority);
  'namespace'?: (string);
  'match_mode'?: (_dedup_v1_MatchMode);
  '_threshold'?: "threshold";
  '_top_k'?: "top_k";
}

export interface BulkCheckRequest__Output {
  'image_id': (string);
  'image': (Buffer);
  'add_to_index': (boolean);
  'threshold'?: (number);
  'top_k'?: (number);
  'priority': (_dedup_v1_Priority__Output);
  'namespace': (string);
  'match_mode': (_dedup_v1_MatchMode__Output);
  '_threshold'?: "threshold";
  '_top_k'?: "top_k";
}
