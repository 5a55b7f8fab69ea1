"""Milvus search latency as the index grows (random 512-d unit vectors), through MilvusStore.

    python benchmarks/search.py [--sizes 10000 100000 1000000] [--queries 200] [--uri URI]

Default: a temporary Milvus Lite file with the server's index settings (IVF_FLAT, nlist 128,
nprobe 32). Prints single-query p50/p95/p99, a batched search (16 queries per call) per query,
insert rate, and recall@1 of the index against exact brute force on the same vectors.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _server import machine  # noqa: E402

from imgdedup.storage.milvus import DEFAULT_NAMESPACE, ImageRow, MilvusStore  # noqa: E402

DIM = 512


def unit(rng: np.random.Generator, n: int) -> np.ndarray:
    v = rng.standard_normal((n, DIM)).astype(np.float32)
    return v / np.linalg.norm(v, axis=1, keepdims=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sizes", type=int, nargs="+", default=[10_000, 100_000, 1_000_000])
    parser.add_argument("--queries", type=int, default=200)
    parser.add_argument("--uri", help="Milvus URI; default a temporary Milvus Lite file")
    parser.add_argument("--index-type", default="IVF_FLAT")
    parser.add_argument("--nlist", type=int, default=128)
    parser.add_argument("--nprobe", type=int, default=32)
    args = parser.parse_args()

    print(f"machine: {machine()}")
    print(f"index {args.index_type} nlist={args.nlist} nprobe={args.nprobe}, COSINE, dim {DIM}")
    print(f"{'vectors':>9} {'insert/s':>9} {'p50 ms':>7} {'p95 ms':>7} {'p99 ms':>7} {'batch16 ms/q':>13} {'recall@1':>9}")
    rng = np.random.default_rng(0)
    with tempfile.TemporaryDirectory(prefix="dedup-search-") as tmp:
        store = MilvusStore(args.uri or str(Path(tmp) / "m.db"), dim=DIM, model_name="bench", prefix="bench",
                            timeout_s=120, index_type=args.index_type, nlist=args.nlist, nprobe=args.nprobe)
        store.connect()
        stored: list[np.ndarray] = []
        count = 0
        for size in sorted(args.sizes):
            added, t0 = size - count, time.perf_counter()
            while count < size:
                n = min(2000, size - count)
                vecs = unit(rng, n)
                store.insert_images([ImageRow(f"v{count + i}", "c", 1, 0, "", vecs[i]) for i in range(n)])
                stored.append(vecs)
                count += n
            insert_rate = added / (time.perf_counter() - t0)
            store._client.flush(store.images, timeout=600)  # seal segments so the index is built
            all_vecs = np.concatenate(stored)
            # Queries near stored vectors, as duplicates are: a stored vector plus small noise.
            idx = rng.choice(len(all_vecs), args.queries, replace=False)
            queries = all_vecs[idx] + 0.02 * unit(rng, args.queries)
            queries /= np.linalg.norm(queries, axis=1, keepdims=True)
            store.search(DEFAULT_NAMESPACE, queries[:5], 5)  # warm
            lat, hits = [], 0
            for q, want in zip(queries, idx):
                t = time.perf_counter()
                res = store.search(DEFAULT_NAMESPACE, q[None], 5)
                lat.append((time.perf_counter() - t) * 1000)
                hits += bool(res[0]) and res[0][0].image_id == f"v{want}"
            t = time.perf_counter()
            for i in range(0, args.queries, 16):
                store.search(DEFAULT_NAMESPACE, queries[i: i + 16], 5)
            batch_ms = (time.perf_counter() - t) * 1000 / args.queries
            p = np.percentile(lat, [50, 95, 99])
            print(f"{size:>9} {insert_rate:>9.0f} "
                  f"{p[0]:7.2f} {p[1]:7.2f} {p[2]:7.2f} {batch_ms:13.2f} {hits / args.queries:9.3f}", flush=True)
        store.close()


if __name__ == "__main__":
    main()
