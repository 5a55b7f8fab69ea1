from imgdedup._proto.dedup.v1 import dedup_pb2 as _dedup_pb2
from google.rpc import status_pb2 as _status_pb2
from google.protobuf.internal import containers as _containers
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class CommitItem(_message.Message):
    __slots__ = ("seq", "image_id", "vector", "views", "add_to_index", "threshold", "top_k", "pixels", "sha256", "priority", "flow", "namespace", "match_mode", "more_coming", "exact_checked", "inset_views")
    SEQ_FIELD_NUMBER: _ClassVar[int]
    IMAGE_ID_FIELD_NUMBER: _ClassVar[int]
    VECTOR_FIELD_NUMBER: _ClassVar[int]
    VIEWS_FIELD_NUMBER: _ClassVar[int]
    ADD_TO_INDEX_FIELD_NUMBER: _ClassVar[int]
    THRESHOLD_FIELD_NUMBER: _ClassVar[int]
    TOP_K_FIELD_NUMBER: _ClassVar[int]
    PIXELS_FIELD_NUMBER: _ClassVar[int]
    SHA256_FIELD_NUMBER: _ClassVar[int]
    PRIORITY_FIELD_NUMBER: _ClassVar[int]
    FLOW_FIELD_NUMBER: _ClassVar[int]
    NAMESPACE_FIELD_NUMBER: _ClassVar[int]
    MATCH_MODE_FIELD_NUMBER: _ClassVar[int]
    MORE_COMING_FIELD_NUMBER: _ClassVar[int]
    EXACT_CHECKED_FIELD_NUMBER: _ClassVar[int]
    INSET_VIEWS_FIELD_NUMBER: _ClassVar[int]
    seq: int
    image_id: str
    vector: bytes
    views: _containers.RepeatedScalarFieldContainer[bytes]
    add_to_index: bool
    threshold: float
    top_k: int
    pixels: int
    sha256: str
    priority: _dedup_pb2.Priority
    flow: int
    namespace: str
    match_mode: _dedup_pb2.MatchMode
    more_coming: bool
    exact_checked: bool
    inset_views: bool
    def __init__(self, seq: _Optional[int] = ..., image_id: _Optional[str] = ..., vector: _Optional[bytes] = ..., views: _Optional[_Iterable[bytes]] = ..., add_to_index: _Optional[bool] = ..., threshold: _Optional[float] = ..., top_k: _Optional[int] = ..., pixels: _Optional[int] = ..., sha256: _Optional[str] = ..., priority: _Optional[_Union[_dedup_pb2.Priority, str]] = ..., flow: _Optional[int] = ..., namespace: _Optional[str] = ..., match_mode: _Optional[_Union[_dedup_pb2.MatchMode, str]] = ..., more_coming: _Optional[bool] = ..., exact_checked: _Optional[bool] = ..., inset_views: _Optional[bool] = ...) -> None: ...

class CommitRequest(_message.Message):
    __slots__ = ("items",)
    ITEMS_FIELD_NUMBER: _ClassVar[int]
    items: _containers.RepeatedCompositeFieldContainer[CommitItem]
    def __init__(self, items: _Optional[_Iterable[_Union[CommitItem, _Mapping]]] = ...) -> None: ...

class CommitResult(_message.Message):
    __slots__ = ("seq", "matches", "stored", "cluster_id", "error", "threshold", "exact_duplicate")
    SEQ_FIELD_NUMBER: _ClassVar[int]
    MATCHES_FIELD_NUMBER: _ClassVar[int]
    STORED_FIELD_NUMBER: _ClassVar[int]
    CLUSTER_ID_FIELD_NUMBER: _ClassVar[int]
    ERROR_FIELD_NUMBER: _ClassVar[int]
    THRESHOLD_FIELD_NUMBER: _ClassVar[int]
    EXACT_DUPLICATE_FIELD_NUMBER: _ClassVar[int]
    seq: int
    matches: _containers.RepeatedCompositeFieldContainer[_dedup_pb2.Match]
    stored: bool
    cluster_id: str
    error: _status_pb2.Status
    threshold: float
    exact_duplicate: bool
    def __init__(self, seq: _Optional[int] = ..., matches: _Optional[_Iterable[_Union[_dedup_pb2.Match, _Mapping]]] = ..., stored: _Optional[bool] = ..., cluster_id: _Optional[str] = ..., error: _Optional[_Union[_status_pb2.Status, _Mapping]] = ..., threshold: _Optional[float] = ..., exact_duplicate: _Optional[bool] = ...) -> None: ...

class CommitResponse(_message.Message):
    __slots__ = ("results",)
    RESULTS_FIELD_NUMBER: _ClassVar[int]
    results: _containers.RepeatedCompositeFieldContainer[CommitResult]
    def __init__(self, results: _Optional[_Iterable[_Union[CommitResult, _Mapping]]] = ...) -> None: ...

