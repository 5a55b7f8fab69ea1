// Types of the Node.js client (index.js). The message types are generated from the contract by
// @grpc/proto-loader (npm run types -> types/); these declarations wrap them.
import type * as grpc from '@grpc/grpc-js';
import type { CheckDuplicateRequest } from './types/dedup/v1/CheckDuplicateRequest';
import type { CheckDuplicateResponse__Output } from './types/dedup/v1/CheckDuplicateResponse';
import type { BulkCheckRequest } from './types/dedup/v1/BulkCheckRequest';
import type { BulkCheckResponse__Output } from './types/dedup/v1/BulkCheckResponse';
import type { ListClustersResponse__Output } from './types/dedup/v1/ListClustersResponse';
import type { Cluster__Output } from './types/dedup/v1/Cluster';
import type { DeleteImagesResponse__Output } from './types/dedup/v1/DeleteImagesResponse';
import type { GetInfoResponse__Output } from './types/dedup/v1/GetInfoResponse';
import type { ListNamespacesResponse__Output } from './types/dedup/v1/ListNamespacesResponse';
import type { DeleteNamespaceResponse__Output } from './types/dedup/v1/DeleteNamespaceResponse';

export type { CheckDuplicateRequest, CheckDuplicateResponse__Output, BulkCheckRequest, BulkCheckResponse__Output, ListClustersResponse__Output, Cluster__Output, DeleteImagesResponse__Output, GetInfoResponse__Output, ListNamespacesResponse__Output, DeleteNamespaceResponse__Output };

/** A google.rpc detail, decoded: its type name and its fields. */
export interface Detail { type: string; [field: string]: unknown }

export interface DecodedStatus { code: number; message: string; details: Detail[] }

export declare class DedupError extends Error {
  code: grpc.status;
  codeName: string;
  details: Detail[];
  metadata?: grpc.Metadata;
  detail(type: string): Detail | undefined;
  readonly retryDelayMs: number | undefined;
}

export interface ClientOptions {
  credentials?: grpc.ChannelCredentials;
  token?: string;
  deadlineMs?: number;
  streamDeadlineMs?: number;
  maxAttempts?: number;
  channelOptions?: grpc.ChannelOptions;
  /** The namespace of every call whose request names none (default: the server's `default`). */
  namespace?: string;
}

export interface CallOptions { deadlineMs?: number }

export type BulkCheckItem = Omit<BulkCheckResponse__Output, 'error'> & { error?: DecodedStatus | null };

export declare class DedupClient {
  constructor(address: string, options?: ClientOptions);
  checkDuplicate(request: CheckDuplicateRequest, options?: CallOptions): Promise<CheckDuplicateResponse__Output>;
  bulkCheck(requests: Iterable<BulkCheckRequest> | AsyncIterable<BulkCheckRequest>, options?: CallOptions): AsyncGenerator<BulkCheckItem>;
  listClusters(page?: { pageSize?: number; pageToken?: string; minSize?: number }, options?: CallOptions): Promise<ListClustersResponse__Output>;
  clusters(options?: { pageSize?: number; minSize?: number }): AsyncGenerator<Cluster__Output>;
  getCluster(clusterId: string, options?: CallOptions): Promise<Cluster__Output>;
  deleteImages(imageIds: string[], options?: CallOptions): Promise<DeleteImagesResponse__Output>;
  getInfo(options?: CallOptions): Promise<GetInfoResponse__Output>;
  listNamespaces(options?: CallOptions): Promise<ListNamespacesResponse__Output>;
  deleteNamespace(namespace: string, confirm: string, options?: CallOptions): Promise<DeleteNamespaceResponse__Output>;
  close(): void;
}

export declare function decodeStatus(status: Buffer | { code: number; message: string; details: { type_url: string; value: Buffer }[] }): DecodedStatus;
export declare const PROTO_DIR: string;
