"""Images and clusters in Milvus: Milvus Lite in a local file by default, any server by URI.

Two collections:
- `<prefix>_images`: one row per stored image: its embedding (COSINE), the caller's image_id,
  cluster id, pixel count, insertion time and content hash. The primary key is a hash of the
  image_id (`image_key`), never the caller's string itself: Milvus Lite 2.5.1 builds SQL from
  primary keys without escaping, so a delete or upsert of an id with a quote in it fails.
- `<prefix>_views`: extra embeddings of some stored images (e.g. the photo inside a screenshot,
  see core/views.py), keyed by a hash of (image_id, view number), pointing at their image by
  image_key/image_id. Derived data: written before the image row, deleted after it, and a view
  whose image row is missing is ignored, so a crash in between leaves nothing visible.
- `<prefix>_clusters`: one row per cluster (singletons included): size and representative.
  Milvus requires a vector field in every collection, so it carries a 2-d placeholder.

Every call passes `timeout`: pymilvus otherwise retries some failures 75 times (minutes).
"""

from __future__ import annotations

import hashlib
import logging
import time
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterable

import numpy as np

log = logging.getLogger(__name__)

MAX_ID_BYTES = 256
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


@dataclass(slots=True)
class ClusterRow:
    cluster_id: str
    size: int
    representative_id: str
    rep_pixels: int
    rep_inserted_at_ms: int


@dataclass(frozen=True, slots=True)
class Hit:
    image_id: str
    similarity: float
    cluster_id: str


def image_key(image_id: str) -> str:
    """The primary key for an image id: 32 hex digits, safe in any filter or statement."""
    return hashlib.blake2b(image_id.encode("utf-8", "surrogatepass"), digest_size=16).hexdigest()


def view_key(image_id: str, view: int) -> str:
    """The primary key of an image's extra view number `view` (1, 2, ...)."""
    return hashlib.blake2b(f"{view}\x00{image_id}".encode("utf-8", "surrogatepass"), digest_size=16, person=b"imgdedup-view").hexdigest()


def quote(value: str) -> str:
    """A Milvus filter string literal (filter templates are not supported by Milvus Lite 2.5)."""
    return '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'


def _in_list(field: str, values: Iterable[str]) -> str:
    return f"{field} in [{', '.join(quote(v) for v in values)}]"


