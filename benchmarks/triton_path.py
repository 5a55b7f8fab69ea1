"""The Triton path against in-process inference, on the same machine, in one run.

    python benchmarks/triton_path.py [--images DIR] [--bulk-n 600] [--n 100] [--mlserver-threads 1]

It starts a real Seldon MLServer (tests/kserve_server.py: the KServe v2 gRPC protocol that NVIDIA
Triton speaks; Triton cannot be installed here) serving the default model with onnxruntime, then two
servers of ours, each on a temporary Milvus Lite file: one embedding in process (the default), one
with `--embedder triton` pointed at MLServer. Each gets the same photos: one BulkCheck stream of
--bulk-n, stored, then --n unary checks (check only) of re-encoded copies at concurrency 1.

Prints, per path: BulkCheck images/s, unary p50/p99, CPU per image of our server (with Milvus Lite)
and of MLServer; the Triton path's BulkCheck images/s as a share of in-process against the target
(>= 70 %); and whether both answered the same (same duplicate verdicts, same matches, largest
similarity difference), which must hold exactly up to 1e-3.

On a GPU host Triton runs the model on the GPU and our server only decodes and searches, so this
ratio on a CPU-only machine is the worst case: both paths share the same cores with the model.
MLServer needs its own venv (run.sh test builds .venv-mlserver, or set DEDUP_MLSERVER).
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "benchmarks"))
sys.path.insert(0, str(ROOT / "tests"))
from _server import cpu_of_tree, machine, server  # noqa: E402
from pipeline import copies  # noqa: E402
from throughput import DEFAULT_IMAGES, load_images, pct  # noqa: E402

from imgdedup._proto.dedup.v1 import dedup_pb2 as pb  # noqa: E402
from imgdedup.client import DedupClient  # noqa: E402
from imgdedup.runtime import load_spec  # noqa: E402

TARGET_SHARE = 0.70


def cpu_s(pid: int | None) -> float:
    """CPU seconds of `pid` and every process below it (0 without one)."""
    return cpu_of_tree(pid) if pid is not None else 0.0


def run_path(extra: tuple[str, ...], images: list[bytes], queries: list[bytes], model_pid: int | None) -> dict:
    with server(None, *extra) as (target, pid):
        with DedupClient(target) as client:
            client.wait_ready()
            client.check(queries[0])  # warm-up
            cpu0, model0 = cpu_s(pid), cpu_s(model_pid)
            reqs = (pb.BulkCheckRequest(image_id=f"bulk-{i}", image=b, add_to_index=True) for i, b in enumerate(images))
            t0 = time.perf_counter()
            answers = list(client.bulk_check(reqs, timeout=3600))
            elapsed = time.perf_counter() - t0
            cpu1, model1 = cpu_s(pid), cpu_s(model_pid)
            latencies, checks = [], []
            for q in queries:
                t = time.perf_counter()
                checks.append(client.check(q))
                latencies.append((time.perf_counter() - t) * 1000)
    return {
        "ips": len(images) / elapsed,
        "errors": sum(a.HasField("error") for a in answers),
        "server_ms": (cpu1 - cpu0) * 1000 / len(images),
        "model_ms": (model1 - model0) * 1000 / len(images),
        "p50": statistics.median(latencies),
        "p99": pct(latencies, 99),
        "answers": [a.result for a in answers] + checks,
    }


def agreement(a: list, b: list) -> tuple[int, int, float]:
    """(answers that differ in verdict or matches, answers, largest similarity difference)."""
    differ, worst = 0, 0.0
    for x, y in zip(a, b):
        if x.is_duplicate != y.is_duplicate or [m.image_id for m in x.matches] != [m.image_id for m in y.matches]:
            differ += 1
        for mx, my in zip(x.matches, y.matches):
            worst = max(worst, abs(mx.similarity - my.similarity))
    return differ, len(a), worst


def main() -> None:
    from kserve_server import MLServer

    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--images", type=Path, default=DEFAULT_IMAGES)
    p.add_argument("--bulk-n", type=int, default=600)
    p.add_argument("--n", type=int, default=100, help="unary checks per path")
    p.add_argument("--mlserver-threads", type=int, default=1, help="onnxruntime threads per inference in MLServer (our server sends 2 batches at once)")
    args = p.parse_args()

    images = load_images(args.images, args.bulk_n)
    queries = copies(images, args.n)
    spec = load_spec("sscd_disc_mixup")
    print(f"machine: {machine()}")
    print(f"images: {len(images)} from {args.images if args.images.is_dir() else 'scikit-image crops'}; {len(queries)} re-encoded copies for unary checks")
    with tempfile.TemporaryDirectory(prefix="dedup-kserve-") as repo:
        model_server = MLServer(Path(repo), spec, threads=args.mlserver_threads).start()
        try:
            local = run_path((), images, queries, None)
            remote = run_path(("--embedder", "triton", "--triton-url", model_server.url), images, queries, model_server.proc.pid)
        finally:
            model_server.stop()

    print(f"\n{'path':<34} {'BulkCheck img/s':>15} {'unary p50 ms':>12} {'p99 ms':>7} {'server CPU ms/img':>17} {'MLServer CPU ms/img':>19}")
    for name, r in (("in-process onnxruntime", local), ("--embedder triton (MLServer)", remote)):
        print(f"{name:<34} {r['ips']:15.1f} {r['p50']:12.1f} {r['p99']:7.1f} {r['server_ms']:17.1f} {r['model_ms']:19.1f}")
    share = remote["ips"] / local["ips"]
    print(f"\nTriton path BulkCheck throughput: {share:.0%} of in-process (target >= {TARGET_SHARE:.0%}): {'met' if share >= TARGET_SHARE else 'NOT met'}")
    differ, n, worst = agreement(local["answers"], remote["answers"])
    print(f"answers: {n - differ} of {n} identical in verdict and matches; largest similarity difference {worst:.2e} (bound 1e-3); errors {local['errors']} / {remote['errors']}")


if __name__ == "__main__":
    main()
