"""GPU speed, end to end: the measurement benchmarks/gpu.sh runs on a GPU machine as it is.

    python benchmarks/gpu.py [--n 8000] [--streams 1 4] [--workers 4] [--skip-pipeline]

A ResNet-50 (torchvision's, random weights: speed does not depend on them; saved once so that
every process runs the same network) on the PyTorch embedder, fp16 and channels-last on CUDA,
288x288 like the default model. Prints one table:
- the model alone: batch 1 latency, batch 64 and 128 images/s (uint8 host batches to the GPU
  included, as the server sends them);
- end to end through the API: --n distinct synthetic 640x480 JPEGs stored by BulkCheck, over 1
  and more concurrent streams, on one server process and on `--workers W` fronts (each with the
  model on the GPU) over one index writer; images/s against the target (>= 3,000 img/s on one
  H100/H200-class GPU);
- then benchmarks/pipeline.py on the machine's cores (the pipeline's cost with a near-free model)
  and benchmarks/writer.py (the index writer alone), unless --skip-pipeline.
Without a GPU it runs the same on the CPU (slowly: use a small --n), which is how it is tested.
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _server import cpu_of_tree, machine, server  # noqa: E402
from pipeline import streams_over_connections  # noqa: E402
from throughput import synthetic_jpegs  # noqa: E402

from imgdedup.client import DedupClient  # noqa: E402

TARGET_IPS = 3000.0
SIZE = 288
SERVER_ENV = {
    "DEDUP_MAX_BATCH_SIZE": "64",
    "DEDUP_MAX_QUEUE_DELAY_MS": "4",
    # A deep window per stream keeps the GPU's batches full; the queues hold every stream's window
    # (4 x 1024 per priority: at the default 1024, 8 streams of 512 would be refused items).
    "DEDUP_BULK_MAX_IN_FLIGHT": "256",
    "DEDUP_MAX_QUEUE_SIZE": "4096",
    "DEDUP_INFERENCE_WORKERS": "2",
    "DEDUP_LOG_LEVEL": "WARNING",
}


def write_model(folder: Path) -> Path:
    """A random-weight torchvision ResNet-50's state dict and its spec; returns the spec."""
    import torch
    import torchvision

    torch.manual_seed(0)
    torch.save(torchvision.models.resnet50(weights=None).state_dict(), str(folder / "resnet50_random.pth"))
    spec = folder / "resnet50_random.toml"
    spec.write_text(f"""
name = "resnet50_random"
description = "torchvision ResNet-50, random weights (speed only)"
[source]
format = "torchvision"
architecture = "resnet50"
path = "resnet50_random.pth"
[input]
name = "image"
layout = "NCHW"
dtype = "float32"
[input.resize]
size = {SIZE}
interpolation = "auto"
[input.normalize]
[output]
name = "embedding"
dim = 2048
[search]
# Random features of different pictures can be close: a high threshold keeps clusters small.
default_threshold = 0.995
""")
    return spec


def model_only(spec_path: Path, seconds: float) -> dict:
    import torch

    from imgdedup.runtime import load_spec
    from imgdedup.runtime.torch import TorchEmbedder

    embedder = TorchEmbedder(load_spec(spec_path))
    rng = np.random.default_rng(0)
    out = {"device": embedder.providers[0]}
    one = rng.integers(0, 256, (1, SIZE, SIZE, 3), dtype=np.uint8)
    lat = []
    for _ in range(30):
        t = time.perf_counter()
        embedder.embed(one)
        lat.append((time.perf_counter() - t) * 1000)
    out["b1_p50_ms"] = statistics.median(lat)
    for batch in (64, 128):
        x = rng.integers(0, 256, (batch, SIZE, SIZE, 3), dtype=np.uint8)
        embedder.embed(x)
        n, t0 = 0, time.perf_counter()
        while time.perf_counter() - t0 < seconds:
            embedder.embed(x)
            n += batch
        out[f"b{batch}_ips"] = n / (time.perf_counter() - t0)
    del embedder
    if torch.cuda.is_available():
        torch.cuda.empty_cache()
    return out


def runs(streams: list[int], workers: int) -> list[tuple[int, int]]:
    """(fronts, streams) of each end-to-end run."""
    return [(1, s) for s in streams] + ([(workers, 2 * max(streams))] if workers > 1 else [])


