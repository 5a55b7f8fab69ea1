"""The index writer alone: the one serial stage of a server (and of `--workers`, whose fronts all
hand their images to one writer), so its images/s is the ceiling of every front behind it.

    python benchmarks/writer.py [--n 4000] [--batches 16 64 256] [--duplicates 0.1]

IndexWriter.commit (what the writer thread runs for each write: search the stored images and
views, link clusters, store rows, views and cluster rows) over a fresh Milvus Lite file, with
random 512-d unit vectors standing for new images and --duplicates of them copies of an earlier
one (cosine ~0.95: a link into its cluster). For each write size: images/s, the writer thread's
CPU per image, Milvus Lite's CPU per image. No model, no decoding, no gRPC: what a front costs is
benchmarks/pipeline.py's.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _server import cpu_of_children, machine  # noqa: E402

from imgdedup.config import Settings  # noqa: E402
from imgdedup.core.index import IndexWriter, PendingImage  # noqa: E402
from imgdedup.core.linking import LinkRule  # noqa: E402
from imgdedup.core.local_index import open_store  # noqa: E402
from imgdedup.core.match_modes import MatchModes  # noqa: E402
from imgdedup.core.operating_point import OperatingPoint  # noqa: E402
from imgdedup.runtime import load_spec  # noqa: E402

DIM = 512


def images(n: int, duplicates: float, seed: int) -> list[PendingImage]:
    rng = np.random.default_rng(seed)
    vectors = rng.standard_normal((n, DIM)).astype(np.float32)
    copies = np.flatnonzero(rng.random(n) < duplicates)
    copies = copies[copies > 0]
    for i in copies:  # a copy of an earlier image: cosine ~0.95
        vectors[i] = vectors[rng.integers(0, i)] / np.sqrt(DIM) * 3 + vectors[i] / np.sqrt(DIM)
    vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
    return [PendingImage(f"img-{seed}-{i}", v, True, None, 5, 640 * 480, f"{seed:08x}{i:056x}", more_coming=True) for i, v in enumerate(vectors)]


def run(batch: int, n: int, duplicates: float, spec_name: str) -> dict[str, float]:
    with tempfile.TemporaryDirectory(prefix="dedup-writer-") as folder:
        settings = Settings(data_dir=Path(folder))
        spec = load_spec(spec_name)
        point = OperatingPoint.of(settings, spec)
        store = open_store(settings, spec)
        store.connect()
        writer = IndexWriter(store, modes=MatchModes.of(point, spec), rule=LinkRule(point.base, support=settings.link_support))
        try:
            warm = images(2 * batch, duplicates, seed=batch + 1)
            for k in range(0, len(warm), batch):
                writer.commit(warm[k: k + batch])
            todo = images(n, duplicates, seed=batch)
            cpu, lite, t0 = time.thread_time(), cpu_of_children(os.getpid()), time.perf_counter()
            linked = 0
            for k in range(0, n, batch):
                linked += sum(bool(r.matches) for r in writer.commit(todo[k: k + batch]))
            wall = time.perf_counter() - t0
            return {"ips": n / wall, "cpu": (time.thread_time() - cpu) * 1000 / n,
                    "lite": (cpu_of_children(os.getpid()) - lite) * 1000 / n, "linked": linked / n}
        finally:
            writer.close()
            store.close()


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--n", type=int, default=4000, help="images written for each write size")
    p.add_argument("--batches", type=int, nargs="+", default=[16, 64, 256], help="images per write")
    p.add_argument("--duplicates", type=float, default=0.1, help="share of images that copy an earlier one")
    p.add_argument("--model", default=str(Path(__file__).resolve().parents[1] / "model" / "specs" / "sscd_disc_mixup.toml"),
                   help="spec whose threshold and dimension are used (its model is not loaded)")
    args = p.parse_args()
    print(f"machine: {machine()}")
    print(f"index writer alone, Milvus Lite, {args.n} new images per write size ({args.duplicates:.0%} copies of an earlier one)")
    print(f"{'images/write':>12} {'img/s':>8} {'writer CPU ms/img':>18} {'Milvus Lite ms/img':>19} {'matched':>8}")
    for b in args.batches:
        r = run(b, args.n, args.duplicates, args.model)
        print(f"{b:12d} {r['ips']:8.0f} {r['cpu']:18.3f} {r['lite']:19.3f} {r['linked']:8.1%}", flush=True)


if __name__ == "__main__":
    main()
