// Original file: protos/dedup/v1/dedup.proto


export interface DeleteImagesRequest {
  'image_ids'?: (string)[];
  'namespace'?: (string);
}

export interface DeleteImagesRequest__Output {
  'image_ids': (string)[];
  'namespace': (string);
}
