// Original file: protos/dedup/v1/dedup.proto

export const MatchKind = {
  MATCH_KIND_UNSPECIFIED: 'MATCH_KIND_UNSPECIFIED',
  MATCH_KIND_COPY: 'MATCH_KIND_COPY',
  MATCH_KIND_NEAR_DUPLICATE: 'MATCH_KIND_NEAR_DUPLICATE',
} as const;

export type MatchKind =
  | 'MATCH_KIND_UNSPECIFIED'
  | 0
  | 'MATCH_KIND_COPY'
  | 1
  | 'MATCH_KIND_NEAR_DUPLICATE'
  | 2

export type MatchKind__Output = typeof MatchKind[keyof typeof MatchKind]
