"""The index writer alone: the one serial stage of a server (and of `--workers`, whose fronts all
hand their images to one writer), so its images/s is the ceiling of every front behind it.

    python benchmarks/writer.py [--n 4000] [--batches 16 64 256] [--duplicates 0.1] [--fronts 4]

IndexWriter.commit (what the writer thread runs for each write: search the stored images and
views, link clusters, store rows, views and cluster rows) over a fresh Milvus Lite file, with
random 512-d unit vectors standing for new images and --duplicates of them copies of an earlier
one (cosine ~0.95: a link into its cluster). For each write size: images/s, the writer thread's
CPU per image, Milvus Lite's CPU per image. No model, no decoding, no gRPC: what a front costs is
benchmarks/pipeline.py's.

Then the same through the writer's own service, as `--workers` fronts and replicas reach it: a
server started with `--writer-listen` on 127.0.0.1 (the near-free stand-in model of pipeline.py;
nothing reaches its model), and --fronts threads of this process standing in for fronts, each one
Commit stream of its share of the images in requests of 16 items with a window of 64 in flight
(what a front's BulkCheck streams hand over), with a FindExact call for each request's digests
first, as fronts ask. Prints images/s and the writer process's CPU per image by thread: its
ceiling, whatever the number of fronts.
"""

from __future__ import annotations

import argparse
import hashlib
import os
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _server import cpu_by_thread, cpu_of_children, cpu_of_tree, machine, server  # noqa: E402
from throughput import free_port  # noqa: E402

from imgdedup.config import Settings  # noqa: E402
from imgdedup.core.digests import StoredImages  # noqa: E402
from imgdedup.core.index import PendingImage  # noqa: E402
from imgdedup.core.local_index import build_writer, open_store  # noqa: E402
from imgdedup.core.threads import one_blas_thread  # noqa: E402
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
    return [PendingImage(f"img-{seed}-{i}", v, True, None, 5, 640 * 480, hashlib.sha256(f"{seed}-{i}".encode()).hexdigest(), more_coming=True) for i, v in enumerate(vectors)]


def run(batch: int, n: int, duplicates: float, spec_name: str) -> dict[str, float]:
    one_blas_thread()  # as the server runs its writer
    with tempfile.TemporaryDirectory(prefix="dedup-writer-") as folder:
        settings = Settings(data_dir=Path(folder))
        spec = load_spec(spec_name)
        store = open_store(settings, spec)
        store.connect()
        stored = StoredImages()
        stored.load([])  # a new collection: the hash sets the server loads at start are empty
        writer = build_writer(settings, spec, store, stored)
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


def through_service(n: int, fronts: int, duplicates: float, per_request: int = 16, window: int = 64) -> tuple[float, int, dict[str, float], float]:
    """(images/s, errors, the writer process's CPU ms per image by thread group, in all)."""
    import threading

    import grpc

    from imgdedup._proto.dedup.internal.v1 import writer_pb2 as ipb
    from imgdedup._proto.dedup.internal.v1 import writer_pb2_grpc as ipb_grpc
    from imgdedup._proto.dedup.v1 import dedup_pb2 as pb
    from imgdedup.transport.messages import vector_bytes
    from imgdedup.transport.writer_service import FRONT_ID_KEY
    from pipeline import build_standin, model_tensors
    from throughput import synthetic_jpegs

    def run_fronts(address: str, todo: list[PendingImage]) -> tuple[float, int]:
        errors = [0] * fronts

        def front(k: int) -> None:
            mine = todo[k::fronts]
            room = threading.Semaphore(window)
            with grpc.insecure_channel(address) as channel:
                stub = ipb_grpc.IndexWriterServiceStub(channel)

                def requests():
                    for s in range(0, len(mine), per_request):
                        chunk = mine[s: s + per_request]
                        stub.FindExact(ipb.FindExactRequest(sha256=[i.sha256 for i in chunk], namespaces=["default"] * len(chunk)), timeout=60)
                        for _ in chunk:
                            room.acquire()
                        yield ipb.CommitRequest(items=[
                            ipb.CommitItem(seq=s + j, image_id=i.image_id, vector=vector_bytes(i.vector), add_to_index=True, top_k=i.top_k,
                                           pixels=i.pixels, sha256=i.sha256, priority=pb.PRIORITY_LOW, flow=1, more_coming=s + j + 1 < len(mine))
                            for j, i in enumerate(chunk)])

                for response in stub.Commit(requests(), metadata=[(FRONT_ID_KEY, f"bench-front-{k}")], timeout=3600):
                    for r in response.results:
                        errors[k] += r.HasField("error")
                        room.release()

        threads = [threading.Thread(target=front, args=(k,)) for k in range(fronts)]
        t0 = time.perf_counter()
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        return len(todo) / (time.perf_counter() - t0), sum(errors)

    with tempfile.TemporaryDirectory(prefix="dedup-writer-") as folder:
        spec = build_standin(Path(folder), model_tensors(synthetic_jpegs(200)))  # any model will do: nothing reaches it
        port = free_port()
        with server(None, "--model", str(spec), "--writer-listen", f"127.0.0.1:{port}") as (_, pid):
            address = f"127.0.0.1:{port}"
            run_fronts(address, images(256, duplicates, seed=7))  # warm-up
            todo = images(n, duplicates, seed=8)
            before, total = cpu_by_thread(pid), cpu_of_tree(pid)
            ips, errors = run_fronts(address, todo)
            after, total_after = cpu_by_thread(pid), cpu_of_tree(pid)
    by_thread = {k: (after[k] - before.get(k, 0.0)) * 1000 / n for k in after}
    return ips, errors, {k: v for k, v in sorted(by_thread.items(), key=lambda kv: -kv[1]) if v >= 0.005}, (total_after - total) * 1000 / n


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--n", type=int, default=4000, help="images written for each write size")
    p.add_argument("--batches", type=int, nargs="+", default=[16, 64, 256], help="images per write")
    p.add_argument("--duplicates", type=float, default=0.1, help="share of images that copy an earlier one")
    p.add_argument("--model", default=str(Path(__file__).resolve().parents[1] / "model" / "specs" / "sscd_disc_mixup.toml"),
                   help="spec whose threshold and dimension are used (its model is not loaded)")
    p.add_argument("--fronts", type=int, default=4, help="Commit streams through the writer service (0: skip)")
    args = p.parse_args()
    print(f"machine: {machine()}")
    print(f"index writer alone, Milvus Lite, {args.n} new images per write size ({args.duplicates:.0%} copies of an earlier one)")
    print(f"{'images/write':>12} {'img/s':>8} {'writer CPU ms/img':>18} {'Milvus Lite ms/img':>19} {'matched':>8}")
    for b in args.batches:
        r = run(b, args.n, args.duplicates, args.model)
        print(f"{b:12d} {r['ips']:8.0f} {r['cpu']:18.3f} {r['lite']:19.3f} {r['linked']:8.1%}", flush=True)
    if args.fronts:
        ips, errors, by_thread, total = through_service(args.n, args.fronts, args.duplicates)
        print(f"\nthrough the writer service (--writer-listen), {args.fronts} fronts' Commit streams: {ips:.0f} img/s, {errors} errors; "
              f"the writer process and Milvus Lite {total:.3f} ms of CPU per image:")
        for name, ms in by_thread.items():
            print(f"  {name:<30} {ms:.3f}")


if __name__ == "__main__":
    main()
