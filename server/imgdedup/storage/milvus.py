"""Images and clusters in Milvus: Milvus Lite in a local file by default, any server by URI.

Four collections, shared by every namespace (tenant); each row carries its `namespace`, a plain
field with a scalar index (not a partition key: Milvus Lite refuses filters on one, and the 2.3
server files upserted rows under the wrong partition). Every read names its namespace: the
methods below take it, and filter on it. Why one set rather than a set per namespace: docs/namespaces.md.
- `<prefix>_v2_images`: one row per stored image: its embedding (COSINE), the caller's image_id,
  cluster id, pixel count, insertion time and content hash. The primary key is a hash of the
  namespace and image_id (`image_key`), never the caller's string itself: Milvus Lite 2.5.1
  builds SQL from primary keys without escaping, so a delete or upsert of an id with a quote in
  it fails.
- `<prefix>_v2_views`: extra embeddings of some stored images (e.g. the photo inside a
  screenshot, see core/views.py), keyed by a hash of (namespace, image_id, view number, and
  whether it is an inset view: `view_key`, so the key tells the kind and the schema is the
  first one's), pointing at their image by image_key/image_id. Derived data: written before the image row,
  deleted after it, and a view whose image row is missing is ignored, so a crash in between
  leaves nothing visible.
- `<prefix>_v2_clusters`: one row per cluster (singletons included): size and representative.
  Milvus requires a vector field in every collection, so it carries a 2-d placeholder.
- `<prefix>_v2_namespaces`: one row per namespace that may hold rows, written before its first
  image (so the set is never smaller than the namespaces holding rows): ListNamespaces, and a
  search in the only namespace there is needs no filter (a filter costs Milvus Lite ~2x).

Collections of the first layout (`<prefix>_images`, `_views`, `_clusters`, without namespaces)
are copied into these as the `default` namespace at start, then dropped (migrate_v1).

Every call passes `timeout`: pymilvus otherwise retries some failures 75 times (minutes).
"""

from __future__ import annotations

import hashlib
import logging
import time
import warnings
import weakref
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Container, Iterable

import numpy as np

from .redo import RedoLog

log = logging.getLogger(__name__)

MAX_ID_BYTES = 256
DEFAULT_NAMESPACE = "default"
MAX_NAMESPACE_CHARS = 64
# Rows per insert when copying the first layout's collections.
MIGRATE_CHUNK = 1000
# Milvus answers at most this many rows per query (offset + limit).
QUERY_WINDOW = 16384
# Milvus Lite slows down steeply with long `in [...]` lists (fetching 4,000 vectors by key took
# 27 s in one query, 0.14 s in chunks of 256), so long lists are split.
IN_CHUNK = 256
_HEX = "0123456789abcdef"


# How long reads of a collection ask for Strong consistency after a delete from it (see _call).
STRONG_AFTER_DELETE_S = 2.0
# Creating and loading collections, which a Milvus server can take a while to do.
SETUP_TIMEOUT_S = 120.0
# The oldest Milvus server this works with (tested: the PyPI `milvus` 2.3.5 standalone server).
MIN_SERVER_VERSION = (2, 3)
# Milvus Lite's embedded process is taken as started once it has lived 0.5 s, but on a loaded
# machine it may bind its socket later: the first call then fails at once. Connecting to it is
# tried again for this long (seen in CI on 2 cores).
LITE_CONNECT_S = 20.0


def _check_scipy_once() -> None:
    """pymilvus looks for scipy.sparse on a process's first search or insert (SciPyHelper._init,
    which executes the module afresh); two threads doing that at once (the writer searches
    images and views in parallel) can meet a half-initialised module ("partially initialized
    module 'scipy.sparse._bsr' has no attribute 'bsr_array'") and that search fails. Seen in the
    replica tests. Done here, once, on one thread."""
    try:
        from pymilvus.client.utils import SciPyHelper

        SciPyHelper._init()
    except (ImportError, AttributeError):  # another pymilvus: it may not look for scipy at all
        pass


def _parse_version(text: str) -> tuple[int, ...]:
    """'v2.3.5' or '2.4.0-rc.1' -> (2, 3, 5) / (2, 4, 0)."""
    numbers = []
    for part in str(text).lstrip("vV").split("-", 1)[0].split("."):
        if not part.isdigit():
            break
        numbers.append(int(part))
    return tuple(numbers)


class StorageError(RuntimeError):
    """Milvus failed or is unreachable."""


@dataclass(slots=True)
class ImageRow:
    image_id: str
    cluster_id: str
    pixels: int
    inserted_at_ms: int
    sha256: str
    vector: np.ndarray | None = None
    namespace: str = DEFAULT_NAMESPACE


@dataclass(slots=True)
class ClusterRow:
    cluster_id: str
    size: int
    representative_id: str
    rep_pixels: int
    rep_inserted_at_ms: int
    namespace: str = DEFAULT_NAMESPACE


@dataclass(frozen=True, slots=True)
class Hit:
    image_id: str
    similarity: float
    cluster_id: str


# Extra views an image may have (core/views.py gives one today); is_inset_key looks this far.
MAX_VIEWS_PER_IMAGE = 4


def _ns_key(namespace: str) -> bytes:
    """The BLAKE2b key of a namespace's hashes: none for `default` (so its keys are the first
    layout's, and migrate_v1 copies rows unchanged), the name for the others (at most 64 bytes,
    BLAKE2b's limit). A keyed hash cannot collide with another namespace's by any choice of id."""
    return b"" if namespace == DEFAULT_NAMESPACE else namespace.encode()


