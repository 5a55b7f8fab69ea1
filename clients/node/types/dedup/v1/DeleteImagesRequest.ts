// Original file: protos/dedup/v1/dedup.proto


export interface DeleteImagesRequest {
  'image_ids'?: (string)[];
}

export interface DeleteImagesRequest__Output {
  'image_ids': (string)[];
}
