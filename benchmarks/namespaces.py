"""Namespaces in Milvus: one set of collections per namespace, or one set with a partition key.
Search latency with 1, 10 and 100 namespaces of uneven size, the Milvus process's memory, and
start-up, on Milvus Lite and on a real Milvus server (docs/namespaces.md has the choice).

    scripts/netns-run .venv/bin/python benchmarks/namespaces.py [--backend lite|server|both]
        [--vectors 20000] [--namespaces 1 10 100] [--queries 300]

(`--backend lite` needs no network namespace; the server is the PyPI `milvus` 2.3.5 standalone
server, tests/milvus_server.py, which binds every interface and so runs only inside one.)

Layouts, each in a fresh Milvus (Lite file or server) per namespace count:
  collections    what the dedup server does: a MilvusStore (images, views, clusters: three
                 collections, IVF_FLAT nlist 128 / nprobe 32) per namespace;
  partition-key  one images collection with a `namespace` VARCHAR partition key (16 partitions),
                 searched with `namespace == "..."` (a lower bound: the views and clusters
                 collections it would also need are not made). Milvus Lite 2.5.1 refuses the
                 filter on a partition key ("Invalid expr"); on Lite the row says so;
  field          the same collection with `namespace` a plain VARCHAR field (a scalar index:
                 INVERTED on Lite, Trie on 2.3), filtered the same way.
Data: `--vectors` random 512-d unit vectors split over N namespaces with Zipf sizes (the k-th
namespace gets a share proportional to 1/k, at least 1), so one namespace is large and most are
small. Queries: a namespace picked uniformly (so small ones dominate), one of its vectors with
noise (cosine ~0.9) as the query, limit 10: p50/p99 ms of single searches; "found" is the share
whose top hit is the planted vector; "leaks" counts hits from another namespace (must be 0).
RSS: the Milvus process after the searches (Lite's own process; the server's whole process, with
its embedded etcd and coordinators); start-up: every
namespace opened and searched once after the collections were released (Lite: its process ended
and started again; a server: release_collection on every collection, then our open path).
"""

from __future__ import annotations

import argparse
import shutil
import sys
import tempfile
import time
import warnings
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
sys.path.insert(0, str(HERE.parent / "tests"))
from _server import machine  # noqa: E402
from capacity import Backend, rss_mib  # noqa: E402
from search import DIM  # noqa: E402

from imgdedup.storage.milvus import DEFAULT_NAMESPACE, ImageRow, MilvusStore, image_key  # noqa: E402

BATCH = 2000
PARTITIONS = 16


def unit(v: np.ndarray) -> np.ndarray:
    return (v / np.linalg.norm(v, axis=-1, keepdims=True)).astype(np.float32)


def sizes_for(total: int, n: int) -> list[int]:
    weights = np.array([1.0 / k for k in range(1, n + 1)])
    sizes = np.maximum(1, np.floor(total * weights / weights.sum())).astype(int)
    sizes[0] += total - sizes.sum()
    return sizes.tolist()


def names(n: int) -> list[str]:
    return ["default"] + [f"tenant-{k:03d}" for k in range(1, n)]


def store_for(uri: str, ns: str) -> MilvusStore:
    # Collection names allow letters, digits and "_" only: "-" becomes "_h", "_" becomes "__".
    prefix = "dedup_ns_" + ns.replace("_", "__").replace("-", "_h")
    return MilvusStore(uri, dim=DIM, model_name="bench", prefix=prefix, timeout_s=120.0)


class Collections:
    """One MilvusStore per namespace (three collections each), as the server keeps them."""

    name = "collections"

    def __init__(self, uri: str, spaces: list[str]):
        self.uri, self.spaces = uri, spaces
        self.stores: dict[str, MilvusStore] = {}

    def open(self) -> None:
        for ns in self.spaces:
            store = store_for(self.uri, ns)
            store.connect()
            self.stores[ns] = store

    def insert(self, ns: str, ids: list[str], vectors: np.ndarray) -> None:
        now = int(time.time() * 1000)
        rows = [ImageRow(i, image_key(i), 1, now, "", v) for i, v in zip(ids, vectors)]
        self.stores[ns].insert_images(rows)

    def flush(self) -> None:
        for store in self.stores.values():
            store._client.flush(store.images, timeout=600)

    def search(self, ns: str, query: np.ndarray) -> list[tuple[str, str]]:
        hits = self.stores[ns].search(DEFAULT_NAMESPACE, query[None, :], limit=10)[0]
        return [(h.image_id, ns) for h in hits]

    def release(self) -> None:
        for store in self.stores.values():
            for name in (store.images, store.views, store.clusters):
                store._client.release_collection(name, timeout=600)
            store._client.close()
            store._client = None
        self.stores.clear()

    def close(self) -> None:
        for store in self.stores.values():
            store._client.close()
        self.stores.clear()


