// Original file: protos/dedup/v1/dedup.proto

import type * as grpc from '@grpc/grpc-js'
import type { MethodDefinition } from '@grpc/proto-loader'
import type { BulkCheckRequest as _dedup_v1_BulkCheckRequest, BulkCheckRequest__Output as _dedup_v1_BulkCheckRequest__Output } from '../../dedup/v1/BulkCheckRequest';
import type { BulkCheckResponse as _dedup_v1_BulkCheckResponse, BulkCheckResponse__Output as _dedup_v1_BulkCheckResponse__Output } from '../../dedup/v1/BulkCheckResponse';
import type { CheckDuplicateRequest as _dedup_v1_CheckDuplicateRequest, CheckDuplicateRequest__Output as _dedup_v1_CheckDuplicateRequest__Output } from '../../dedup/v1/CheckDuplicateRequest';
import type { CheckDuplicateResponse as _dedup_v1_CheckDuplicateResponse, CheckDuplicateResponse__Output as _dedup_v1_CheckDuplicateResponse__Output } from '../../dedup/v1/CheckDuplicateResponse';
import type { Cluster as _dedup_v1_Cluster, Cluster__Output as _dedup_v1_Cluster__Output } from '../../dedup/v1/Cluster';
import type { DeleteImagesRequest as _dedup_v1_DeleteImagesRequest, DeleteImagesRequest__Output as _dedup_v1_DeleteImagesRequest__Output } from '../../dedup/v1/DeleteImagesRequest';
import type { DeleteImagesResponse as _dedup_v1_DeleteImagesResponse, DeleteImagesResponse__Output as _dedup_v1_DeleteImagesResponse__Output } from '../../dedup/v1/DeleteImagesResponse';
import type { DeleteNamespaceRequest as _dedup_v1_DeleteNamespaceRequest, DeleteNamespaceRequest__Output as _dedup_v1_DeleteNamespaceRequest__Output } from '../../dedup/v1/DeleteNamespaceRequest';
import type { DeleteNamespaceResponse as _dedup_v1_DeleteNamespaceResponse, DeleteNamespaceResponse__Output as _dedup_v1_DeleteNamespaceResponse__Output } from '../../dedup/v1/DeleteNamespaceResponse';
import type { GetClusterRequest as _dedup_v1_GetClusterRequest, GetClusterRequest__Output as _dedup_v1_GetClusterRequest__Output } from '../../dedup/v1/GetClusterRequest';
import type { GetInfoRequest as _dedup_v1_GetInfoRequest, GetInfoRequest__Output as _dedup_v1_GetInfoRequest__Output } from '../../dedup/v1/GetInfoRequest';
import type { GetInfoResponse as _dedup_v1_GetInfoResponse, GetInfoResponse__Output as _dedup_v1_GetInfoResponse__Output } from '../../dedup/v1/GetInfoResponse';
import type { ListClustersRequest as _dedup_v1_ListClustersRequest, ListClustersRequest__Output as _dedup_v1_ListClustersRequest__Output } from '../../dedup/v1/ListClustersRequest';
import type { ListClustersResponse as _dedup_v1_ListClustersResponse, ListClustersResponse__Output as _dedup_v1_ListClustersResponse__Output } from '../../dedup/v1/ListClustersResponse';
import type { ListNamespacesRequest as _dedup_v1_ListNamespacesRequest, ListNamespacesRequest__Output as _dedup_v1_ListNamespacesRequest__Output } from '../../dedup/v1/ListNamespacesRequest';
import type { ListNamespacesResponse as _dedup_v1_ListNamespacesResponse, ListNamespacesResponse__Output as _dedup_v1_ListNamespacesResponse__Output } from '../../dedup/v1/ListNamespacesResponse';

export interface DedupServiceClient extends grpc.Client {
  BulkCheck(metadata: grpc.Metadata, options?: grpc.CallOptions): grpc.ClientDuplexStream<_dedup_v1_BulkCheckRequest, _dedup_v1_BulkCheckResponse__Output>;
  BulkCheck(options?: grpc.CallOptions): grpc.ClientDuplexStream<_dedup_v1_BulkCheckRequest, _dedup_v1_BulkCheckResponse__Output>;
  bulkCheck(metadata: grpc.Metadata, options?: grpc.CallOptions): grpc.ClientDuplexStream<_dedup_v1_BulkCheckRequest, _dedup_v1_BulkCheckResponse__Output>;
  bulkCheck(options?: grpc.CallOptions): grpc.ClientDuplexStream<_dedup_v1_BulkCheckRequest, _dedup_v1_BulkCheckResponse__Output>;
  
