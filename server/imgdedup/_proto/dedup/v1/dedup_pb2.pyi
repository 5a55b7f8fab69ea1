from google.rpc import status_pb2 as _status_pb2
from google.protobuf.internal import containers as _containers
from google.protobuf.internal import enum_type_wrapper as _enum_type_wrapper
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class Priority(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    PRIORITY_UNSPECIFIED: _ClassVar[Priority]
    PRIORITY_HIGH: _ClassVar[Priority]
    PRIORITY_LOW: _ClassVar[Priority]

class MatchMode(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    MATCH_MODE_UNSPECIFIED: _ClassVar[MatchMode]
    MATCH_MODE_DUPLICATES: _ClassVar[MatchMode]
    MATCH_MODE_COPIES: _ClassVar[MatchMode]
    MATCH_MODE_NEAR_DUPLICATES: _ClassVar[MatchMode]

class MatchKind(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    MATCH_KIND_UNSPECIFIED: _ClassVar[MatchKind]
    MATCH_KIND_COPY: _ClassVar[MatchKind]
    MATCH_KIND_NEAR_DUPLICATE: _ClassVar[MatchKind]
PRIORITY_UNSPECIFIED: Priority
PRIORITY_HIGH: Priority
PRIORITY_LOW: Priority
MATCH_MODE_UNSPECIFIED: MatchMode
MATCH_MODE_DUPLICATES: MatchMode
MATCH_MODE_COPIES: MatchMode
MATCH_MODE_NEAR_DUPLICATES: MatchMode
MATCH_KIND_UNSPECIFIED: MatchKind
MATCH_KIND_COPY: MatchKind
MATCH_KIND_NEAR_DUPLICATE: MatchKind

class CheckDuplicateRequest(_message.Message):
    __slots__ = ("image_id", "image", "add_to_index", "threshold", "top_k", "priority", "namespace", "match_mode")
    IMAGE_ID_FIELD_NUMBER: _ClassVar[int]
    IMAGE_FIELD_NUMBER: _ClassVar[int]
    ADD_TO_INDEX_FIELD_NUMBER: _ClassVar[int]
    THRESHOLD_FIELD_NUMBER: _ClassVar[int]
    TOP_K_FIELD_NUMBER: _ClassVar[int]
    PRIORITY_FIELD_NUMBER: _ClassVar[int]
    NAMESPACE_FIELD_NUMBER: _ClassVar[int]
    MATCH_MODE_FIELD_NUMBER: _ClassVar[int]
    image_id: str
    image: bytes
    add_to_index: bool
    threshold: float
    top_k: int
    priority: Priority
    namespace: str
    match_mode: MatchMode
    def __init__(self, image_id: _Optional[str] = ..., image: _Optional[bytes] = ..., add_to_index: _Optional[bool] = ..., threshold: _Optional[float] = ..., top_k: _Optional[int] = ..., priority: _Optional[_Union[Priority, str]] = ..., namespace: _Optional[str] = ..., match_mode: _Optional[_Union[MatchMode, str]] = ...) -> None: ...

class Match(_message.Message):
    __slots__ = ("image_id", "similarity", "cluster_id", "kind")
    IMAGE_ID_FIELD_NUMBER: _ClassVar[int]
    SIMILARITY_FIELD_NUMBER: _ClassVar[int]
    CLUSTER_ID_FIELD_NUMBER: _ClassVar[int]
    KIND_FIELD_NUMBER: _ClassVar[int]
    image_id: str
    similarity: float
    cluster_id: str
    kind: MatchKind
    def __init__(self, image_id: _Optional[str] = ..., similarity: _Optional[float] = ..., cluster_id: _Optional[str] = ..., kind: _Optional[_Union[MatchKind, str]] = ...) -> None: ...

class Timings(_message.Message):
    __slots__ = ("decode_ms", "embed_ms", "index_ms", "total_ms")
    DECODE_MS_FIELD_NUMBER: _ClassVar[int]
    EMBED_MS_FIELD_NUMBER: _ClassVar[int]
    INDEX_MS_FIELD_NUMBER: _ClassVar[int]
    TOTAL_MS_FIELD_NUMBER: _ClassVar[int]
    decode_ms: float
    embed_ms: float
    index_ms: float
    total_ms: float
    def __init__(self, decode_ms: _Optional[float] = ..., embed_ms: _Optional[float] = ..., index_ms: _Optional[float] = ..., total_ms: _Optional[float] = ...) -> None: ...

class CheckDuplicateResponse(_message.Message):
    __slots__ = ("image_id", "is_duplicate", "matches", "stored", "cluster_id", "threshold", "width", "height", "format", "timings", "exact_duplicate")
    IMAGE_ID_FIELD_NUMBER: _ClassVar[int]
    IS_DUPLICATE_FIELD_NUMBER: _ClassVar[int]
    MATCHES_FIELD_NUMBER: _ClassVar[int]
    STORED_FIELD_NUMBER: _ClassVar[int]
    CLUSTER_ID_FIELD_NUMBER: _ClassVar[int]
    THRESHOLD_FIELD_NUMBER: _ClassVar[int]
    WIDTH_FIELD_NUMBER: _ClassVar[int]
    HEIGHT_FIELD_NUMBER: _ClassVar[int]
    FORMAT_FIELD_NUMBER: _ClassVar[int]
    TIMINGS_FIELD_NUMBER: _ClassVar[int]
    EXACT_DUPLICATE_FIELD_NUMBER: _ClassVar[int]
    image_id: str
    is_duplicate: bool
    matches: _containers.RepeatedCompositeFieldContainer[Match]
    stored: bool
    cluster_id: str
    threshold: float
    width: int
    height: int
    format: str
    timings: Timings
    exact_duplicate: bool
    def __init__(self, image_id: _Optional[str] = ..., is_duplicate: _Optional[bool] = ..., matches: _Optional[_Iterable[_Union[Match, _Mapping]]] = ..., stored: _Optional[bool] = ..., cluster_id: _Optional[str] = ..., threshold: _Optional[float] = ..., width: _Optional[int] = ..., height: _Optional[int] = ..., format: _Optional[str] = ..., timings: _Optional[_Union[Timings, _Mapping]] = ..., exact_duplicate: _Optional[bool] = ...) -> None: ...

class BulkCheckRequest(_message.Message):
    __slots__ = ("image_id", "image", "add_to_index", "threshold", "top_k", "priority", "namespace", "match_mode")
    IMAGE_ID_FIELD_NUMBER: _ClassVar[int]
    IMAGE_FIELD_NUMBER: _ClassVar[int]
    ADD_TO_INDEX_FIELD_NUMBER: _ClassVar[int]
    THRESHOLD_FIELD_NUMBER: _ClassVar[int]
    TOP_K_FIELD_NUMBER: _ClassVar[int]
    PRIORITY_FIELD_NUMBER: _ClassVar[int]
    NAMESPACE_FIELD_NUMBER: _ClassVar[int]
    MATCH_MODE_FIELD_NUMBER: _ClassVar[int]
    image_id: str
    image: bytes
    add_to_index: bool
    threshold: float
    top_k: int
    priority: Priority
    namespace: str
    match_mode: MatchMode
    def __init__(self, image_id: _Optional[str] = ..., image: _Optional[bytes] = ..., add_to_index: _Optional[bool] = ..., threshold: _Optional[float] = ..., top_k: _Optional[int] = ..., priority: _Optional[_Union[Priority, str]] = ..., namespace: _Optional[str] = ..., match_mode: _Optional[_Union[MatchMode, str]] = ...) -> None: ...

class BulkCheckResponse(_message.Message):
    __slots__ = ("image_id", "index", "result", "error")
    IMAGE_ID_FIELD_NUMBER: _ClassVar[int]
    INDEX_FIELD_NUMBER: _ClassVar[int]
    RESULT_FIELD_NUMBER: _ClassVar[int]
    ERROR_FIELD_NUMBER: _ClassVar[int]
    image_id: str
    index: int
    result: CheckDuplicateResponse
    error: _status_pb2.Status
    def __init__(self, image_id: _Optional[str] = ..., index: _Optional[int] = ..., result: _Optional[_Union[CheckDuplicateResponse, _Mapping]] = ..., error: _Optional[_Union[_status_pb2.Status, _Mapping]] = ...) -> None: ...

class ClusterMember(_message.Message):
    __slots__ = ("image_id", "similarity")
    IMAGE_ID_FIELD_NUMBER: _ClassVar[int]
    SIMILARITY_FIELD_NUMBER: _ClassVar[int]
    image_id: str
    similarity: float
    def __init__(self, image_id: _Optional[str] = ..., similarity: _Optional[float] = ...) -> None: ...

class Cluster(_message.Message):
    __slots__ = ("cluster_id", "size", "representative_id", "members")
    CLUSTER_ID_FIELD_NUMBER: _ClassVar[int]
    SIZE_FIELD_NUMBER: _ClassVar[int]
    REPRESENTATIVE_ID_FIELD_NUMBER: _ClassVar[int]
    MEMBERS_FIELD_NUMBER: _ClassVar[int]
    cluster_id: str
    size: int
    representative_id: str
    members: _containers.RepeatedCompositeFieldContainer[ClusterMember]
    def __init__(self, cluster_id: _Optional[str] = ..., size: _Optional[int] = ..., representative_id: _Optional[str] = ..., members: _Optional[_Iterable[_Union[ClusterMember, _Mapping]]] = ...) -> None: ...

class ListClustersRequest(_message.Message):
    __slots__ = ("page_size", "page_token", "min_size", "namespace")
    PAGE_SIZE_FIELD_NUMBER: _ClassVar[int]
    PAGE_TOKEN_FIELD_NUMBER: _ClassVar[int]
    MIN_SIZE_FIELD_NUMBER: _ClassVar[int]
    NAMESPACE_FIELD_NUMBER: _ClassVar[int]
    page_size: int
    page_token: str
    min_size: int
    namespace: str
    def __init__(self, page_size: _Optional[int] = ..., page_token: _Optional[str] = ..., min_size: _Optional[int] = ..., namespace: _Optional[str] = ...) -> None: ...

class ListClustersResponse(_message.Message):
    __slots__ = ("clusters", "next_page_token", "total_size")
    CLUSTERS_FIELD_NUMBER: _ClassVar[int]
    NEXT_PAGE_TOKEN_FIELD_NUMBER: _ClassVar[int]
    TOTAL_SIZE_FIELD_NUMBER: _ClassVar[int]
    clusters: _containers.RepeatedCompositeFieldContainer[Cluster]
    next_page_token: str
    total_size: int
    def __init__(self, clusters: _Optional[_Iterable[_Union[Cluster, _Mapping]]] = ..., next_page_token: _Optional[str] = ..., total_size: _Optional[int] = ...) -> None: ...

class GetClusterRequest(_message.Message):
    __slots__ = ("cluster_id", "namespace")
    CLUSTER_ID_FIELD_NUMBER: _ClassVar[int]
    NAMESPACE_FIELD_NUMBER: _ClassVar[int]
    cluster_id: str
    namespace: str
    def __init__(self, cluster_id: _Optional[str] = ..., namespace: _Optional[str] = ...) -> None: ...

class DeleteImagesRequest(_message.Message):
    __slots__ = ("image_ids", "namespace")
    IMAGE_IDS_FIELD_NUMBER: _ClassVar[int]
    NAMESPACE_FIELD_NUMBER: _ClassVar[int]
    image_ids: _containers.RepeatedScalarFieldContainer[str]
    namespace: str
    def __init__(self, image_ids: _Optional[_Iterable[str]] = ..., namespace: _Optional[str] = ...) -> None: ...

class DeleteImagesResponse(_message.Message):
    __slots__ = ("deleted_ids", "not_found_ids")
    DELETED_IDS_FIELD_NUMBER: _ClassVar[int]
    NOT_FOUND_IDS_FIELD_NUMBER: _ClassVar[int]
    deleted_ids: _containers.RepeatedScalarFieldContainer[str]
    not_found_ids: _containers.RepeatedScalarFieldContainer[str]
    def __init__(self, deleted_ids: _Optional[_Iterable[str]] = ..., not_found_ids: _Optional[_Iterable[str]] = ...) -> None: ...

class GetInfoRequest(_message.Message):
    __slots__ = ("namespace",)
    NAMESPACE_FIELD_NUMBER: _ClassVar[int]
    namespace: str
    def __init__(self, namespace: _Optional[str] = ...) -> None: ...

class GetInfoResponse(_message.Message):
    __slots__ = ("model_name", "input_size", "embedding_dim", "execution_providers", "default_threshold", "milvus_backend", "indexed_images", "version", "clusters", "namespace", "threshold", "copy_similarity", "near_duplicate_threshold")
    MODEL_NAME_FIELD_NUMBER: _ClassVar[int]
    INPUT_SIZE_FIELD_NUMBER: _ClassVar[int]
    EMBEDDING_DIM_FIELD_NUMBER: _ClassVar[int]
    EXECUTION_PROVIDERS_FIELD_NUMBER: _ClassVar[int]
    DEFAULT_THRESHOLD_FIELD_NUMBER: _ClassVar[int]
    MILVUS_BACKEND_FIELD_NUMBER: _ClassVar[int]
    INDEXED_IMAGES_FIELD_NUMBER: _ClassVar[int]
    VERSION_FIELD_NUMBER: _ClassVar[int]
    CLUSTERS_FIELD_NUMBER: _ClassVar[int]
    NAMESPACE_FIELD_NUMBER: _ClassVar[int]
    THRESHOLD_FIELD_NUMBER: _ClassVar[int]
    COPY_SIMILARITY_FIELD_NUMBER: _ClassVar[int]
    NEAR_DUPLICATE_THRESHOLD_FIELD_NUMBER: _ClassVar[int]
    model_name: str
    input_size: int
    embedding_dim: int
    execution_providers: _containers.RepeatedScalarFieldContainer[str]
    default_threshold: float
    milvus_backend: str
    indexed_images: int
    version: str
    clusters: int
    namespace: str
    threshold: float
    copy_similarity: float
    near_duplicate_threshold: float
    def __init__(self, model_name: _Optional[str] = ..., input_size: _Optional[int] = ..., embedding_dim: _Optional[int] = ..., execution_providers: _Optional[_Iterable[str]] = ..., default_threshold: _Optional[float] = ..., milvus_backend: _Optional[str] = ..., indexed_images: _Optional[int] = ..., version: _Optional[str] = ..., clusters: _Optional[int] = ..., namespace: _Optional[str] = ..., threshold: _Optional[float] = ..., copy_similarity: _Optional[float] = ..., near_duplicate_threshold: _Optional[float] = ...) -> None: ...

class Namespace(_message.Message):
    __slots__ = ("name", "indexed_images", "clusters")
    NAME_FIELD_NUMBER: _ClassVar[int]
    INDEXED_IMAGES_FIELD_NUMBER: _ClassVar[int]
    CLUSTERS_FIELD_NUMBER: _ClassVar[int]
    name: str
    indexed_images: int
    clusters: int
    def __init__(self, name: _Optional[str] = ..., indexed_images: _Optional[int] = ..., clusters: _Optional[int] = ...) -> None: ...

class ListNamespacesRequest(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class ListNamespacesResponse(_message.Message):
    __slots__ = ("namespaces",)
    NAMESPACES_FIELD_NUMBER: _ClassVar[int]
    namespaces: _containers.RepeatedCompositeFieldContainer[Namespace]
    def __init__(self, namespaces: _Optional[_Iterable[_Union[Namespace, _Mapping]]] = ...) -> None: ...

class DeleteNamespaceRequest(_message.Message):
    __slots__ = ("namespace", "confirm")
    NAMESPACE_FIELD_NUMBER: _ClassVar[int]
    CONFIRM_FIELD_NUMBER: _ClassVar[int]
    namespace: str
    confirm: str
    def __init__(self, namespace: _Optional[str] = ..., confirm: _Optional[str] = ...) -> None: ...

class DeleteNamespaceResponse(_message.Message):
    __slots__ = ("deleted_images",)
    DELETED_IMAGES_FIELD_NUMBER: _ClassVar[int]
    deleted_images: int
    def __init__(self, deleted_images: _Optional[int] = ...) -> None: ...