def image_key(image_id: str, namespace: str = DEFAULT_NAMESPACE) -> str:
    """The primary key of an image id in a namespace: 32 hex digits, safe in any filter."""
    return hashlib.blake2b(image_id.encode("utf-8", "surrogatepass"), digest_size=16, key=_ns_key(namespace)).hexdigest()


def view_key(image_id: str, view: int, namespace: str = DEFAULT_NAMESPACE, *, inset: bool = False) -> str:
    """The primary key of an image's extra view number `view` (1, 2, ...). An inset view
    (core/insets.py) is keyed apart from a content view, so that its key tells its kind
    (is_inset_key); keys of content views are those of every view stored before the kinds were
    told apart (2026-12-05), which so read as content views, as they were treated."""
    name = f"i{view}" if inset else str(view)
    return hashlib.blake2b(f"{name}\x00{image_id}".encode("utf-8", "surrogatepass"), digest_size=16, person=b"imgdedup-view", key=_ns_key(namespace)).hexdigest()


class ImageViews(list):
    """An image's stored extra views (vectors, in view-key order), and whether they are inset
    views (view_key): what views_of gives per image."""

    def __init__(self, vectors: Iterable[np.ndarray] = (), *, inset: bool = False):
        super().__init__(vectors)
        self.inset = inset


def is_inset_key(key: str, image_id: str, namespace: str = DEFAULT_NAMESPACE) -> bool:
    """Whether `key` is the key of one of this image's inset views (see view_key)."""
    return any(key == view_key(image_id, n, namespace, inset=True) for n in range(1, MAX_VIEWS_PER_IMAGE + 1))


def digest_key(sha256: str, namespace: str = DEFAULT_NAMESPACE) -> str:
    """What the in-memory digest set keeps for bytes stored in a namespace (core/digests.py)."""
    if namespace == DEFAULT_NAMESPACE:
        return sha256
    return hashlib.blake2b(sha256.encode(), digest_size=32, key=_ns_key(namespace), person=b"imgdedup-sha").hexdigest()


def quote(value: str) -> str:
    """A Milvus filter string literal (filter templates are not supported by Milvus Lite 2.5)."""
    return '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'


def _in_list(field: str, values: Iterable[str]) -> str:
    return f"{field} in [{', '.join(quote(v) for v in values)}]"


def _in_ns(namespace: str, expr: str = "") -> str:
    """expr, within one namespace."""
    scope = f"namespace == {quote(namespace)}"
    return f"{scope} and ({expr})" if expr else scope


def _chunks(values: list[str], size: int = IN_CHUNK) -> Iterable[list[str]]:
    for start in range(0, len(values), size):
        yield values[start: start + size]


def is_lite_uri(uri: str) -> bool:
    """A Milvus Lite file, not a Milvus server's address."""
    return not uri.startswith(("http://", "https://", "tcp://", "grpc://", "unix:"))


