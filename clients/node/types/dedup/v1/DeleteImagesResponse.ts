// Original file: protos/dedup/v1/dedup.proto


export interface DeleteImagesResponse {
  'deleted_ids'?: (string)[];
  'not_found_ids'?: (string)[];
}

export interface DeleteImagesResponse__Output {
  'deleted_ids': (string)[];
  'not_found_ids': (string)[];
}