  CheckDuplicate(argument: _dedup_v1_CheckDuplicateRequest, metadata: grpc.Metadata, options: grpc.CallOptions, callback: grpc.requestCallback<_dedup_v1_CheckDuplicateResponse__Output>): grpc.ClientUnaryCall;
  CheckDuplicate(argument: _dedup_v1_CheckDuplicateRequest, metadata: grpc.Metadata, callback: grpc.requestCallback<_dedup_v1_CheckDuplicateResponse__Output>): grpc.ClientUnaryCall;
  CheckDuplicate(argument: _dedup_v1_CheckDuplicateRequest, options: grpc.CallOptions, callback: grpc.requestCallback<_dedup_v1_CheckDuplicateResponse__Output>): grpc.ClientUnaryCall;
  CheckDuplicate(argument: _dedup_v1_CheckDuplicateRequest, callback: grpc.requestCallback<_dedup_v1_CheckDuplicateResponse__Output>): grpc.ClientUnaryCall;
  checkDuplicate(argument: _dedup_v1_CheckDuplicateRequest, metadata: grpc.Metadata, options: grpc.CallOptions, callback: grpc.requestCallback<_dedup_v1_CheckDuplicateResponse__Output>): grpc.ClientUnaryCall;
  checkDuplicate(argument: _dedup_v1_CheckDuplicateRequest, metadata: grpc.Metadata, callback: grpc.requestCallback<_dedup_v1_CheckDuplicateResponse__Output>): grpc.ClientUnaryCall;
  checkDuplicate(argument: _dedup_v1_CheckDuplicateRequest, options: grpc.CallOptions, callback: grpc.requestCallback<_dedup_v1_CheckDuplicateResponse__Output>): grpc.ClientUnaryCall;
  checkDuplicate(argument: _dedup_v1_CheckDuplicateRequest, callback: grpc.requestCallback<_dedup_v1_CheckDuplicateResponse__Output>): grpc.ClientUnaryCall;
  
  DeleteImages(argument: _dedup_v1_DeleteImagesRequest, metadata: grpc.Metadata, options: grpc.CallOptions, callback: grpc.requestCallback<_dedup_v1_DeleteImagesResponse__Output>): grpc.ClientUnaryCall;
  DeleteImages(argument: _dedup_v1_DeleteImagesRequest, metadata: grpc.Metadata, callback: grpc.requestCallback<_dedup_v1_DeleteImagesResponse__Output>): grpc.ClientUnaryCall;
  DeleteImages(argument: _dedup_v1_DeleteImagesRequest, options: grpc.CallOptions, callback: grpc.requestCallback<_dedup_v1_DeleteImagesResponse__Output>): grpc.ClientUnaryCall;
  DeleteImages(argument: _dedup_v1_DeleteImagesRequest, callback: grpc.requestCallback<_dedup_v1_DeleteImagesResponse__Output>): grpc.ClientUnaryCall;
  deleteImages(argument: _dedup_v1_DeleteImagesRequest, metadata: grpc.Metadata, options: grpc.CallOptions, callback: grpc.requestCallback<_dedup_v1_DeleteImagesResponse__Output>): grpc.ClientUnaryCall;
  deleteImages(argument: _dedup_v1_DeleteImagesRequest, metadata: grpc.Metadata, callback: grpc.requestCallback<_dedup_v1_DeleteImagesResponse__Output>): grpc.ClientUnaryCall;
  deleteImages(argument: _dedup_v1_DeleteImagesRequest, options: grpc.CallOptions, callback: grpc.requestCallback<_dedup_v1_DeleteImagesResponse__Output>): grpc.ClientUnaryCall;
  deleteImages(argument: _dedup_v1_DeleteImagesRequest, callback: grpc.requestCallback<_dedup_v1_DeleteImagesResponse__Output>): grpc.ClientUnaryCall;
  
