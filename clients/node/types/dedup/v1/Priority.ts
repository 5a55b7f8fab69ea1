// Original file: protos/dedup/v1/dedup.proto

export const Priority = {
  PRIORITY_UNSPECIFIED: 'PRIORITY_UNSPECIFIED',
  PRIORITY_HIGH: 'PRIORITY_HIGH',
  PRIORITY_LOW: 'PRIORITY_LOW',
} as const;

export type Priority =
  | 'PRIORITY_UNSPECIFIED'
  | 0
  | 'PRIORITY_HIGH'
  | 1
  | 'PRIORITY_LOW'
  | 2

export type Priority__Output = typeof Priority[keyof typeof Priority]