def _chunks(values: list[str], size: int = IN_CHUNK) -> Iterable[list[str]]:
    for start in range(0, len(values), size):
        yield values[start: start + size]


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
    ):
        self.uri = uri
        self.dim = dim
        self.model_name = model_name
        self.images = f"{prefix}_images"
        self.clusters = f"{prefix}_clusters"
        self.views = f"{prefix}_views"
        self.timeout = timeout_s
        self.setup_timeout = max(timeout_s, SETUP_TIMEOUT_S)  # creating and loading collections
        self.index_type = index_type
        self.nlist = nlist
        self.nprobe = nprobe
        self.is_lite = not uri.startswith(("http://", "https://", "tcp://", "grpc://", "unix:"))
        self._token = token
        self._client: Any = None
        # Reads must see every write made before them. All writes go through this process (the
        # single writer), so on a server "Session" (this client's own writes) is enough; "Strong"
        # makes every read wait for the server's next time tick (~200 ms on 2.3.5, measured).
        # Milvus Lite answers reads at once either way.
        self.consistency = "Strong" if self.is_lite else "Session"
        self._strong_until: dict[str, float] = {}  # collection -> until when reads ask for Strong
        self.server_version: tuple[int, ...] = ()  # of a Milvus server (empty for Milvus Lite)

    @property
    def backend(self) -> str:
        return "milvus-lite" if self.is_lite else "milvus"

    # -- lifecycle -------------------------------------------------------------------------
    def connect(self) -> None:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # milvus-lite 2.5 imports the deprecated pkg_resources
            from pymilvus import MilvusClient

            _check_scipy_once()

            if self.is_lite:
                Path(self.uri).parent.mkdir(parents=True, exist_ok=True)
            try:
                self._client = MilvusClient(uri=self.uri, token=self._token, timeout=self.timeout)
            except Exception as exc:
                raise StorageError(f"cannot connect to Milvus at {self.uri}: {exc}") from exc
        if not self.is_lite:
            self.server_version = _parse_version(self._call("get_server_version"))
            if self.server_version < MIN_SERVER_VERSION:
                raise StorageError(
                    f"Milvus server {'.'.join(map(str, self.server_version))} at {self.uri} is too old; "
                    f"this server needs {'.'.join(map(str, MIN_SERVER_VERSION))} or later"
                )
        self._ensure_collections()

    def close(self) -> None:
        if self._client is not None:
            try:
                for name in (self.images, self.views, self.clusters):
                    self._client.flush(name, timeout=self.timeout)
            except Exception:  # closing must not raise
                log.exception("flush on close failed")
            self._client.close()
            self._client = None

    def ping(self) -> None:
        """Raise StorageError unless Milvus answers with all three collections loaded (a Milvus
        server that restarted answers before it has loaded them again)."""
        for name in (self.images, self.views, self.clusters):
            state = self._call("get_load_state", name)["state"]
            if getattr(state, "name", str(state)) != "Loaded":
                raise StorageError(f"collection {name!r} is not loaded ({getattr(state, 'name', state)})")

    def reconnect(self) -> None:
        """Drop the connection and connect again (a Milvus Lite whose process died is restarted
        on the same file; pymilvus' registry would otherwise hand back the dead socket)."""
        if self._client is not None:
            try:
                self._client.close()
            except Exception:  # already broken
                pass
            self._client = None
        if self.is_lite:
            from milvus_lite.server_manager import server_manager_instance

            server_manager_instance.release_server(self.uri)
        self.connect()

    def _ensure_collections(self) -> None:
        from pymilvus import DataType, MilvusClient

        description = f"imgdedup images; model={self.model_name}; dim={self.dim}"
        if self._call("has_collection", self.images):
            info = self._call("describe_collection", self.images)
            stored = info.get("description", "")
            if stored != description:
                raise StorageError(
                    f"collection {self.images!r} was made for another model ({stored!r}); "
                    f"this server runs {description!r}. Use another collection prefix or data dir."
                )
        else:
            schema = MilvusClient.create_schema(auto_id=False, description=description)
            schema.add_field("image_key", DataType.VARCHAR, is_primary=True, max_length=32)
            schema.add_field("image_id", DataType.VARCHAR, max_length=MAX_ID_BYTES)
            schema.add_field("embedding", DataType.FLOAT_VECTOR, dim=self.dim)
            schema.add_field("cluster_id", DataType.VARCHAR, max_length=64)
            schema.add_field("pixels", DataType.INT64)
            schema.add_field("inserted_at_ms", DataType.INT64)
            schema.add_field("sha256", DataType.VARCHAR, max_length=64)
            index = self._embedding_index("cluster_id", "sha256")
            self._create(self.images, schema, index)
        if not self._call("has_collection", self.views):
            schema = MilvusClient.create_schema(auto_id=False, description=f"imgdedup views; model={self.model_name}; dim={self.dim}")
            schema.add_field("view_key", DataType.VARCHAR, is_primary=True, max_length=32)
            schema.add_field("image_key", DataType.VARCHAR, max_length=32)
            schema.add_field("image_id", DataType.VARCHAR, max_length=MAX_ID_BYTES)
            schema.add_field("embedding", DataType.FLOAT_VECTOR, dim=self.dim)
            index = self._embedding_index("image_key")
            self._create(self.views, schema, index)
        if not self._call("has_collection", self.clusters):
            schema = MilvusClient.create_schema(auto_id=False, description="imgdedup clusters")
            schema.add_field("cluster_id", DataType.VARCHAR, is_primary=True, max_length=64)
            schema.add_field("size", DataType.INT64)
            schema.add_field("representative_id", DataType.VARCHAR, max_length=MAX_ID_BYTES)
            schema.add_field("rep_pixels", DataType.INT64)
            schema.add_field("rep_inserted_at_ms", DataType.INT64)
            schema.add_field("placeholder", DataType.FLOAT_VECTOR, dim=2)
            index = MilvusClient.prepare_index_params()
            index.add_index("placeholder", index_type="FLAT", metric_type="L2")
            self._create(self.clusters, schema, index)
        for name in (self.images, self.views, self.clusters):
            # Loading takes seconds on a server (longer right after it restarted).
            self._call("load_collection", name, timeout=self.setup_timeout)

    def _create(self, name: str, schema: Any, index: Any) -> None:
        """Create a collection with its indexes. Milvus creates the collection before its
        indexes: if an index is refused, the bare collection is dropped again, so that the
        next start does not find a collection it cannot load."""
        try:
            self._call("create_collection", name, schema=schema, index_params=index, consistency_level="Strong", timeout=self.setup_timeout)
        except StorageError:
            try:
                if self._client.has_collection(name, timeout=self.timeout):
                    self._client.drop_collection(name, timeout=self.timeout)
            except Exception:  # Milvus is failing anyway; the first error is the one to report
                log.exception("dropping the half-made collection %r failed", name)
            raise

    def _embedding_index(self, *filtered_fields: str) -> Any:
        """Index parameters of a collection with an `embedding` field (the configured vector
        index) and VARCHAR fields that filters look up (Milvus Lite has no scalar indexes)."""
        from pymilvus import MilvusClient

        index = MilvusClient.prepare_index_params()
        params = {"nlist": self.nlist} if self.index_type.startswith("IVF") else {}
        index.add_index("embedding", index_type=self.index_type, metric_type="COSINE", params=params)
        if not self.is_lite:
            # INVERTED came with Milvus 2.4; 2.3 indexes VARCHAR fields only with a Trie.
            kind = "INVERTED" if self.server_version >= (2, 4) else "Trie"
            for name in filtered_fields:
                index.add_index(name, index_type=kind)
        return index

    def _call(self, method: str, *args: Any, **kwargs: Any) -> Any:
        if self._client is None:
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
            result = getattr(self._client, method)(*args, **kwargs)
        except StorageError:
            raise
        except Exception as exc:
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
        return result

    # -- images ------------------------------------------------------------------------------
    def search(self, vectors: np.ndarray, limit: int) -> list[list[Hit]]:
        results = self._search(self.images, vectors, limit, ["image_id", "cluster_id"])
        return [
            [Hit(str(h["entity"]["image_id"]), float(h["distance"]), str(h["entity"]["cluster_id"])) for h in hits]
            for hits in results
        ]

    def search_views(self, vectors: np.ndarray, limit: int) -> list[list[tuple[str, float]]]:
        """(image_id, similarity) of the nearest extra views, per query vector."""
        results = self._search(self.views, vectors, limit, ["image_id"])
        return [[(str(h["entity"]["image_id"]), float(h["distance"])) for h in hits] for hits in results]

    def _search(self, collection: str, vectors: np.ndarray, limit: int, fields: list[str]) -> Any:
        return self._call(
            "search",
            collection,
            data=[np.asarray(v, dtype=np.float32) for v in vectors],
            limit=limit,
            output_fields=fields,
            search_params={"metric_type": "COSINE", "params": {"nprobe": self.nprobe}},
        )

    def insert_views(self, views: dict[str, list[np.ndarray]]) -> None:
        """Store extra views: {image_id: [vector of view 1, view 2, ...]} (upsert: re-runnable)."""
        rows = [
            {"view_key": view_key(image_id, n), "image_key": image_key(image_id), "image_id": image_id, "embedding": np.asarray(v, dtype=np.float32)}
            for image_id, vectors in views.items()
            for n, v in enumerate(vectors, 1)
        ]
        if rows:
            self._call("upsert", self.views, rows)

    def views_of(self, image_ids: Iterable[str]) -> dict[str, list[np.ndarray]]:
        """The stored extra views of these images (images without any are left out)."""
        keys = [image_key(i) for i in dict.fromkeys(image_ids)]
        found: list[dict[str, Any]] = []
        for chunk in _chunks(keys):
            # Keys first: Milvus Lite 2.5.1 fails to return vectors from a collection that never
            # held a row, so vectors are fetched only for rows known to exist.
            rows = self._call("query", self.views, filter=_in_list("image_key", chunk), output_fields=["view_key"], limit=QUERY_WINDOW)
            if rows:
                found += self._call(
                    "query", self.views, filter=_in_list("view_key", [r["view_key"] for r in rows]),
                    output_fields=["view_key", "image_id", "embedding"], limit=len(rows),
                )
        out: dict[str, list[np.ndarray]] = {}
        for r in sorted(found, key=lambda r: r["view_key"]):
            out.setdefault(str(r["image_id"]), []).append(np.asarray(r["embedding"], dtype=np.float32))
        return out

    def delete_views(self, image_ids: list[str]) -> None:
        for chunk in _chunks([image_key(i) for i in image_ids]):
            self._call("delete", self.views, filter=_in_list("image_key", chunk))

    def get_images(self, image_ids: Iterable[str], *, with_vectors: bool = False) -> dict[str, ImageRow]:
        ids = list(dict.fromkeys(image_ids))
        if not ids:
            return {}
        keys = [image_key(i) for i in ids]
        return {r.image_id: r for chunk in _chunks(keys) for r in self._query_images(_in_list("image_key", chunk), with_vectors=with_vectors)}

    def find_by_sha256(self, digest: str) -> ImageRow | None:
        """A stored image with exactly these bytes (with its embedding), if any."""
        rows = self._query_images(f"sha256 == {quote(digest)}", with_vectors=True, limit=1)
        return rows[0] if rows else None

    def all_keys_and_digests(self) -> list[tuple[str, str]]:
        """(image_key, sha256) of every stored image (for the in-memory hash sets)."""
        # Strong: read at start, it must see what the process before this one wrote (Session
        # consistency covers only this process's own writes).
        rows = self._query_all(self.images, "image_key != \"\"", ["image_key", "sha256"], key="image_key", root="", consistency="Strong")
        return [(r["image_key"], r["sha256"]) for r in rows]

    def images_in_clusters(self, cluster_ids: Iterable[str], *, with_vectors: bool = False) -> list[ImageRow]:
        ids = list(dict.fromkeys(cluster_ids))
        if not ids:
            return []
        return [r for chunk in _chunks(ids) for r in self._query_images(_in_list("cluster_id", chunk), with_vectors=with_vectors)]

    def insert_images(self, rows: list[ImageRow]) -> None:
        """Add images whose ids are not stored yet."""
        if rows:
            self._call("insert", self.images, [self._image_dict(r) for r in rows])

    def rewrite_images(self, rows: list[ImageRow]) -> None:
        """Replace stored images (e.g. with a new cluster id), each row atomically (upsert)."""
        if rows:
            self._call("upsert", self.images, [self._image_dict(r) for r in rows])

    def all_images(self) -> list[ImageRow]:
        """Every stored image, without embeddings (for rebuilding the clusters)."""
        rows = self._query_all(self.images, "image_key != \"\"", self._image_fields(False), key="image_key", root="", consistency="Strong")
        return [self._image_row(r) for r in rows]

    def delete_images(self, image_ids: list[str]) -> None:
        if image_ids:
            for chunk in _chunks([image_key(i) for i in image_ids]):
                self._call("delete", self.images, filter=_in_list("image_key", chunk))

    def count_images(self) -> int:
        rows = self._call("query", self.images, filter="", output_fields=["count(*)"])
        return int(rows[0]["count(*)"])

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
        fields = ["image_key", "image_id", "cluster_id", "pixels", "inserted_at_ms", "sha256"]
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
        )

    @staticmethod
    def _image_dict(r: ImageRow) -> dict[str, Any]:
        assert r.vector is not None, "an image row is written with its embedding"
        return {
            "image_key": image_key(r.image_id),
            "image_id": r.image_id,
            "embedding": np.asarray(r.vector, dtype=np.float32),
            "cluster_id": r.cluster_id,
            "pixels": r.pixels,
            "inserted_at_ms": r.inserted_at_ms,
            "sha256": r.sha256,
        }

    # -- clusters ----------------------------------------------------------------------------
    def get_clusters(self, cluster_ids: Iterable[str]) -> dict[str, ClusterRow]:
        ids = list(dict.fromkeys(cluster_ids))
        if not ids:
            return {}
        return {
            r["cluster_id"]: self._cluster_row(r)
            for chunk in _chunks(ids)
            for r in self._query(self.clusters, _in_list("cluster_id", chunk), self._cluster_fields())
        }

    def upsert_clusters(self, rows: list[ClusterRow]) -> None:
        if rows:
            self._call("upsert", self.clusters, [
                {
                    "cluster_id": r.cluster_id,
                    "size": r.size,
                    "representative_id": r.representative_id,
                    "rep_pixels": r.rep_pixels,
                    "rep_inserted_at_ms": r.rep_inserted_at_ms,
                    "placeholder": [0.0, 0.0],
                }
                for r in rows
            ])

    def delete_clusters(self, cluster_ids: list[str]) -> None:
        for chunk in _chunks(cluster_ids):
            self._call("delete", self.clusters, filter=_in_list("cluster_id", chunk))

    def cluster_sizes(self, min_size: int) -> list[tuple[str, int]]:
        """(cluster_id, size) of every cluster with at least min_size members."""
        rows = self._query_all(self.clusters, f"size >= {int(min_size)}", ["cluster_id", "size"], key="cluster_id")
        return [(r["cluster_id"], int(r["size"])) for r in rows]

    def count_clusters(self, min_size: int = 1) -> int:
        rows = self._call(
            "query", self.clusters, filter=f"size >= {int(min_size)}", output_fields=["count(*)"]
        )
        return int(rows[0]["count(*)"])

    @staticmethod
    def _cluster_fields() -> list[str]:
        return ["cluster_id", "size", "representative_id", "rep_pixels", "rep_inserted_at_ms"]

    @staticmethod
    def _cluster_row(r: dict[str, Any]) -> ClusterRow:
        return ClusterRow(r["cluster_id"], int(r["size"]), r["representative_id"], int(r["rep_pixels"]), int(r["rep_inserted_at_ms"]))

    # -- queries -----------------------------------------------------------------------------
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
