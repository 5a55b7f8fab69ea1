// Original file: protos/dedup/v1/dedup.proto

import type { Match as _dedup_v1_Match, Match__Output as _dedup_v1_Match__Output } from '../../dedup/v1/Match';
import type { Timings as _dedup_v1_Timings, Timings__Output as _dedup_v1_Timings__Output } from '../../dedup/v1/Timings';

export interface CheckDuplicateResponse {
  'image_id'?: (string);
  'is_duplicate'?: (boolean);
  'matches'?: (_dedup_v1_Match)[];
  'stored'?: (boolean);
  'cluster_id'?: (string);
  'threshold'?: (number | string);
  'width'?: (number);
  'height'?: (number);
  'format'?: (string);
  'timings'?: (_dedup_v1_Timings | null);
  'exact_duplicate'?: (boolean);
}

export interface CheckDuplicateResponse__Output {
  'image_id': (string);
  'is_duplicate': (boolean);
  'matches': (_dedup_v1_Match__Output)[];
  'stored': (boolean);
  'cluster_id': (string);
  'threshold': (number);
  'width': (number);
  'height': (number);
  'format': (string);
  'timings': (_dedup_v1_Timings__Output | null);
  'exact_duplicate': (boolean);
}
