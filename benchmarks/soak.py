"""Soak: BulkCheck streams and concurrent unary calls for N minutes; memory must stay flat.

    python benchmarks/soak.py [--minutes 10] [--images DIR] [--unary-threads 4]

Starts its own server on 127.0.0.1 (temporary Milvus Lite file). One client thread sends
BulkCheck streams of 200 images back to back (the first pass stores them, later passes only
check, so the model always runs), while `--unary-threads` threads send CheckDuplicate calls.
Every 30 s it prints the server's RSS, images/s and errors; at the end unary latency percentiles,
and the RSS growth between the end of the first minute and the end.
"""

from __future__ import annotations

import argparse
import sys
import threading
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _server import machine, server  # noqa: E402
from throughput import DEFAULT_IMAGES, load_images  # noqa: E402

from imgdedup._proto.dedup.v1 import dedup_pb2 as pb  # noqa: E402
from imgdedup.client import DedupClient  # noqa: E402


def rss_mib(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def run_soak(minutes: float, images: list[bytes], unary_threads: int, report=print) -> dict:
    """Run the soak against a server of its own; returns counts, RSS samples and latencies."""
    import cv2

    # Re-encoded variants: checks of them are never byte-identical to a stored image, so every
    # one runs the model (identical bytes would take the exact-duplicate fast path).
    variants = [
        cv2.imencode(".jpg", cv2.imdecode(np.frombuffer(b, np.uint8), cv2.IMREAD_COLOR), [cv2.IMWRITE_JPEG_QUALITY, q])[1].tobytes()
        for q in (70, 85) for b in images
    ]
    stop = threading.Event()
    lock = threading.Lock()
    counts = {"bulk": 0, "unary": 0, "errors": 0}
    latencies: list[float] = []
    samples: list[tuple[float, float]] = []

    with server(None) as (target, pid):
        with DedupClient(target) as c:
            c.wait_ready()

        def bulk_loop() -> None:
            with DedupClient(target, timeout=None) as client:
                offset, first_pass = 0, True
                while not stop.is_set():
                    source = images if first_pass else variants
                    chunk = [(offset + i) % len(source) for i in range(200)]
                    reqs = (pb.BulkCheckRequest(image_id=f"soak-{i}", image=source[i], add_to_index=first_pass) for i in chunk)
                    for r in client.bulk_check(reqs, timeout=600):
                        with lock:
                            counts["bulk"] += 1
                            counts["errors"] += r.HasField("error")
                    offset += 200
                    first_pass = offset < len(images)

        def unary_loop(seed: int) -> None:
            rng = np.random.default_rng(seed)
            with DedupClient(target) as client:
                while not stop.is_set():
                    t = time.perf_counter()
                    try:
                        client.check(variants[int(rng.integers(len(variants)))])
                        ok = True
                    except Exception:
                        ok = False
                    with lock:
                        latencies.append((time.perf_counter() - t) * 1000)
                        counts["unary"] += 1
                        counts["errors"] += not ok

        threads = [threading.Thread(target=bulk_loop)] + [threading.Thread(target=unary_loop, args=(i,)) for i in range(unary_threads)]
        for t in threads:
            t.start()
        start = time.monotonic()
        last = (start, 0)
        interval = min(30.0, minutes * 60 / 4)
        report(f"{'min':>5} {'rss MiB':>8} {'img/s':>6} {'bulk':>7} {'unary':>7} {'errors':>6}")
        while time.monotonic() - start < minutes * 60:
            time.sleep(max(0.0, min(interval, minutes * 60 - (time.monotonic() - start))))
            now = time.monotonic()
            with lock:
                done = counts["bulk"] + counts["unary"]
                row = (rss_mib(pid), (done - last[1]) / (now - last[0]), counts["bulk"], counts["unary"], counts["errors"])
            last = (now, done)
            samples.append(((now - start) / 60, row[0]))
            report(f"{(now - start) / 60:5.1f} {row[0]:8.0f} {row[1]:6.1f} {row[2]:7d} {row[3]:7d} {row[4]:6d}")
        stop.set()
        for t in threads:
            t.join(120)
    return {**counts, "samples": samples, "latencies": latencies}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--minutes", type=float, default=10.0)
    parser.add_argument("--images", type=Path, default=DEFAULT_IMAGES)
    parser.add_argument("--n", type=int, default=1000, help="distinct images cycled through")
    parser.add_argument("--unary-threads", type=int, default=4)
    args = parser.parse_args()

    images = load_images(args.images, args.n)
    print(f"machine: {machine()}")
    print(f"soak: {args.minutes:g} min, {len(images)} distinct images, 1 BulkCheck client + {args.unary_threads} unary clients, 127.0.0.1")
    result = run_soak(args.minutes, images, args.unary_threads, report=lambda line: print(line, flush=True))
    samples, latencies = result["samples"], result["latencies"]
    p = np.percentile(latencies, [50, 95, 99]) if latencies else [float("nan")] * 3
    after_first = next((r for m, r in samples if m >= 1.0), samples[0][1])
    print(f"\nunary latency under load: p50 {p[0]:.0f} ms, p95 {p[1]:.0f} ms, p99 {p[2]:.0f} ms")
    print(f"errors: {result['errors']}; RSS after ~1 min {after_first:.0f} MiB, at the end {samples[-1][1]:.0f} MiB "
          f"({(samples[-1][1] / after_first - 1) * 100:+.1f} %)")


if __name__ == "__main__":
    main()