  DeleteNamespace(argument: _dedup_v1_DeleteNamespaceRequest, metadata: grpc.Metadata, options: grpc.CallOptions, callback: grpc.requestCallback<_dedup_v1_DeleteNamespaceResponse__Output>): grpc.ClientUnaryCall;
  DeleteNamespace(argument: _dedup_v1_DeleteNamespaceRequest, metadata: grpc.Metadata, callback: grpc.requestCallback<_dedup_v1_DeleteNamespaceResponse__Output>): grpc.ClientUnaryCall;
  DeleteNamespace(argument: _dedup_v1_DeleteNamespaceRequest, options: grpc.CallOptions, callback: grpc.requestCallback<_dedup_v1_DeleteNamespaceResponse__Output>): grpc.ClientUnaryCall;
  DeleteNamespace(argument: _dedup_v1_DeleteNamespaceRequest, callback: grpc.requestCallback<_dedup_v1_DeleteNamespaceResponse__Output>): grpc.ClientUnaryCall;
  deleteNamespace(argument: _dedup_v1_DeleteNamespaceRequest, metadata: grpc.Metadata, options: grpc.CallOptions, callback: grpc.requestCallback<_dedup_v1_DeleteNamespaceResponse__Output>): grpc.ClientUnaryCall;
  deleteNamespace(argument: _dedup_v1_DeleteNamespaceRequest, metadata: grpc.Metadata, callback: grpc.requestCallback<_dedup_v1_DeleteNamespaceResponse__Output>): grpc.ClientUnaryCall;
  deleteNamespace(argument: _dedup_v1_DeleteNamespaceRequest, options: grpc.CallOptions, callback: grpc.requestCallback<_dedup_v1_DeleteNamespaceResponse__Output>): grpc.ClientUnaryCall;
  deleteNamespace(argument: _dedup_v1_DeleteNamespaceRequest, callback: grpc.requestCallback<_dedup_v1_DeleteNamespaceResponse__Output>): grpc.ClientUnaryCall;
  
  GetCluster(argument: _dedup_v1_GetClusterRequest, metadata: grpc.Metadata, options: grpc.CallOptions, callback: grpc.requestCallback<_dedup_v1_Cluster__Output>): grpc.ClientUnaryCall;
  GetCluster(argument: _dedup_v1_GetClusterRequest, metadata: grpc.Metadata, callback: grpc.requestCallback<_dedup_v1_Cluster__Output>): grpc.ClientUnaryCall;
  GetCluster(argument: _dedup_v1_GetClusterRequest, options: grpc.CallOptions, callback: grpc.requestCallback<_dedup_v1_Cluster__Output>): grpc.ClientUnaryCall;
  GetCluster(argument: _dedup_v1_GetClusterRequest, callback: grpc.requestCallback<_dedup_v1_Cluster__Output>): grpc.ClientUnaryCall;
  getCluster(argument: _dedup_v1_GetClusterRequest, metadata: grpc.Metadata, options: grpc.CallOptions, callback: grpc.requestCallback<_dedup_v1_Cluster__Output>): grpc.ClientUnaryCall;
  getCluster(argument: _dedup_v1_GetClusterRequest, metadata: grpc.Metadata, callback: grpc.requestCallback<_dedup_v1_Cluster__Output>): grpc.ClientUnaryCall;
  getCluster(argument: _dedup_v1_GetClusterRequest, options: grpc.CallOptions, callback: grpc.requestCallback<_dedup_v1_Cluster__Output>): grpc.ClientUnaryCall;
  getCluster(argument: _dedup_v1_GetClusterRequest, callback: grpc.requestCallback<_dedup_v1_Cluster__Output>): grpc.ClientUnaryCall;
  