class PartitionKey:
    """One images collection; `namespace` is its partition key."""

    name = "partition-key"
    partition_key = True

    def __init__(self, uri: str, spaces: list[str]):
        self.uri, self.spaces = uri, spaces
        self.client = None
        self.collection = "dedup_images_pk"

    def open(self) -> None:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            from pymilvus import DataType, MilvusClient

        self.client = MilvusClient(uri=self.uri, timeout=120)
        if not self.client.has_collection(self.collection):
            schema = self.client.create_schema(auto_id=False)
            schema.add_field("pk", DataType.VARCHAR, max_length=64, is_primary=True)
            schema.add_field("namespace", DataType.VARCHAR, max_length=64, is_partition_key=self.partition_key)
            schema.add_field("image_id", DataType.VARCHAR, max_length=256)
            schema.add_field("embedding", DataType.FLOAT_VECTOR, dim=DIM)
            index = self.client.prepare_index_params()
            index.add_index("embedding", index_type="IVF_FLAT", metric_type="COSINE", params={"nlist": 128})
            extra = {"num_partitions": PARTITIONS} if self.partition_key else {}
            if not self.partition_key:  # a scalar index for the filter, as the store makes for its filtered fields
                index.add_index("namespace", index_type="Trie" if self.uri.startswith("http") else "INVERTED")
            self.client.create_collection(self.collection, schema=schema, index_params=index, consistency_level="Strong", timeout=600, **extra)
        self.client.load_collection(self.collection, timeout=600)

    def insert(self, ns: str, ids: list[str], vectors: np.ndarray) -> None:
        rows = [{"pk": image_key(ns + "\x00" + i), "namespace": ns, "image_id": i, "embedding": v.tolist()} for i, v in zip(ids, vectors)]
        self.client.insert(self.collection, rows, timeout=600)

    def flush(self) -> None:
        self.client.flush(self.collection, timeout=600)

    def search(self, ns: str, query: np.ndarray) -> list[tuple[str, str]]:
        found = self.client.search(self.collection, [query.tolist()], limit=10, filter=f'namespace == "{ns}"',
                                   output_fields=["image_id", "namespace"], search_params={"params": {"nprobe": 32}},
                                   consistency_level="Strong" if not self.uri.startswith("http") else "Session", timeout=120)
        return [(h["entity"]["image_id"], h["entity"]["namespace"]) for h in found[0]]

    def release(self) -> None:
        self.client.release_collection(self.collection, timeout=600)
        self.client.close()
        self.client = None

    def close(self) -> None:
        if self.client is not None:
            self.client.close()


class Field(PartitionKey):
    """One images collection; `namespace` a plain VARCHAR field with a scalar index, filtered."""

    name = "field"
    partition_key = False


