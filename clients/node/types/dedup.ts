import type * as grpc from '@grpc/grpc-js';
import type { EnumTypeDefinition, MessageTypeDefinition } from '@grpc/proto-loader';

import type { BulkCheckRequest as _dedup_v1_BulkCheckRequest, BulkCheckRequest__Output as _dedup_v1_BulkCheckRequest__Output } from './dedup/v1/BulkCheckRequest';
import type { BulkCheckResponse as _dedup_v1_BulkCheckResponse, BulkCheckResponse__Output as _dedup_v1_BulkCheckResponse__Output } from './dedup/v1/BulkCheckResponse';
import type { CheckDuplicateRequest as _dedup_v1_CheckDuplicateRequest, CheckDuplicateRequest__Output as _dedup_v1_CheckDuplicateRequest__Output } from './dedup/v1/CheckDuplicateRequest';
import type { CheckDuplicateResponse as _dedup_v1_CheckDuplicateResponse, CheckDuplicateResponse__Output as _dedup_v1_CheckDuplicateResponse__Output } from './dedup/v1/CheckDuplicateResponse';
import type { Cluster as _dedup_v1_Cluster, Cluster__Output as _dedup_v1_Cluster__Output } from './dedup/v1/Cluster';
import type { ClusterMember as _dedup_v1_ClusterMember, ClusterMember__Output as _dedup_v1_ClusterMember__Output } from './dedup/v1/ClusterMember';
import type { DedupServiceClient as _dedup_v1_DedupServiceClient, DedupServiceDefinition as _dedup_v1_DedupServiceDefinition } from './dedup/v1/DedupService';
import type { DeleteImagesRequest as _dedup_v1_DeleteImagesRequest, DeleteImagesRequest__Output as _dedup_v1_DeleteImagesRequest__Output } from './dedup/v1/DeleteImagesRequest';
import type { DeleteImagesResponse as _dedup_v1_DeleteImagesResponse, DeleteImagesResponse__Output as _dedup_v1_DeleteImagesResponse__Output } from './dedup/v1/DeleteImagesResponse';
import type { DeleteNamespaceRequest as _dedup_v1_DeleteNamespaceRequest, DeleteNamespaceRequest__Output as _dedup_v1_DeleteNamespaceRequest__Output } from './dedup/v1/DeleteNamespaceRequest';
import type { DeleteNamespaceResponse as _dedup_v1_DeleteNamespaceResponse, DeleteNamespaceResponse__Output as _dedup_v1_DeleteNamespaceResponse__Output } from './dedup/v1/DeleteNamespaceResponse';
import type { GetClusterRequest as _dedup_v1_GetClusterRequest, GetClusterRequest__Output as _dedup_v1_GetClusterRequest__Output } from './dedup/v1/GetClusterRequest';
import type { GetInfoRequest as _dedup_v1_GetInfoRequest, GetInfoRequest__Output as _dedup_v1_GetInfoRequest__Output } from './dedup/v1/GetInfoRequest';
import type { GetInfoResponse as _dedup_v1_GetInfoResponse, GetInfoResponse__Output as _dedup_v1_GetInfoResponse__Output } from './dedup/v1/GetInfoResponse';
import type { ListClustersRequest as _dedup_v1_ListClustersRequest, ListClustersRequest__Output as _dedup_v1_ListClustersRequest__Output } from './dedup/v1/ListClustersRequest';
import type { ListClustersResponse as _dedup_v1_ListClustersResponse, ListClustersResponse__Output as _dedup_v1_ListClustersResponse__Output } from './dedup/v1/ListClustersResponse';
import type { ListNamespacesRequest as _dedup_v1_ListNamespacesRequest, ListNamespacesRequest__Output as _dedup_v1_ListNamespacesRequest__Output } from './dedup/v1/ListNamespacesRequest';
import type { ListNamespacesResponse as _dedup_v1_ListNamespacesResponse, ListNamespacesResponse__Output as _dedup_v1_ListNamespacesResponse__Output } from './dedup/v1/ListNamespacesResponse';
import type { Match as _dedup_v1_Match, Match__Output as _dedup_v1_Match__Output } from './dedup/v1/Match';
import type { Namespace as _dedup_v1_Namespace, Namespace__Output as _dedup_v1_Namespace__Output } from './dedup/v1/Namespace';
import type { Timings as _dedup_v1_Timings, Timings__Output as _dedup_v1_Timings__Output } from './dedup/v1/Timings';
import type { Any as _google_protobuf_Any, Any__Output as _google_protobuf_Any__Output } from './google/protobuf/Any';
import type { Status as _google_rpc_Status, Status__Output as _google_rpc_Status__Output } from './google/rpc/Status';