class FindExactRequest(_message.Message):
    __slots__ = ("sha256", "namespaces")
    SHA256_FIELD_NUMBER: _ClassVar[int]
    NAMESPACES_FIELD_NUMBER: _ClassVar[int]
    sha256: _containers.RepeatedScalarFieldContainer[str]
    namespaces: _containers.RepeatedScalarFieldContainer[str]
    def __init__(self, sha256: _Optional[_Iterable[str]] = ..., namespaces: _Optional[_Iterable[str]] = ...) -> None: ...

class ExactImage(_message.Message):
    __slots__ = ("found", "vector", "views", "error", "inset_views")
    FOUND_FIELD_NUMBER: _ClassVar[int]
    VECTOR_FIELD_NUMBER: _ClassVar[int]
    VIEWS_FIELD_NUMBER: _ClassVar[int]
    ERROR_FIELD_NUMBER: _ClassVar[int]
    INSET_VIEWS_FIELD_NUMBER: _ClassVar[int]
    found: bool
    vector: bytes
    views: _containers.RepeatedScalarFieldContainer[bytes]
    error: _status_pb2.Status
    inset_views: bool
    def __init__(self, found: _Optional[bool] = ..., vector: _Optional[bytes] = ..., views: _Optional[_Iterable[bytes]] = ..., error: _Optional[_Union[_status_pb2.Status, _Mapping]] = ..., inset_views: _Optional[bool] = ...) -> None: ...

class FindExactResponse(_message.Message):
    __slots__ = ("images",)
    IMAGES_FIELD_NUMBER: _ClassVar[int]
    images: _containers.RepeatedCompositeFieldContainer[ExactImage]
    def __init__(self, images: _Optional[_Iterable[_Union[ExactImage, _Mapping]]] = ...) -> None: ...

class WatchDigestsRequest(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class WatchDigestsResponse(_message.Message):
    __slots__ = ("keys", "loaded")
    KEYS_FIELD_NUMBER: _ClassVar[int]
    LOADED_FIELD_NUMBER: _ClassVar[int]
    keys: bytes
    loaded: bool
    def __init__(self, keys: _Optional[bytes] = ..., loaded: _Optional[bool] = ...) -> None: ...

class GetIndexInfoRequest(_message.Message):
    __slots__ = ("namespace",)
    NAMESPACE_FIELD_NUMBER: _ClassVar[int]
    namespace: str
    def __init__(self, namespace: _Optional[str] = ...) -> None: ...

class GetIndexInfoResponse(_message.Message):
    __slots__ = ("milvus_backend", "indexed_images", "clusters")
    MILVUS_BACKEND_FIELD_NUMBER: _ClassVar[int]
    INDEXED_IMAGES_FIELD_NUMBER: _ClassVar[int]
    CLUSTERS_FIELD_NUMBER: _ClassVar[int]
    milvus_backend: str
    indexed_images: int
    clusters: int
    def __init__(self, milvus_backend: _Optional[str] = ..., indexed_images: _Optional[int] = ..., clusters: _Optional[int] = ...) -> None: ...

class ShareRatesRequest(_message.Message):
    __slots__ = ("process", "demand")
    class DemandEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: float
        def __init__(self, key: _Optional[str] = ..., value: _Optional[float] = ...) -> None: ...
    PROCESS_FIELD_NUMBER: _ClassVar[int]
    DEMAND_FIELD_NUMBER: _ClassVar[int]
    process: str
    demand: _containers.ScalarMap[str, float]
    def __init__(self, process: _Optional[str] = ..., demand: _Optional[_Mapping[str, float]] = ...) -> None: ...

class RateAllotment(_message.Message):
    __slots__ = ("images_per_second", "burst", "fair_images_per_second", "limit")
    IMAGES_PER_SECOND_FIELD_NUMBER: _ClassVar[int]
    BURST_FIELD_NUMBER: _ClassVar[int]
    FAIR_IMAGES_PER_SECOND_FIELD_NUMBER: _ClassVar[int]
    LIMIT_FIELD_NUMBER: _ClassVar[int]
    images_per_second: float
    burst: float
    fair_images_per_second: float
    limit: float
    def __init__(self, images_per_second: _Optional[float] = ..., burst: _Optional[float] = ..., fair_images_per_second: _Optional[float] = ..., limit: _Optional[float] = ...) -> None: ...

class ShareRatesResponse(_message.Message):
    __slots__ = ("allotments",)
    class AllotmentsEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: RateAllotment
        def __init__(self, key: _Optional[str] = ..., value: _Optional[_Union[RateAllotment, _Mapping]] = ...) -> None: ...
    ALLOTMENTS_FIELD_NUMBER: _ClassVar[int]
    allotments: _containers.MessageMap[str, RateAllotment]
    def __init__(self, allotments: _Optional[_Mapping[str, RateAllotment]] = ...) -> None: ...