def run(kind: str, layout_cls, n: int, args, root: Path) -> dict:
    rng = np.random.default_rng(args.seed)
    spaces = names(n)
    sizes = sizes_for(args.vectors, n)
    backend = Backend(kind, root, f"ns-{layout_cls.name}-{n}")
    out = {"backend": kind, "layout": layout_cls.name, "n": n, "largest": sizes[0], "smallest": sizes[-1]}
    layout = layout_cls(backend.uri, spaces)
    try:
        t0 = time.perf_counter()
        layout.open()
        out["create_s"] = time.perf_counter() - t0
        vectors: dict[str, np.ndarray] = {}
        t0 = time.perf_counter()
        for ns, size in zip(spaces, sizes):
            v = unit(rng.standard_normal((size, DIM)).astype(np.float32))
            vectors[ns] = v
            for start in range(0, size, BATCH):
                layout.insert(ns, [f"{ns}-{i}" for i in range(start, min(size, start + BATCH))], v[start:start + BATCH])
        layout.flush()
        out["insert_s"] = time.perf_counter() - t0
        lat, found, leaks = [], 0, 0
        queries = [spaces[rng.integers(n)] for _ in range(args.queries)]  # each query's namespace
        for q, ns in enumerate(queries):
            target = int(rng.integers(len(vectors[ns])))
            query = unit(vectors[ns][target] + 0.5 * unit(rng.standard_normal(DIM).astype(np.float32)))
            t0 = time.perf_counter()
            hits = layout.search(ns, query)
            if q >= 5:  # the first few warm caches up
                lat.append((time.perf_counter() - t0) * 1000)
            found += bool(hits) and hits[0][0] == f"{ns}-{target}"
            leaks += sum(1 for image_id, space in hits if space != ns or not image_id.startswith(ns + "-"))
        out["p50"], out["p99"] = float(np.percentile(lat, 50)), float(np.percentile(lat, 99))
        out["found"], out["leaks"] = found / len(queries), leaks
        out["rss"] = rss_mib(backend.pid)
        # start-up
        layout.release()
        if kind == "lite":
            backend.stop_store(None)
        t0 = time.perf_counter()
        layout.open()
        for ns in spaces:
            layout.search(ns, vectors[ns][0])
        out["start_s"] = time.perf_counter() - t0
    except Exception as exc:  # a layout the backend refuses: say why, go on
        out["error"] = str(exc).splitlines()[0][:120]
    finally:
        layout.close()
        if kind == "lite":
            backend.stop_store(None)
        if backend.server is not None:
            backend.server.stop(timeout=5)
        shutil.rmtree(backend.dir, ignore_errors=True)
    print(f"   {out}", file=sys.stderr, flush=True)
    return out


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--backend", choices=["lite", "server", "both"], default="lite")
    p.add_argument("--vectors", type=int, default=20000)
    p.add_argument("--namespaces", type=int, nargs="+", default=[1, 10, 100])
    p.add_argument("--queries", type=int, default=300)
    p.add_argument("--layouts", nargs="+", choices=["collections", "partition-key", "field"], default=["collections", "partition-key", "field"])
    p.add_argument("--max-collections-namespaces", type=int, default=100,
                   help="skip the collections layout above this many namespaces (a server creates ~3 collections per 12 s here)")
    p.add_argument("--seed", type=int, default=7)
    p.add_argument("--tmp", default=None, help="where the Milvus data goes (default: the system's temporary folder)")
    args = p.parse_args()
    kinds = ["lite", "server"] if args.backend == "both" else [args.backend]
    root = Path(tempfile.mkdtemp(prefix="dedup-ns-", dir=args.tmp))
    rows = []
    try:
        for kind in kinds:
            for layout in (Collections, PartitionKey, Field):
                if layout.name not in args.layouts:
                    continue
                for n in args.namespaces:
                    if layout is Collections and n > args.max_collections_namespaces:
                        continue
                    rows.append(run(kind, layout, n, args, root))
    finally:
        shutil.rmtree(root, ignore_errors=True)
    print(f"machine: {machine()}")
    print(f"{args.vectors:,} vectors (512-d) over N namespaces with Zipf sizes; {args.queries} single searches, limit 10, "
          "namespace picked uniformly; RSS: the Milvus process; start: reopen all + one search each")
    print(f"{'backend':<7} {'layout':<14} {'N':>4} {'sizes':>12} {'create s':>8} {'insert s':>8} {'p50 ms':>7} {'p99 ms':>7} "
          f"{'found':>6} {'leaks':>5} {'RSS MiB':>8} {'start s':>7}")
    for r in rows:
        sizes = f"{r['largest']}..{r['smallest']}"
        if "error" in r:
            print(f"{r['backend']:<7} {r['layout']:<14} {r['n']:>4} {sizes:>12}  refused: {r['error']}")
            continue
        print(f"{r['backend']:<7} {r['layout']:<14} {r['n']:>4} {sizes:>12} {r['create_s']:>8.1f} {r['insert_s']:>8.1f} "
              f"{r['p50']:>7.2f} {r['p99']:>7.2f} {r['found']:>6.3f} {r['leaks']:>5} {r['rss']:>8.0f} {r['start_s']:>7.1f}")


if __name__ == "__main__":
    main()
