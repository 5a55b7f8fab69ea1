"""Throughput and latency through the gRPC API, against the model alone on the same machine.

    python benchmarks/throughput.py [--images DIR] [--n 400] [--bulk-n 1000] [--server HOST:PORT]

Without --server it starts its own server on 127.0.0.1 with a temporary Milvus Lite file, and
stops it at the end. Images: the photos under --images (default: ../shared/dedup-bench's
originals when present, else scikit-image photos with random crops), read into memory first.

Prints, for the same input size and thread count:
- model only: onnxruntime in this process, batch 1 and batch = max_batch_size (images/s, latency);
- unary CheckDuplicate at concurrency 1, 4, 16 (check only): images/s, p50/p95/p99 latency;
- BulkCheck of --bulk-n images (stored; a long stream, as when a library is imported): images/s;
and each path's throughput as a ratio of the model-only figure, the mean batch size the server's
batcher formed (from its Prometheus metrics; self-started server only), and its peak RSS; and,
for the BulkCheck run of a self-started server, where the CPU went, per image: each group of the
server's threads (they carry their names into the OS), the Milvus Lite process, this client.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import threading
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _server import cpu_by_thread, cpu_of_children_by_name, cpu_of_self, machine, peak_rss_mib, server  # noqa: E402

from imgdedup._proto.dedup.v1 import dedup_pb2 as pb  # noqa: E402
from imgdedup.client import DedupClient  # noqa: E402

DEFAULT_IMAGES = Path(__file__).resolve().parents[2] / "shared" / "dedup-bench" / "dev" / "originals"


def synthetic_jpegs(n: int) -> list[bytes]:
    """Distinct 640x480 JPEGs: smooth colour fields, shapes and grain (photo-like decode cost),
    made on every core."""
    from concurrent.futures import ProcessPoolExecutor

    chunk = 250
    with ProcessPoolExecutor() as pool:
        parts = pool.map(_jpegs, [min(chunk, n - i) for i in range(0, n, chunk)], range(0, n, chunk))
        return [b for part in parts for b in part]


def _jpegs(n: int, seed: int) -> list[bytes]:
    import cv2

    rng = np.random.default_rng(seed)
    out = []
    for _ in range(n):
        base = cv2.resize(rng.integers(0, 256, (6, 8, 3), dtype=np.uint8), (640, 480), interpolation=cv2.INTER_CUBIC)
        for _ in range(int(rng.integers(3, 8))):
            colour = tuple(int(c) for c in rng.integers(0, 256, 3))
            centre = (int(rng.integers(0, 640)), int(rng.integers(0, 480)))
            cv2.circle(base, centre, int(rng.integers(10, 120)), colour, -1)
        base = np.clip(base.astype(np.int16) + rng.integers(-12, 13, base.shape, dtype=np.int16), 0, 255).astype(np.uint8)
        out.append(cv2.imencode(".jpg", base, [cv2.IMWRITE_JPEG_QUALITY, 90])[1].tobytes())
    return out


def load_images(folder: Path | None, n: int, seed: int = 0) -> list[bytes]:
    rng = np.random.default_rng(seed)
    if folder and folder.is_dir():
        files = sorted(p for p in folder.rglob("*") if p.suffix.lower() in {".jpg", ".jpeg", ".png"})
        picked = rng.choice(len(files), size=min(n, len(files)), replace=False)
        return [files[i].read_bytes() for i in picked]
    import cv2
    from skimage import data

    photos = [data.astronaut(), data.coffee(), data.chelsea(), data.rocket(), np.dstack([data.camera()] * 3)]
    out = []
    for i in range(n):
        a = photos[i % len(photos)]
        h, w = a.shape[:2]
        y, x = rng.integers(0, h // 4), rng.integers(0, w // 4)
        crop = np.ascontiguousarray(a[y: y + h * 3 // 4, x: x + w * 3 // 4, ::-1])
        out.append(cv2.imencode(".jpg", cv2.resize(crop, (640, 480)), [cv2.IMWRITE_JPEG_QUALITY, 90])[1].tobytes())
    return out


def pct(values: list[float], q: float) -> float:
    return float(np.percentile(values, q)) if values else float("nan")


def model_only(images: list[bytes], batch: int, seconds: float) -> dict:
    """The model alone, in this process, on the same preprocessed images: batch 1 latency, and
    batched throughput both ways the server can run it (one session on every core, or one
    single-threaded session per core side by side); the better one is the reference."""
    import os
    import threading as th

    from imgdedup.core.images import decode_image, preprocess
    from imgdedup.runtime import create_embedder, load_spec

    spec = load_spec("sscd_disc_mixup")
    tensors = [preprocess(decode_image(b, max_pixels=10**9, target_size=spec.input_size), spec.input.resize) for b in images[:64]]
    one = np.stack(tensors[:1])
    many = np.stack((tensors * batch)[:batch])
    wide = create_embedder(spec)
    wide.embed(many)
    lat = []
    t_end = time.perf_counter() + seconds
    while time.perf_counter() < t_end:
        t = time.perf_counter()
        wide.embed(one)
        lat.append((time.perf_counter() - t) * 1000)

    def throughput(embedder, threads: int) -> float:
        done = [0]
        stop = time.perf_counter() + seconds

        def work() -> None:
            while time.perf_counter() < stop:
                embedder.embed(many)
                done[0] += batch

        t0 = time.perf_counter()
        workers = [th.Thread(target=work) for _ in range(threads)]
        for w in workers:
            w.start()
        for w in workers:
            w.join()
        return done[0] / (time.perf_counter() - t0)

    wide_ips = throughput(wide, 1)
    cores = os.cpu_count() or 1
    narrow = create_embedder(spec, workers=cores, intra_op_threads=1)
    narrow.embed(many)
    narrow_ips = throughput(narrow, cores)
    return {"batch1_ips": 1000 / statistics.mean(lat), "batch1_p50_ms": pct(lat, 50), "batch1_p99_ms": pct(lat, 99),
            "wide_ips": wide_ips, "narrow_ips": narrow_ips, "batched_ips": max(wide_ips, narrow_ips), "cores": cores, "input_size": spec.input_size}


def unary(target: str, images: list[bytes], concurrency: int, total: int) -> dict:
    latencies: list[float] = []
    lock = threading.Lock()
    counter = iter(range(total))

    def worker() -> None:
        with DedupClient(target) as client:
            while True:
                with lock:
                    i = next(counter, None)
                if i is None:
                    return
                t = time.perf_counter()
                client.check(images[i % len(images)])
                dt = (time.perf_counter() - t) * 1000
                with lock:
                    latencies.append(dt)

    threads = [threading.Thread(target=worker) for _ in range(concurrency)]
    t0 = time.perf_counter()
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    elapsed = time.perf_counter() - t0
    return {"ips": total / elapsed, "p50": pct(latencies, 50), "p95": pct(latencies, 95), "p99": pct(latencies, 99)}


def batch_totals(metrics_url: str | None, histogram: str = "dedup_embed_batch_size") -> tuple[float, float]:
    """(images, batches) so far of a batch-size histogram in the server's Prometheus metrics: by
    default images embedded and inferences run; "dedup_index_write_batch_size": images written
    (searched and stored) and index writes."""
    if not metrics_url:
        return 0.0, 0.0
    import urllib.request

    text = urllib.request.urlopen(metrics_url, timeout=10).read().decode()
    values = {line.split()[0]: float(line.split()[1]) for line in text.splitlines() if line.startswith(f"{histogram}_")}
    return values.get(f"{histogram}_sum", 0.0), values.get(f"{histogram}_count", 0.0)


def mean_batch(before: tuple[float, float], after: tuple[float, float]) -> float:
    images, batches = after[0] - before[0], after[1] - before[1]
    return images / batches if batches else float("nan")


def free_port() -> int:
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def bulk(target: str, images: list[bytes]) -> dict:
    with DedupClient(target) as client:
        reqs = (pb.BulkCheckRequest(image_id=f"bulk-{i}", image=b, add_to_index=True) for i, b in enumerate(images))
        t0 = time.perf_counter()
        errors = sum(r.HasField("error") for r in client.bulk_check(reqs, timeout=3600))
        elapsed = time.perf_counter() - t0
    return {"ips": len(images) / elapsed, "errors": errors, "seconds": elapsed, "n": len(images)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--images", type=Path, default=DEFAULT_IMAGES)
    parser.add_argument("--n", type=int, default=400, help="images for each unary run")
    parser.add_argument("--bulk-n", type=int, default=1000, help="images for the BulkCheck stream")
    parser.add_argument("--server", help="use a running server instead of starting one")
    parser.add_argument("--model-seconds", type=float, default=8.0)
    parser.add_argument("--concurrency", type=int, nargs="+", default=[1, 4, 16])
    args = parser.parse_args()

    images = load_images(args.images, max(args.n, args.bulk_n))
    print(f"machine: {machine()}")
    print(f"images: {len(images)} from {args.images if args.images.is_dir() else 'scikit-image crops'}, mean {statistics.mean(map(len, images)) / 1024:.0f} KiB")

    m = model_only(images, batch=8, seconds=args.model_seconds)
    print(f"\nmodel only (onnxruntime in-process, {m['input_size']}x{m['input_size']}):")
    print(f"  batch 1: {m['batch1_ips']:.1f} img/s, latency p50 {m['batch1_p50_ms']:.1f} ms, p99 {m['batch1_p99_ms']:.1f} ms")
    print(f"  batch 8, one session on {m['cores']} cores: {m['wide_ips']:.1f} img/s")
    print(f"  batch 8, {m['cores']} single-threaded sessions side by side: {m['narrow_ips']:.1f} img/s")
    print(f"  reference for the ratios below: {m['batched_ips']:.1f} img/s")

    metrics_port = None if args.server else free_port()
    extra = ("--metrics-port", str(metrics_port)) if metrics_port else ()
    metrics_url = f"http://127.0.0.1:{metrics_port}/metrics" if metrics_port else None
    with server(args.server, *extra) as (target, pid):
        with DedupClient(target) as client:
            client.wait_ready()
        rows = []
        for c in args.concurrency:
            unary(target, images, c, min(40, args.n))  # warm-up
            before = batch_totals(metrics_url)
            r = unary(target, images[: args.n], c, args.n if c > 1 else min(args.n, 200))
            r["batch"] = mean_batch(before, batch_totals(metrics_url))
            rows.append((f"unary c={c}", r))
        before = batch_totals(metrics_url)
        cpu_before = (cpu_by_thread(pid), cpu_of_children_by_name(pid), cpu_of_self()) if pid else None
        b = bulk(target, images[: args.bulk_n])
        cpu_after = (cpu_by_thread(pid), cpu_of_children_by_name(pid), cpu_of_self()) if pid else None
        b["batch"] = mean_batch(before, batch_totals(metrics_url))
        rss = peak_rss_mib(pid) if pid else None

    print(f"\n{'path':<14} {'img/s':>7} {'x model':>8} {'p50 ms':>7} {'p95 ms':>7} {'p99 ms':>7} {'batch':>6}")
    for name, r in rows:
        print(f"{name:<14} {r['ips']:7.1f} {r['ips'] / m['batched_ips']:8.2f} {r['p50']:7.1f} {r['p95']:7.1f} {r['p99']:7.1f} {r['batch']:6.2f}")
    print(f"{'BulkCheck':<14} {b['ips']:7.1f} {b['ips'] / m['batched_ips']:8.2f} {'':>7} {'':>7} {'':>7} {b['batch']:6.2f}   ({b['n']} stored, {b['errors']} errors)")
    c1 = rows[0][1]
    print(f"\nunary c=1 vs model batch-1: p50 {c1['p50'] / m['batch1_p50_ms']:.2f}x, p99 {c1['p99'] / m['batch1_p50_ms']:.2f}x the single-image model time")
    if rss:
        print(f"server peak RSS: {rss:.0f} MiB")
    if cpu_before and cpu_after:
        # the server's children by name: Milvus Lite, and decoding processes if it has them
        print_cpu_split(cpu_before, cpu_after, b, (cpu_before[1], cpu_after[1]))


def print_cpu_split(before: tuple, after: tuple, b: dict, children: tuple[dict, dict]) -> None:
    """`before`, `after`: (CPU by server thread, -, this client's CPU); `children`: the server's
    child processes' CPU by name (Milvus Lite, decoding processes), before and after."""
    per_image = 1000.0 / b["n"]
    threads = {k: (v - before[0].get(k, 0.0)) * per_image for k, v in after[0].items()}
    rows = sorted(((k, v) for k, v in threads.items() if v >= 0.005), key=lambda kv: -kv[1])
    spent = {k: (v - children[0].get(k, 0.0)) * per_image for k, v in children[1].items()}
    rows += sorted(((f"{k} processes" if k.startswith("decoder") else f"Milvus Lite process ({k})", v) for k, v in spent.items() if v >= 0.005), key=lambda kv: -kv[1])
    rows.append(("benchmark client (this process)", (after[2] - before[2]) * per_image))
    total = sum(v for _, v in rows)
    print("\nCPU per image during BulkCheck, ms (onnxruntime's own threads: 'onnxruntime'; the model also runs on 'embed'):")
    for name, ms in rows:
        print(f"  {name:<34} {ms:6.2f}")
    print(f"  {'total':<34} {total:6.2f}   = {total * b['ips'] / 1000:.2f} cores busy at {b['ips']:.1f} img/s")


if __name__ == "__main__":
    main()
