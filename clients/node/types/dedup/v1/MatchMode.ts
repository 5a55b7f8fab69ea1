// Original file: protos/dedup/v1/dedup.proto

export const MatchMode = {
  MATCH_MODE_UNSPECIFIED: 'MATCH_MODE_UNSPECIFIED',
  MATCH_MODE_DUPLICATES: 'MATCH_MODE_DUPLICATES',
  MATCH_MODE_COPIES: 'MATCH_MODE_COPIES',
  MATCH_MODE_NEAR_DUPLICATES: 'MATCH_MODE_NEAR_DUPLICATES',
} as const;

export type MatchMode =
  | 'MATCH_MODE_UNSPECIFIED'
  | 0
  | 'MATCH_MODE_DUPLICATES'
  | 1
  | 'MATCH_MODE_COPIES'
  | 2
  | 'MATCH_MODE_NEAR_DUPLICATES'
  | 3

export type MatchMode__Output = typeof MatchMode[keyof typeof MatchMode]
