// Original file: protos/dedup/v1/dedup.proto


export interface DeleteNamespaceRequest {
  'namespace'?: (string);
  'confirm'?: (string);
}

export interface DeleteNamespaceRequest__Output {
  'namespace': (string);
  'confirm': (string);
}
