// Original file: protos/dedup/v1/dedup.proto

import type { CheckDuplicateResponse as _dedup_v1_CheckDuplicateResponse, CheckDuplicateResponse__Output as _dedup_v1_CheckDuplicateResponse__Output } from '../../dedup/v1/CheckDuplicateResponse';
import type { Status as _google_rpc_Status, Status__Output as _google_rpc_Status__Output } from '../../google/rpc/Status';
import type { Long } from '@grpc/proto-loader';

export interface BulkCheckResponse {
  'image_id'?: (string);
  'index'?: (number | string | Long);
  'result'?: (_dedup_v1_CheckDuplicateResponse | null);
  'error'?: (_google_rpc_Status | null);
  'outcome'?: "result"|"error";
}

export interface BulkCheckResponse__Output {
  'image_id': (string);
  'index': (string);
  'result'?: (_dedup_v1_CheckDuplicateResponse__Output | null);
  'error'?: (_google_rpc_Status__Output | null);
  'outcome'?: "result"|"error";
}