  GetInfo(argument: _dedup_v1_GetInfoRequest, metadata: grpc.Metadata, options: grpc.CallOptions, callback: grpc.requestCallback<_dedup_v1_GetInfoResponse__Output>): grpc.ClientUnaryCall;
  GetInfo(argument: _dedup_v1_GetInfoRequest, metadata: grpc.Metadata, callback: grpc.requestCallback<_dedup_v1_GetInfoResponse__Output>): grpc.ClientUnaryCall;
  GetInfo(argument: _dedup_v1_GetInfoRequest, options: grpc.CallOptions, callback: grpc.requestCallback<_dedup_v1_GetInfoResponse__Output>): grpc.ClientUnaryCall;
  GetInfo(argument: _dedup_v1_GetInfoRequest, callback: grpc.requestCallback<_dedup_v1_GetInfoResponse__Output>): grpc.ClientUnaryCall;
  getInfo(argument: _dedup_v1_GetInfoRequest, metadata: grpc.Metadata, options: grpc.CallOptions, callback: grpc.requestCallback<_dedup_v1_GetInfoResponse__Output>): grpc.ClientUnaryCall;
  getInfo(argument: _dedup_v1_GetInfoRequest, metadata: grpc.Metadata, callback: grpc.requestCallback<_dedup_v1_GetInfoResponse__Output>): grpc.ClientUnaryCall;
  getInfo(argument: _dedup_v1_GetInfoRequest, options: grpc.CallOptions, callback: grpc.requestCallback<_dedup_v1_GetInfoResponse__Output>): grpc.ClientUnaryCall;
  getInfo(argument: _dedup_v1_GetInfoRequest, callback: grpc.requestCallback<_dedup_v1_GetInfoResponse__Output>): grpc.ClientUnaryCall;
  
  ListClusters(argument: _dedup_v1_ListClustersRequest, metadata: grpc.Metadata, options: grpc.CallOptions, callback: grpc.requestCallback<_dedup_v1_ListClustersResponse__Output>): grpc.ClientUnaryCall;
  ListClusters(argument: _dedup_v1_ListClustersRequest, metadata: grpc.Metadata, callback: grpc.requestCallback<_dedup_v1_ListClustersResponse__Output>): grpc.ClientUnaryCall;
  ListClusters(argument: _dedup_v1_ListClustersRequest, options: grpc.CallOptions, callback: grpc.requestCallback<_dedup_v1_ListClustersResponse__Output>): grpc.ClientUnaryCall;
  ListClusters(argument: _dedup_v1_ListClustersRequest, callback: grpc.requestCallback<_dedup_v1_ListClustersResponse__Output>): grpc.ClientUnaryCall;
  listClusters(argument: _dedup_v1_ListClustersRequest, metadata: grpc.Metadata, options: grpc.CallOptions, callback: grpc.requestCallback<_dedup_v1_ListClustersResponse__Output>): grpc.ClientUnaryCall;
  listClusters(argument: _dedup_v1_ListClustersRequest, metadata: grpc.Metadata, callback: grpc.requestCallback<_dedup_v1_ListClustersResponse__Output>): grpc.ClientUnaryCall;
  listClusters(argument: _dedup_v1_ListClustersRequest, options: grpc.CallOptions, callback: grpc.requestCallback<_dedup_v1_ListClustersResponse__Output>): grpc.ClientUnaryCall;
  listClusters(argument: _dedup_v1_ListClustersRequest, callback: grpc.requestCallback<_dedup_v1_ListClustersResponse__Output>): grpc.ClientUnaryCall;
  
  ListNamespaces(argument: _dedup_v1_ListNamespacesRequest, metadata: grpc.Metadata, options: grpc.CallOptions, callback: grpc.requestCallback<_dedup_v1_ListNamespacesResponse__Output>): grpc.ClientUnaryCall;
  ListNamespaces(argument: _dedup_v1_ListNamespacesRequest, metadata: grpc.Metadata, callback: grpc.requestCallback<_dedup_v1_ListNamespacesResponse__Output>): grpc.ClientUnaryCall;
  ListNamespaces(argument: _dedup_v1_ListNamespacesRequest, options: grpc.CallOptions, callback: grpc.requestCallback<_dedup_v1_ListNamespacesResponse__Output>): grpc.ClientUnaryCall;
  ListNamespaces(argument: _dedup_v1_ListNamespacesRequest, callback: grpc.requestCallback<_dedup_v1_ListNamespacesResponse__Output>): grpc.ClientUnaryCall;
  listNamespaces(argument: _dedup_v1_ListNamespacesRequest, metadata: grpc.Metadata, options: grpc.CallOptions, callback: grpc.requestCallback<_dedup_v1_ListNamespacesResponse__Output>): grpc.ClientUnaryCall;
  listNamespaces(argument: _dedup_v1_ListNamespacesRequest, metadata: grpc.Metadata, callback: grpc.requestCallback<_dedup_v1_ListNamespacesResponse__Output>): grpc.ClientUnaryCall;
  listNamespaces(argument: _dedup_v1_ListNamespacesRequest, options: grpc.CallOptions, callback: grpc.requestCallback<_dedup_v1_ListNamespacesResponse__Output>): grpc.ClientUnaryCall;
  listNamespaces(argument: _dedup_v1_ListNamespacesRequest, callback: grpc.requestCallback<_dedup_v1_ListNamespacesResponse__Output>): grpc.ClientUnaryCall;
  
}