type SubtypeConstructor<Constructor extends new (...args: any) => any, Subtype> = {
  new(...args: ConstructorParameters<Constructor>): Subtype;
};

export interface ProtoGrpcType {
  dedup: {
    v1: {
      BulkCheckRequest: MessageTypeDefinition<_dedup_v1_BulkCheckRequest, _dedup_v1_BulkCheckRequest__Output>
      BulkCheckResponse: MessageTypeDefinition<_dedup_v1_BulkCheckResponse, _dedup_v1_BulkCheckResponse__Output>
      CheckDuplicateRequest: MessageTypeDefinition<_dedup_v1_CheckDuplicateRequest, _dedup_v1_CheckDuplicateRequest__Output>
      CheckDuplicateResponse: MessageTypeDefinition<_dedup_v1_CheckDuplicateResponse, _dedup_v1_CheckDuplicateResponse__Output>
      Cluster: MessageTypeDefinition<_dedup_v1_Cluster, _dedup_v1_Cluster__Output>
      ClusterMember: MessageTypeDefinition<_dedup_v1_ClusterMember, _dedup_v1_ClusterMember__Output>
      DedupService: SubtypeConstructor<typeof grpc.Client, _dedup_v1_DedupServiceClient> & { service: _dedup_v1_DedupServiceDefinition }
      DeleteImagesRequest: MessageTypeDefinition<_dedup_v1_DeleteImagesRequest, _dedup_v1_DeleteImagesRequest__Output>
      DeleteImagesResponse: MessageTypeDefinition<_dedup_v1_DeleteImagesResponse, _dedup_v1_DeleteImagesResponse__Output>
      DeleteNamespaceRequest: MessageTypeDefinition<_dedup_v1_DeleteNamespaceRequest, _dedup_v1_DeleteNamespaceRequest__Output>
      DeleteNamespaceResponse: MessageTypeDefinition<_dedup_v1_DeleteNamespaceResponse, _dedup_v1_DeleteNamespaceResponse__Output>
      GetClusterRequest: MessageTypeDefinition<_dedup_v1_GetClusterRequest, _dedup_v1_GetClusterRequest__Output>
      GetInfoRequest: MessageTypeDefinition<_dedup_v1_GetInfoRequest, _dedup_v1_GetInfoRequest__Output>
      GetInfoResponse: MessageTypeDefinition<_dedup_v1_GetInfoResponse, _dedup_v1_GetInfoResponse__Output>
      ListClustersRequest: MessageTypeDefinition<_dedup_v1_ListClustersRequest, _dedup_v1_ListClustersRequest__Output>
      ListClustersResponse: MessageTypeDefinition<_dedup_v1_ListClustersResponse, _dedup_v1_ListClustersResponse__Output>
      ListNamespacesRequest: MessageTypeDefinition<_dedup_v1_ListNamespacesRequest, _dedup_v1_ListNamespacesRequest__Output>
      ListNamespacesResponse: MessageTypeDefinition<_dedup_v1_ListNamespacesResponse, _dedup_v1_ListNamespacesResponse__Output>
      Match: MessageTypeDefinition<_dedup_v1_Match, _dedup_v1_Match__Output>
      MatchKind: EnumTypeDefinition
      MatchMode: EnumTypeDefinition
      Namespace: MessageTypeDefinition<_dedup_v1_Namespace, _dedup_v1_Namespace__Output>
      Priority: EnumTypeDefinition
      Timings: MessageTypeDefinition<_dedup_v1_Timings, _dedup_v1_Timings__Output>
    }
  }
  google: {
    protobuf: {
      Any: MessageTypeDefinition<_google_protobuf_Any, _google_protobuf_Any__Output>
    }
    rpc: {
      Status: MessageTypeDefinition<_google_rpc_Status, _google_rpc_Status__Output>
    }
  }
}