class MilvusStore:
    def __init__(
        self,
        uri: str,
        *,
        dim: int,
        model_name: str,
        token: str = "",
        prefix: str = "dedup",
        timeout_s: float = 10.0,
        index_type: str = "IVF_FLAT",
        nlist: int = 128,
        nprobe: int = 32,
        hnsw_m: int = 32,
        ef_construction: int = 200,
        ef: int = 128,
    ):
        self.uri = uri
        self.dim = dim
        self.model_name = model_name
        self.images = f"{prefix}_v2_images"
        self.clusters = f"{prefix}_v2_clusters"
        self.views = f"{prefix}_v2_views"
        self.namespaces = f"{prefix}_v2_namespaces"
        self.v1 = (f"{prefix}_images", f"{prefix}_views", f"{prefix}_clusters")  # the first layout
        self.timeout = timeout_s
        self.setup_timeout = max(timeout_s, SETUP_TIMEOUT_S)  # creating and loading collections
        self.index_type = index_type
        self.nlist = nlist
        self.nprobe = nprobe
        self.hnsw_m, self.ef_construction, self.ef = hnsw_m, ef_construction, ef
        # The vector index each collection really has (it was made by whichever settings created
        # it), so that searches pass that index's parameters: read at connect.
        self._index_kinds: dict[str, str] = {}
        self.is_lite = is_lite_uri(uri)
        self._token = token
        self._client: Any = None
        # Reads must see every write made before them. All writes go through this process (the
        # single writer), so on a server "Session" (this client's own writes) is enough; "Strong"
        # makes every read wait for the server's next time tick (~200 ms on 2.3.5, measured).
        # Milvus Lite answers reads at once either way.
        self.consistency = "Strong" if self.is_lite else "Session"
        self._strong_until: dict[str, float] = {}  # collection -> until when reads ask for Strong
        self.server_version: tuple[int, ...] = ()  # of a Milvus server (empty for Milvus Lite)
        # Namespaces that may hold rows (a superset: registered before their first row). Only
        # this process writes (the single writer), so it stays true once loaded at connect.
        self._holding: set[str] = set()
        self._redo = RedoLog()
        self._count_failed_calls = True  # until the connection-error hook is in place
        # The redo log's trouble count when this connection was last known whole (connected, and
        # every unflushed write made again): any trouble since, and ping() fails until a
        # reconnect has replayed (storage/redo.py).
        self._whole_at = 0

    @property
    def collections(self) -> tuple[str, ...]:
        return (self.images, self.views, self.clusters, self.namespaces)

    @property
    def backend(self) -> str:
        return "milvus-lite" if self.is_lite else "milvus"

    # -- lifecycle -------------------------------------------------------------------------
    def connect(self) -> None:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # milvus-lite 2.5 imports the deprecated pkg_resources
            from pymilvus import MilvusClient, Status

            _check_scipy_once()

            if self.is_lite:
                Path(self.uri).parent.mkdir(parents=True, exist_ok=True)
            give_up = time.monotonic() + (LITE_CONNECT_S if self.is_lite else 0.0)
            while True:
                try:
                    self._client = MilvusClient(uri=self.uri, token=self._token, timeout=self.timeout)
                    break
                except Exception as exc:
                    # Only a socket not answering yet is waited for (CONNECT_FAILED); a Lite
                    # file another process holds, or a bad URI, fails at once.
                    if time.monotonic() >= give_up or getattr(exc, "code", None) != Status.CONNECT_FAILED:
                        raise StorageError(f"cannot connect to Milvus at {self.uri}: {exc}") from exc
                    log.info("Milvus Lite at %s not answering yet (%s); trying again", self.uri, exc)
                    time.sleep(0.25)
        if not self.is_lite:
            self.server_version = _parse_version(self._call("get_server_version"))
            if self.server_version < MIN_SERVER_VERSION:
                raise StorageError(
                    f"Milvus server {'.'.join(map(str, self.server_version))} at {self.uri} is too old; "
                    f"this server needs {'.'.join(map(str, MIN_SERVER_VERSION))} or later"
                )
        self._watch_connection()
        self._ensure_collections()
        self._read_index_kinds()
        self.migrate_v1()
        self._holding = set(self.namespace_names())
        self._whole_at = self._redo.epoch

    def _watch_connection(self) -> None:
        """Count every failed attempt of a Milvus call as trouble, the ones pymilvus retries by
        itself too (gRPC errors: the connection's, not errors Milvus answered): it retries an
        UNAVAILABLE call until the call's deadline, so a Milvus that
        restarted in a few seconds (and lost writes it had acknowledged) would otherwise answer
        the next call as if nothing had happened. pymilvus reports each such failure to its
        connection handler's `_on_rpc_error` (its hook for the connection manager); we wrap it.
        Without that hook (another pymilvus), only the calls that fail count."""
        handler = self._client._get_connection() if hasattr(self._client, "_get_connection") else None
        inner = getattr(handler, "_on_rpc_error", None)
        if inner is None:
            log.warning("this pymilvus has no connection-error hook: a Milvus restart is noticed only when a call fails")
            return
        import grpc

        logs = getattr(handler, "imgdedup_redo_logs", None)  # pymilvus shares a handler between clients
        if logs is None:
            logs = handler.imgdedup_redo_logs = weakref.WeakSet()

            def on_error(error: Exception) -> Any:
                if isinstance(error, grpc.RpcError):  # the connection's (an error Milvus answered is not trouble)
                    for redo in list(logs):
                        redo.trouble()
                return inner(error)

            handler._on_rpc_error = on_error
        logs.add(self._redo)
        self._count_failed_calls = False

    def _read_index_kinds(self) -> None:
        for name in (self.images, self.views):
            info = self._call("describe_index", name, "embedding") or {}
            kind = str(info.get("index_type") or self.index_type).upper()
            if kind != self.index_type.upper() and name == self.images:
                log.warning("collection %s has a %s vector index (index_type %s applies to new collections only); searching it as %s", name, kind, self.index_type, kind)
            self._index_kinds[name] = kind

    def close(self) -> None:
        if self._client is not None:
            try:
                for name in self.collections:
                    self._client.flush(name, timeout=self.timeout)
            except Exception:  # closing must not raise
                log.exception("flush on close failed")
        self._drop_client()

    def ping(self) -> None:
        """Raise StorageError unless Milvus answers with all its collections loaded (a Milvus
        server that restarted answers before it has loaded them again), and unless a call
        failed since the connection was last whole (Milvus may have restarted and lost writes:
        the reconnect that follows makes them again)."""
        if self._client is None:
            raise StorageError("Milvus is not connected")
        if self._redo.epoch != self._whole_at:
            raise StorageError("a Milvus call failed since the store connected (Milvus may have restarted): reconnecting")
        for name in self.collections:
            if (state := self._load_state(name)) != "Loaded":
                raise StorageError(f"collection {name!r} is not loaded ({state})")

    def _load_state(self, name: str) -> str:
        state = self._call("get_load_state", name)["state"]
        return getattr(state, "name", str(state))

    def reconnect(self, before_write: Callable[[], None] | None = None) -> int:
        """Drop the connection and connect again (a Milvus Lite whose process died is restarted
        on the same file; pymilvus' registry would otherwise hand back the dead socket), then
        make again the writes Milvus may have lost meanwhile (replay_unflushed; `before_write`
        runs before each, as before any write). On the writer thread. Returns the writes made
        again. When any step fails, the store is left unconnected, so that the next ping fails
        and the next reconnect replays: it is never connected without having replayed."""
        self._redo.trouble()
        self._drop_client()
        if self.is_lite:
            from milvus_lite.server_manager import server_manager_instance

            server_manager_instance.release_server(self.uri)
        holding = self._holding
        try:
            self.connect()
            self._holding |= holding  # namespaces whose registration Milvus may have lost (replayed next)
            whole_at, self._whole_at = self._redo.epoch, -1  # not whole until the replay is done
            replayed = self.replay_unflushed(before_write)
            self._whole_at = whole_at  # trouble during the replay: the next ping reconnects again
            return replayed
        except BaseException:
            self._drop_client()
            raise

    def _drop_client(self) -> None:
        client, self._client = self._client, None
        if client is not None:
            try:
                client.close()
            except Exception:  # already broken
                pass

    def _ensure_collections(self) -> None:
        from pymilvus import DataType, MilvusClient

        self._check_model(self.images)
        if not self._call("has_collection", self.images):
            schema = self._schema(self._images_description)
            schema.add_field("image_key", DataType.VARCHAR, is_primary=True, max_length=32)
            self._add_namespace(schema)
            schema.add_field("image_id", DataType.VARCHAR, max_length=MAX_ID_BYTES)
            schema.add_field("embedding", DataType.FLOAT_VECTOR, dim=self.dim)
            schema.add_field("cluster_id", DataType.VARCHAR, max_length=64)
            schema.add_field("pixels", DataType.INT64)
            schema.add_field("inserted_at_ms", DataType.INT64)
            schema.add_field("sha256", DataType.VARCHAR, max_length=64)
            index = self._embedding_index("cluster_id", "sha256")
            self._create(self.images, schema, index)
        if not self._call("has_collection", self.views):
            schema = self._schema(f"imgdedup views; model={self.model_name}; dim={self.dim}")
            schema.add_field("view_key", DataType.VARCHAR, is_primary=True, max_length=32)
            self._add_namespace(schema)
            schema.add_field("image_key", DataType.VARCHAR, max_length=32)
            schema.add_field("image_id", DataType.VARCHAR, max_length=MAX_ID_BYTES)
            schema.add_field("embedding", DataType.FLOAT_VECTOR, dim=self.dim)
            index = self._embedding_index("image_key")
            self._create(self.views, schema, index)
        if not self._call("has_collection", self.clusters):
            schema = self._schema("imgdedup clusters")
            schema.add_field("cluster_id", DataType.VARCHAR, is_primary=True, max_length=64)
            self._add_namespace(schema)
            schema.add_field("size", DataType.INT64)
            schema.add_field("representative_id", DataType.VARCHAR, max_length=MAX_ID_BYTES)
            schema.add_field("rep_pixels", DataType.INT64)
            schema.add_field("rep_inserted_at_ms", DataType.INT64)
            schema.add_field("placeholder", DataType.FLOAT_VECTOR, dim=2)
            self._create(self.clusters, schema, self._placeholder_index())
        if not self._call("has_collection", self.namespaces):
            schema = self._schema("imgdedup namespaces")
            schema.add_field("name", DataType.VARCHAR, is_primary=True, max_length=MAX_NAMESPACE_CHARS)
            schema.add_field("created_at_ms", DataType.INT64)
            schema.add_field("placeholder", DataType.FLOAT_VECTOR, dim=2)
            self._create(self.namespaces, schema, self._placeholder_index())
        self._load(self.collections)

    def _load(self, names: Iterable[str]) -> None:
        """Load collections and wait until all of them are. A server takes seconds for each (its
        query coordinator takes up a load on its next tick; longer right after it restarted), so
        the loads are asked for together and awaited together: measured on Milvus 2.3.5, four
        collections one after the other took ~16 s of a server's start."""
        names = list(names)
        for name in names:
            self._call("load_collection", name, timeout=self.setup_timeout, _async=True)
        deadline = time.monotonic() + self.setup_timeout
        waiting = names
        while waiting:
            waiting = [n for n in waiting if self._load_state(n) != "Loaded"]
            if waiting and time.monotonic() > deadline:
                raise StorageError(f"collections {waiting} did not load in {self.setup_timeout:.0f} s")
            if waiting:
                time.sleep(0.05)

    @property
    def _images_description(self) -> str:
        """What an images collection records of the model it was made for."""
        return f"imgdedup images; model={self.model_name}; dim={self.dim}"

    def _check_model(self, collection: str) -> None:
        """Refuse an images collection made for another model."""
        description = self._images_description
        if self._call("has_collection", collection):
            stored = self._call("describe_collection", collection).get("description", "")
            if stored != description:
                raise StorageError(
                    f"collection {collection!r} was made for another model ({stored!r}); "
                    f"this server runs {description!r}. Use another collection prefix or data dir."
                )

    @staticmethod
    def _schema(description: str) -> Any:
        from pymilvus import MilvusClient

        return MilvusClient.create_schema(auto_id=False, description=description)

    def _add_namespace(self, schema: Any) -> None:
        from pymilvus import DataType

        # A plain field, not a partition key: Milvus Lite 2.5.1 refuses filters on a partition key
        # ("Invalid expr"), and the 2.3.5 server files an upserted row under another partition
        # than its key's, so a filter on the key misses it (docs/namespaces.md).
        schema.add_field("namespace", DataType.VARCHAR, max_length=MAX_NAMESPACE_CHARS)

    @staticmethod
    def _placeholder_index() -> Any:
        from pymilvus import MilvusClient

        index = MilvusClient.prepare_index_params()
        index.add_index("placeholder", index_type="FLAT", metric_type="L2")
        return index

    # -- the first layout --------------------------------------------------------------------
    def migrate_v1(self) -> int:
        """Copy collections of the first layout (no namespaces) into this one as the `default`
        namespace, check the counts, then drop them. Rows keep their keys (image_key of the
        default namespace is the first layout's), so the copy is an upsert: a start interrupted
        in the middle copies again. Returns the images copied (0 when there was nothing)."""
        old_images, old_views, old_clusters = self.v1
        if not self._call("has_collection", old_images):
            return 0
        self._check_model(old_images)
        log.warning("found collections of the first layout (%s); copying them into %s as namespace %r", ", ".join(self.v1), self.images, DEFAULT_NAMESPACE)
        started = time.perf_counter()
        copies = [
            (old_images, self.images, "image_key", ""),
            (old_views, self.views, "view_key", ""),
            (old_clusters, self.clusters, "cluster_id", "c"),
        ]
        self.register_namespace(DEFAULT_NAMESPACE)
        copied: dict[str, int] = {}
        for old, new, key, root in copies:
            if not self._call("has_collection", old):
                continue
            self._load([old])
            total = self._count(old, "", consistency="Strong")
            rows = self._query_all(old, f"{key} != \"\"", ["*"], key=key, root=root, consistency="Strong") if total else []
            for start in range(0, len(rows), MIGRATE_CHUNK):
                chunk = [{**r, "namespace": DEFAULT_NAMESPACE} for r in rows[start: start + MIGRATE_CHUNK]]
                self._call("upsert", new, chunk, timeout=self.setup_timeout)
            now = self._count(new, _in_ns(DEFAULT_NAMESPACE), consistency="Strong")
            if len(rows) != total or now < total:
                raise StorageError(f"copying {old!r} into {new!r} is incomplete ({len(rows)} rows read, {total} there, {now} in the copy); the old collection is kept")
            copied[old] = total
        for old, *_ in copies:
            if self._call("has_collection", old):
                self._call("drop_collection", old, timeout=self.setup_timeout)
        log.warning("copied the first layout in %.1f s (%s) and dropped it", time.perf_counter() - started, ", ".join(f"{k}: {v}" for k, v in copied.items()))
        return copied.get(old_images, 0)

    def _create(self, name: str, schema: Any, index: Any) -> None:
        """Create a collection with its indexes. Milvus creates the collection before its
        indexes: if an index is refused, the bare collection is dropped again, so that the
        next start does not find a collection it cannot load."""
        try:
            self._call("create_collection", name, schema=schema, consistency_level="Strong", timeout=self.setup_timeout)
            self._call("create_index", name, index, timeout=self.setup_timeout)
        except StorageError:
            try:
                if self._client.has_collection(name, timeout=self.timeout):
                    self._client.drop_collection(name, timeout=self.timeout)
            except Exception:  # Milvus is failing anyway; the first error is the one to report
                log.exception("dropping the half-made collection %r failed", name)
            raise

    def _embedding_index(self, *filtered_fields: str) -> Any:
        """Index parameters of a collection with an `embedding` field (the configured vector
        index), a scalar index on the namespace that every read filters on (measured:
        docs/namespaces.md) and, on a server, on the VARCHAR fields that filters look up."""
        from pymilvus import MilvusClient

        index = MilvusClient.prepare_index_params()
        index.add_index("embedding", index_type=self.index_type, metric_type="COSINE", params=self._build_params())
        # INVERTED came with Milvus 2.4 (Lite has it); 2.3 indexes VARCHAR fields only with a Trie.
        kind = "INVERTED" if self.is_lite or self.server_version >= (2, 4) else "Trie"
        index.add_index("namespace", index_type=kind)
        if not self.is_lite:
            for name in filtered_fields:
                index.add_index(name, index_type=kind)
        return index

    def _call(self, method: str, *args: Any, redo: bool = True, **kwargs: Any) -> Any:
        """A pymilvus call with this store's timeout and consistency; an acknowledged write is
        kept in the redo log (storage/redo.py) unless `redo` is false (a replay)."""
        client = self._client  # once: a reconnect on another thread may drop it meanwhile
        if client is None:
            raise StorageError("Milvus is not connected")
        kwargs.setdefault("timeout", self.timeout)
        collection = args[0] if args else None
        if method in ("search", "query"):
            # Every read with this store's consistency, unless the caller asks for another, or a
            # recent delete needs Strong (below).
            kwargs.setdefault("consistency_level", self.consistency)
            if time.monotonic() < self._strong_until.get(collection, 0.0):
                kwargs["consistency_level"] = "Strong"
        try:
            result = getattr(client, method)(*args, **kwargs)
        except Exception as exc:
            if self._count_failed_calls:
                self._redo.trouble()
            if isinstance(exc, StorageError):
                raise
            raise StorageError(f"Milvus {method} failed: {exc}") from exc
        if not self.is_lite and method == "delete":
            # Session reads see this client's writes through the timestamp of its last one, but
            # a delete does not leave a usable one (measured on Milvus 2.3.5: a listing right
            # after a delete still showed the deleted rows). So reads of that collection ask for
            # Strong for a while, far longer than a server's time tick (200 ms), after which any
            # read sees the delete.
            self._strong_until[collection] = time.monotonic() + STRONG_AFTER_DELETE_S
        elif method in ("insert", "upsert"):
            self._strong_until.pop(collection, None)  # a later write's timestamp covers the delete
        if redo and method in ("insert", "upsert", "delete"):
            self._redo.record(method, collection, kwargs["filter"] if method == "delete" else args[1])
        return result

    # -- durability ------------------------------------------------------------------------------
    @property
    def unflushed_rows(self) -> int:
        """Rows written since the last flush that completed (kept to be written again)."""
        return self._redo.rows

    def flush(self) -> int:
        """Ask Milvus to persist every collection and wait; then let go of the writes it covers.
        Any thread (writes go on meanwhile). Returns the writes let go: none when the
        connection was not whole when the flush began or had trouble while it ran (Milvus may
        have lost some of them before the flush; the reconnect makes them again)."""
        mark = self._redo.mark()
        for name in self.collections:
            self._call("flush", name, timeout=self.setup_timeout)
        return self._redo.forget_until(mark) if mark[1] == self._whole_at else 0

    def replay_unflushed(self, before_write: Callable[[], None] | None = None) -> int:
        """Make again, in order, every write made since the last completed flush (storage/redo.py):
        after a reconnect, on the writer thread, before any new write. Returns the writes made."""
        writes = self._redo.writes()
        for w in writes:
            if before_write is not None:
                before_write()
            self._call(w.method, w.collection, redo=False, timeout=self.setup_timeout, **w.kwargs)
        return len(writes)

    # -- namespaces ----------------------------------------------------------------------------
    def register_namespace(self, namespace: str) -> None:
        """Record that a namespace may hold rows: before its first row is written."""
        if namespace in self._holding:
            return
        self._call("upsert", self.namespaces, [{"name": namespace, "created_at_ms": int(time.time() * 1000), "placeholder": [0.0, 0.0]}])
        self._holding.add(namespace)

    def namespace_names(self) -> list[str]:
        """Every registered namespace, by name (Strong: read at start, as all_keys_and_digests)."""
        rows = self._query(self.namespaces, 'name != ""', ["name"], consistency="Strong")
        return sorted(str(r["name"]) for r in rows)

    def drop_namespace(self, namespace: str) -> int:
        """Delete every row of a namespace (its registration last). Returns its image count."""
        images = self.count_images(namespace)
        for collection in (self.images, self.views, self.clusters):
            self._call("delete", collection, filter=_in_ns(namespace))
        self._call("delete", self.namespaces, filter=_in_list("name", [namespace]))
        self._holding.discard(namespace)
        return images

    def _scope(self, namespace: str) -> str | None:
        """The filter a vector search in `namespace` needs: none while it is the only one that
        holds rows; None when it holds none (nothing to search)."""
        if not self.holds(namespace):
            return None
        return "" if len(self._holding) == 1 else _in_ns(namespace)

    # -- images ------------------------------------------------------------------------------
    def search(self, namespace: str, vectors: np.ndarray, limit: int) -> list[list[Hit]]:
        results = self._search(self.images, namespace, vectors, limit, ["image_id", "cluster_id"])
        return [
            [Hit(str(h["entity"]["image_id"]), float(h["distance"]), str(h["entity"]["cluster_id"])) for h in hits]
            for hits in results
        ]

    def search_views(self, namespace: str, vectors: np.ndarray, limit: int) -> list[list[tuple[str, float, bool]]]:
        """(image_id, similarity, whether it is an inset view) of the nearest extra views, per
        query vector."""
        results = self._search(self.views, namespace, vectors, limit, ["image_id", "view_key"])
        return [
            [(image_id := str(h["entity"]["image_id"]), float(h["distance"]), is_inset_key(str(h["entity"]["view_key"]), image_id, namespace)) for h in hits]
            for hits in results
        ]

    def _search(self, collection: str, namespace: str, vectors: np.ndarray, limit: int, fields: list[str]) -> Any:
        scope = self._scope(namespace)
        if scope is None:
            return [[] for _ in vectors]
        return self._call(
            "search",
            collection,
            # Lists of floats: pymilvus packs a numpy row float by float through struct (16 us
            # for 512-d), a list in 3 (plus 1 for tolist over the whole batch).
            data=np.asarray(vectors, dtype=np.float32).tolist(),
            limit=limit,
            filter=scope,
            output_fields=fields,
            search_params={"metric_type": "COSINE", "params": self._search_params(collection, limit)},
        )

    def _build_params(self) -> dict[str, Any]:
        """The vector index's build parameters, by kind (Milvus refuses an HNSW without them)."""
        kind = self.index_type.upper()
        if kind.startswith("IVF"):
            return {"nlist": self.nlist}
        if kind == "HNSW":
            return {"M": self.hnsw_m, "efConstruction": self.ef_construction}
        return {}

    def _search_params(self, collection: str, limit: int) -> dict[str, Any]:
        kind = self._index_kinds.get(collection, self.index_type.upper())
        if kind.startswith("IVF"):
            return {"nprobe": self.nprobe}
        if kind == "HNSW":
            return {"ef": max(self.ef, limit)}  # HNSW keeps at least as many candidates as results
        return {}

    def insert_views(self, namespace: str, views: dict[str, list[np.ndarray]], insets: Container[str] = ()) -> None:
        """Store extra views: {image_id: [vector of view 1, view 2, ...]} (upsert: re-runnable);
        those of the images in `insets` are inset views (view_key)."""
        if any(len(vectors) > MAX_VIEWS_PER_IMAGE for vectors in views.values()):
            raise ValueError(f"an image has at most {MAX_VIEWS_PER_IMAGE} extra views (is_inset_key looks no further)")
        rows = [
            {
                "view_key": view_key(image_id, n, namespace, inset=image_id in insets),
                "namespace": namespace,
                "image_key": image_key(image_id, namespace),
                "image_id": image_id,
                "embedding": np.asarray(v, dtype=np.float32),
            }
            for image_id, vectors in views.items()
            for n, v in enumerate(vectors, 1)
        ]
        if rows:
            self.register_namespace(namespace)
            self._call("upsert", self.views, rows)

    def views_of(self, namespace: str, image_ids: Iterable[str]) -> dict[str, ImageViews]:
        """The stored extra views of these images, with their kind (images without any are left
        out)."""
        keys = [image_key(i, namespace) for i in dict.fromkeys(image_ids)]
        found: list[dict[str, Any]] = []
        for chunk in _chunks(keys):
            # Keys first: Milvus Lite 2.5.1 fails to return vectors from a collection that never
            # held a row, so vectors are fetched only for rows known to exist.
            rows = self._call("query", self.views, filter=_in_ns(namespace, _in_list("image_key", chunk)), output_fields=["view_key"], limit=QUERY_WINDOW)
            if rows:
                found += self._call(
                    "query", self.views, filter=_in_list("view_key", [r["view_key"] for r in rows]),
                    output_fields=["view_key", "image_id", "embedding"], limit=len(rows),
                )
        out: dict[str, ImageViews] = {}
        for r in sorted(found, key=lambda r: r["view_key"]):
            image_id = str(r["image_id"])
            views = out.setdefault(image_id, ImageViews())
            views.append(np.asarray(r["embedding"], dtype=np.float32))
            views.inset = views.inset or is_inset_key(str(r["view_key"]), image_id, namespace)
        return out

    def holds(self, namespace: str) -> bool:
        """Whether the namespace has ever held rows here (registered): one that has not has
        nothing to search."""
        return namespace in self._holding

    def all_views(self, namespace: str, *, at_most: int) -> dict[str, dict[str, np.ndarray]] | None:
        """Every extra view of a namespace, {image_id: {view_key: vector}}, or None when it has
        more than `at_most` (core/view_mirror.py). Strong: what an earlier writer wrote counts."""
        scope = _in_ns(namespace)
        keys = self._call("query", self.views, filter=scope, output_fields=["view_key"], limit=at_most + 1, consistency_level="Strong")
        if len(keys) > at_most:
            return None
        out: dict[str, dict[str, np.ndarray]] = {}
        if not keys:  # (vectors only from a collection known to hold rows, as in views_of)
            return out
        rows = self._call("query", self.views, filter=scope, output_fields=["view_key", "image_id", "embedding"], limit=at_most + 1, consistency_level="Strong")
        for r in rows:
            out.setdefault(str(r["image_id"]), {})[r["view_key"]] = np.asarray(r["embedding"], dtype=np.float32)
        return out

    def delete_views(self, namespace: str, image_ids: list[str]) -> None:
        for chunk in _chunks([image_key(i, namespace) for i in image_ids]):
            self._call("delete", self.views, filter=_in_ns(namespace, _in_list("image_key", chunk)))

    def get_images(self, namespace: str, image_ids: Iterable[str], *, with_vectors: bool = False) -> dict[str, ImageRow]:
        ids = list(dict.fromkeys(image_ids))
        if not ids:
            return {}
        keys = [image_key(i, namespace) for i in ids]
        return {r.image_id: r for chunk in _chunks(keys) for r in self._query_images(_in_ns(namespace, _in_list("image_key", chunk)), with_vectors=with_vectors)}

    def find_by_sha256(self, namespace: str, digest: str) -> ImageRow | None:
        """A stored image of this namespace with exactly these bytes (with its embedding), if any."""
        rows = self._query_images(_in_ns(namespace, f"sha256 == {quote(digest)}"), with_vectors=True, limit=1)
        return rows[0] if rows else None

    def holds_sha256(self, namespace: str, digest: str, *, other_than: str = "") -> bool:
        """Whether an image of this namespace with exactly these bytes is stored (other than the
        image id `other_than`: a write being retried may have stored its own row already)."""
        expr = f"sha256 == {quote(digest)}"
        if other_than:
            expr += f" and image_key != {quote(image_key(other_than, namespace))}"
        return bool(self._query_images(_in_ns(namespace, expr), with_vectors=False, limit=1))

    def all_keys_and_digests(self) -> list[tuple[str, str, str]]:
        """(namespace, image_key, sha256) of every stored image (for the in-memory hash sets)."""
        # Strong: read at start, it must see what the process before this one wrote (Session
        # consistency covers only this process's own writes).
        rows = self._query_all(self.images, "image_key != \"\"", ["namespace", "image_key", "sha256"], key="image_key", root="", consistency="Strong")
        return [(r["namespace"], r["image_key"], r["sha256"]) for r in rows]

    def images_in_clusters(self, namespace: str, cluster_ids: Iterable[str], *, with_vectors: bool = False) -> list[ImageRow]:
        ids = list(dict.fromkeys(cluster_ids))
        if not ids:
            return []
        return [r for chunk in _chunks(ids) for r in self._query_images(_in_ns(namespace, _in_list("cluster_id", chunk)), with_vectors=with_vectors)]

    def insert_images(self, rows: list[ImageRow]) -> None:
        """Add images whose ids are not stored yet (their namespace registered first)."""
        if rows:
            for namespace in {r.namespace for r in rows}:
                self.register_namespace(namespace)
            self._call("insert", self.images, [self._image_dict(r) for r in rows])

    def rewrite_images(self, rows: list[ImageRow]) -> None:
        """Replace stored images (e.g. with a new cluster id), each row atomically (upsert)."""
        if rows:
            self._call("upsert", self.images, [self._image_dict(r) for r in rows])

    def all_images(self) -> list[ImageRow]:
        """Every stored image of every namespace, without embeddings (for rebuilding clusters)."""
        rows = self._query_all(self.images, "image_key != \"\"", self._image_fields(False), key="image_key", root="", consistency="Strong")
        return [self._image_row(r) for r in rows]

    def delete_images(self, namespace: str, image_ids: list[str]) -> None:
        if image_ids:
            for chunk in _chunks([image_key(i, namespace) for i in image_ids]):
                self._call("delete", self.images, filter=_in_ns(namespace, _in_list("image_key", chunk)))

    def count_images(self, namespace: str | None) -> int:
        """Images stored in a namespace (None: in all of them)."""
        return self._count(self.images, "" if namespace is None else _in_ns(namespace))

    def _query_images(self, expr: str, *, with_vectors: bool, limit: int = QUERY_WINDOW) -> list[ImageRow]:
        fields = self._image_fields(False)
        rows = list(self._call("query", self.images, filter=expr, output_fields=fields, limit=limit))
        if with_vectors and rows:
            # Asked for vectors, Milvus Lite 2.5.1 fails on a collection that never held a row
            # ("Growing segment loss raw data"), so vectors are fetched only for rows that exist.
            by_key = {
                v["image_key"]: v["embedding"]
                for chunk in _chunks([r["image_key"] for r in rows])
                for v in self._call(
                    "query", self.images, filter=_in_list("image_key", chunk),
                    output_fields=["image_key", "embedding"], limit=len(chunk),
                )
            }
            # A row deleted between the two queries (by the writer thread) is left out.
            rows = [{**r, "embedding": by_key[r["image_key"]]} for r in rows if r["image_key"] in by_key]
        return [self._image_row(r) for r in rows]

    @staticmethod
    def _image_fields(with_vectors: bool) -> list[str]:
        fields = ["image_key", "namespace", "image_id", "cluster_id", "pixels", "inserted_at_ms", "sha256"]
        return [*fields, "embedding"] if with_vectors else fields

    @staticmethod
    def _image_row(r: dict[str, Any]) -> ImageRow:
        vec = r.get("embedding")
        return ImageRow(
            image_id=r["image_id"],
            cluster_id=r["cluster_id"],
            pixels=int(r["pixels"]),
            inserted_at_ms=int(r["inserted_at_ms"]),
            sha256=r["sha256"],
            vector=None if vec is None else np.asarray(vec, dtype=np.float32),
            namespace=r["namespace"],
        )

    @staticmethod
    def _image_dict(r: ImageRow) -> dict[str, Any]:
        assert r.vector is not None, "an image row is written with its embedding"
        return {
            "image_key": image_key(r.image_id, r.namespace),
            "namespace": r.namespace,
            "image_id": r.image_id,
            "embedding": np.asarray(r.vector, dtype=np.float32),
            "cluster_id": r.cluster_id,
            "pixels": r.pixels,
            "inserted_at_ms": r.inserted_at_ms,
            "sha256": r.sha256,
        }

    # -- clusters ----------------------------------------------------------------------------
    def get_clusters(self, namespace: str, cluster_ids: Iterable[str]) -> dict[str, ClusterRow]:
        ids = list(dict.fromkeys(cluster_ids))
        if not ids:
            return {}
        return {
            r["cluster_id"]: self._cluster_row(r)
            for chunk in _chunks(ids)
            for r in self._query(self.clusters, _in_ns(namespace, _in_list("cluster_id", chunk)), self._cluster_fields())
        }

    def upsert_clusters(self, rows: list[ClusterRow]) -> None:
        if rows:
            self._call("upsert", self.clusters, [
                {
                    "cluster_id": r.cluster_id,
                    "namespace": r.namespace,
                    "size": r.size,
                    "representative_id": r.representative_id,
                    "rep_pixels": r.rep_pixels,
                    "rep_inserted_at_ms": r.rep_inserted_at_ms,
                    "placeholder": [0.0, 0.0],
                }
                for r in rows
            ])

    def delete_clusters(self, cluster_ids: list[str]) -> None:
        """Delete cluster rows by id (ids are unique across namespaces: core/index.py)."""
        for chunk in _chunks(cluster_ids):
            self._call("delete", self.clusters, filter=_in_list("cluster_id", chunk))

    def cluster_sizes(self, namespace: str | None, min_size: int) -> list[tuple[str, int]]:
        """(cluster_id, size) of every cluster of a namespace (None: of all) with at least
        min_size members."""
        expr = f"size >= {int(min_size)}"
        rows = self._query_all(self.clusters, expr if namespace is None else _in_ns(namespace, expr), ["cluster_id", "size"], key="cluster_id")
        return [(r["cluster_id"], int(r["size"])) for r in rows]

    def count_clusters(self, namespace: str, min_size: int = 1) -> int:
        return self._count(self.clusters, _in_ns(namespace, f"size >= {int(min_size)}"))

    @staticmethod
    def _cluster_fields() -> list[str]:
        return ["cluster_id", "namespace", "size", "representative_id", "rep_pixels", "rep_inserted_at_ms"]

    @staticmethod
    def _cluster_row(r: dict[str, Any]) -> ClusterRow:
        return ClusterRow(r["cluster_id"], int(r["size"]), r["representative_id"], int(r["rep_pixels"]), int(r["rep_inserted_at_ms"]), r["namespace"])

    # -- queries -----------------------------------------------------------------------------
    def _count(self, collection: str, expr: str, consistency: str | None = None) -> int:
        """Rows matching expr ("": all), by count(*) (a server counts rows not flushed yet)."""
        extra = {"consistency_level": consistency} if consistency else {}
        return int(self._call("query", collection, filter=expr, output_fields=["count(*)"], **extra)[0]["count(*)"])

    def _query(self, collection: str, expr: str, fields: list[str], consistency: str | None = None) -> list[dict[str, Any]]:
        extra = {"consistency_level": consistency} if consistency else {}
        return list(self._call("query", collection, filter=expr, output_fields=fields, limit=QUERY_WINDOW, **extra))

    def _query_all(self, collection: str, expr: str, fields: list[str], *, key: str, root: str = "c", prefix: str = "", consistency: str | None = None) -> list[dict[str, Any]]:
        """Every row matching expr, past the query window, by splitting on hex key prefixes.

        (query_iterator loops forever against Milvus Lite 2.5.1, so it is not used.)
        Keys are lower-case hex after `root`: cluster ids ("c" + hex) or image keys ("" + hex).
        """
        scoped = expr if not prefix else f'({expr}) and {key} like {quote(prefix + "%")}'
        rows = self._query(collection, scoped, fields, consistency)
        if len(rows) < QUERY_WINDOW:
            return rows
        base = prefix or root
        return [row for ch in _HEX for row in self._query_all(collection, expr, fields, key=key, root=root, prefix=base + ch, consistency=consistency)]