export interface DedupServiceHandlers extends grpc.UntypedServiceImplementation {
  BulkCheck: grpc.handleBidiStreamingCall<_dedup_v1_BulkCheckRequest__Output, _dedup_v1_BulkCheckResponse>;
  
  CheckDuplicate: grpc.handleUnaryCall<_dedup_v1_CheckDuplicateRequest__Output, _dedup_v1_CheckDuplicateResponse>;
  
  DeleteImages: grpc.handleUnaryCall<_dedup_v1_DeleteImagesRequest__Output, _dedup_v1_DeleteImagesResponse>;
  
  DeleteNamespace: grpc.handleUnaryCall<_dedup_v1_DeleteNamespaceRequest__Output, _dedup_v1_DeleteNamespaceResponse>;
  
  GetCluster: grpc.handleUnaryCall<_dedup_v1_GetClusterRequest__Output, _dedup_v1_Cluster>;
  
  GetInfo: grpc.handleUnaryCall<_dedup_v1_GetInfoRequest__Output, _dedup_v1_GetInfoResponse>;
  
  ListClusters: grpc.handleUnaryCall<_dedup_v1_ListClustersRequest__Output, _dedup_v1_ListClustersResponse>;
  
  ListNamespaces: grpc.handleUnaryCall<_dedup_v1_ListNamespacesRequest__Output, _dedup_v1_ListNamespacesResponse>;
  
}

export interface DedupServiceDefinition extends grpc.ServiceDefinition {
  BulkCheck: MethodDefinition<_dedup_v1_BulkCheckRequest, _dedup_v1_BulkCheckResponse, _dedup_v1_BulkCheckRequest__Output, _dedup_v1_BulkCheckResponse__Output>
  CheckDuplicate: MethodDefinition<_dedup_v1_CheckDuplicateRequest, _dedup_v1_CheckDuplicateResponse, _dedup_v1_CheckDuplicateRequest__Output, _dedup_v1_CheckDuplicateResponse__Output>
  DeleteImages: MethodDefinition<_dedup_v1_DeleteImagesRequest, _dedup_v1_DeleteImagesResponse, _dedup_v1_DeleteImagesRequest__Output, _dedup_v1_DeleteImagesResponse__Output>
  DeleteNamespace: MethodDefinition<_dedup_v1_DeleteNamespaceRequest, _dedup_v1_DeleteNamespaceResponse, _dedup_v1_DeleteNamespaceRequest__Output, _dedup_v1_DeleteNamespaceResponse__Output>
  GetCluster: MethodDefinition<_dedup_v1_GetClusterRequest, _dedup_v1_Cluster, _dedup_v1_GetClusterRequest__Output, _dedup_v1_Cluster__Output>
  GetInfo: MethodDefinition<_dedup_v1_GetInfoRequest, _dedup_v1_GetInfoResponse, _dedup_v1_GetInfoRequest__Output, _dedup_v1_GetInfoResponse__Output>
  ListClusters: MethodDefinition<_dedup_v1_ListClustersRequest, _dedup_v1_ListClustersResponse, _dedup_v1_ListClustersRequest__Output, _dedup_v1_ListClustersResponse__Output>
  ListNamespaces: MethodDefinition<_dedup_v1_ListNamespacesRequest, _dedup_v1_ListNamespacesResponse, _dedup_v1_ListNamespacesRequest__Output, _dedup_v1_ListNamespacesResponse__Output>
}
