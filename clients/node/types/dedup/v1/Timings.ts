// Original file: protos/dedup/v1/dedup.proto


export interface Timings {
  'decode_ms'?: (number | string);
  'embed_ms'?: (number | string);
  'index_ms'?: (number | string);
  'total_ms'?: (number | string);
}

export interface Timings__Output {
  'decode_ms': (number);
  'embed_ms': (number);
  'index_ms': (number);
  'total_ms': (number);
}