def end_to_end(spec_path: Path, n: int, streams: list[int], workers: int) -> list[tuple[str, int, float, float, int]]:
    """Each run stores images of its own (a stored image sent again would be an exact duplicate,
    answered without the model), after a warm-up on others."""
    plan = runs(streams, workers)
    warm = 64
    images = synthetic_jpegs(len(plan) * (n + warm))
    rows = []
    os.environ.update(SERVER_ENV)
    k = 0
    for w in dict.fromkeys(f for f, _ in plan):
        extra = ["--embedder", "torch", "--model", str(spec_path)] + (["--workers", str(w)] if w > 1 else [])
        with server(None, *extra) as (target, pid):
            with DedupClient(target) as client:
                client.wait_ready(timeout=600)
            for _, s in [r for r in plan if r[0] == w]:
                mine = images[k * (n + warm): (k + 1) * (n + warm)]
                k += 1
                streams_over_connections(target, mine[:warm], s, f"warm-{k}")
                before = cpu_of_tree(pid)
                ips, errors = streams_over_connections(target, mine[warm:], s, f"run-{k}")
                cpu_ms = (cpu_of_tree(pid) - before) * 1000 / n
                rows.append((f"{w} process{'es' if w > 1 else ''}" + (" (--workers)" if w > 1 else ""), s, ips, cpu_ms, errors))
    return rows


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--n", type=int, default=8000, help="distinct images per end-to-end run")
    p.add_argument("--streams", type=int, nargs="+", default=[1, 4])
    p.add_argument("--workers", type=int, default=4, help="fronts for the --workers run (1: none)")
    p.add_argument("--model-seconds", type=float, default=5.0)
    p.add_argument("--skip-pipeline", action="store_true")
    args = p.parse_args()

    import torch

    gpu = torch.cuda.get_device_name(0) if torch.cuda.is_available() else "no GPU (CPU run)"
    print(f"machine: {machine()}; {gpu}; torch {torch.__version__}", flush=True)
    t0 = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="dedup-gpu-") as folder:
        spec_path = write_model(Path(folder))
        m = model_only(spec_path, args.model_seconds)
        rows = end_to_end(spec_path, args.n, args.streams, args.workers)

    print(f"\nmodel alone ({m['device']}, ResNet-50 {SIZE}x{SIZE}, uint8 host batches): batch 1 p50 {m['b1_p50_ms']:.2f} ms; batch 64 {m['b64_ips']:.0f} img/s; batch 128 {m['b128_ips']:.0f} img/s")
    print(f"\nend to end: {args.n} distinct 640x480 JPEGs stored by BulkCheck (Milvus Lite), new ones each run")
    print(f"{'servers':<26} {'streams':>7} {'img/s':>8} {'server CPU ms/img':>18} {'errors':>6}")
    for name, s, ips, cpu_ms, errors in rows:
        print(f"{name:<26} {s:7d} {ips:8.0f} {cpu_ms:18.2f} {errors:6d}")
    best = max(r[2] for r in rows)
    print(f"best end to end: {best:.0f} img/s = {best / TARGET_IPS:.2f}x the target (>= {TARGET_IPS:.0f} img/s): {'met' if best >= TARGET_IPS else 'NOT met'}")
    print(f"(these measurements: {time.perf_counter() - t0:.0f} s)", flush=True)

    if not args.skip_pipeline:
        cores = os.cpu_count() or 1
        workers = [str(w) for w in (1, min(2, cores), min(4, cores), min(8, cores))]
        cmd = [sys.executable, str(Path(__file__).with_name("pipeline.py")), "--bulk-n", "3000", "--n", "400", "--workers", *dict.fromkeys(workers)]
        print(f"\npipeline cost (near-free model) on {cores} cores: {' '.join(cmd[1:])}", flush=True)
        subprocess.run(cmd, check=False, timeout=420)
        # The one index writer is the ceiling of every front: how many images/s it takes alone here.
        cmd = [sys.executable, str(Path(__file__).with_name("writer.py")), "--n", "4000"]
        print(f"\nthe index writer alone: {' '.join(cmd[1:])}", flush=True)
        subprocess.run(cmd, check=False, timeout=120)


if __name__ == "__main__":
    main()
