"""What the server's pipeline around the model costs: a near-free stand-in model served through the
whole server (decode, batching, Milvus search and writes, clusters, gRPC), so that what is left is
everything but the model.

    python benchmarks/pipeline.py [--images DIR] [--bulk-n 1500] [--n 400] [--concurrency 1 16] [--workers 1 2]
                                  [--no-decode-processes]

It builds the stand-in with `onnx` in a temporary folder, with the default model's interface (input
uint8 NHWC [batch, 288, 288, 3], resized like the default spec; output float32 [batch, 512],
L2-normalised in the graph): a strided sample of the pixels averaged into a 12x12x3 grid, whitened
by a matrix fitted on the benchmark's own photos and rotated into 512-d, about 0.05 ms per image.
Whitened, it scores unrelated photos like the default model does (cosine 0.00 +- 0.05; SSCD's
0.009 +- 0.047), so the index writer sees as few candidates above the link rule's floor as it
does in production; the plain grid scored them 0.05 +- 0.26, ~200 neighbours per image above
0.30 among 1,200 photos, and the writer's work was that of a model that finds everything similar. Then it starts its own server
on 127.0.0.1 (`--model` that spec, a temporary Milvus Lite file) and stops it at the end. Images:
the photos under --images (default ../shared/dedup-bench's originals, 1,496 distinct photos; else
distinct synthetic 640x480 JPEGs), read into memory first.

Prints:
- the stand-in alone, in this process (ms per image), and how discriminative it is: its cosines
  between different photos (mean, sd, neighbours per image above the link rule's floor 0.30) and
  its copies' cosines with their originals; over the BulkCheck, images answered is_duplicate and
  clusters of 2+ (few, or clusters would merge into a giant one and the index writer's work
  would be unrealistic);
- BulkCheck of --bulk-n distinct photos, stored, one stream: images/s, server CPU ms per image (the
  server process and its children, i.e. Milvus Lite), cores busy, mean batch the batcher formed;
- unary CheckDuplicate at each --concurrency (check only, after the stream, so the index holds the
  stream's images), of re-encoded copies of the stored photos (other bytes, so the exact-duplicate
  fast path does not apply; they match their original): images/s, p50/p99 latency, server CPU;
- the targets (2 cores: one BulkCheck stream >= 1,000 img/s, <= 2 ms of server CPU per image) with
  the measured figures as ratios;
- where the CPU went per image during the BulkCheck, by group of the server's threads (they carry
  their names into the OS), the Milvus Lite process and this client;
- the same stream on a server with `--decode-processes` (decoding in processes of its own,
  core/decoding.py), its CPU split with those processes;
- scaling with `dedup serve --workers W` for each --workers: the same photos as S concurrent
  BulkCheck streams (S = 4 x the largest W; each stream on a TCP connection of its own, which the
  kernel hashes to a front), images/s, server CPU per image (the parent, i.e. the index
  writer, every front and Milvus Lite), and images/s relative to W=1 against the target
  >= 0.8 x W (up to the number of cores).
"""

from __future__ import annotations

import argparse
import os
import statistics
import threading
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _server import _stat, cpu_by_thread, cpu_of_children_by_name, cpu_of_self, cpu_of_tree, machine, peak_rss_mib, server  # noqa: E402
from throughput import DEFAULT_IMAGES, batch_totals, free_port, load_images, mean_batch, print_cpu_split, synthetic_jpegs, unary  # noqa: E402

from imgdedup._proto.dedup.v1 import dedup_pb2 as pb  # noqa: E402
from imgdedup.client import DedupClient  # noqa: E402

TARGET_IPS = 1000.0  # one BulkCheck stream, 2 cores, near-free model
TARGET_CPU_MS = 2.0  # server CPU per image, Milvus Lite included
WRITES = "dedup_index_write_batch_size"  # the index writer's histogram of images per write

SIZE, GRID, STEP, DIM = 288, 12, 4, 512
# Whitening's shrinkage, a share of the mean eigenvalue: at 0.01 unrelated photos score 0.00 +-
# 0.05 and the copies below 0.95 or more (12x12x3 grid, 1,200 dev photos; 8x8x3 left 0.08).
SHRINK = 0.01
FLOOR = 0.30  # core/linking.py: LinkRule.floor, "near"

# The default spec's [input] section (model/specs/sscd_disc_mixup.toml), with this model's
# source, output and threshold.
SPEC = f"""
name = "nearfree_standin"
description = "near-free stand-in for benchmarks/pipeline.py: {GRID}x{GRID}x3 mean grid, whitened, rotated"

[source]
path = "nearfree.onnx"

[input]
name = "image"
layout = "NHWC"
dtype = "uint8"
channels = "RGB"

[input.resize]
mode = "square"
size = {SIZE}
interpolation = "auto"

[output]
name = "embedding"
dim = {DIM}
l2_normalized = true

[search]
# Fitted on 1,200 dev photos: different photos at most 0.53 (out of sample, 296 more: 0.53); the
# unary queries' re-encoded copies 0.948 or more against their original.
default_threshold = 0.80
"""


def model_tensors(images: list[bytes]) -> np.ndarray:
    """The photos as the stand-in is fed them: [N, 288, 288, 3] uint8, resized as its spec says."""
    from imgdedup.core.images import decode_image, preprocess
    from imgdedup.runtime.spec import ResizePolicy

    resize = ResizePolicy(mode="square", size=SIZE, interpolation="auto")  # SPEC's [input.resize]
    return np.stack([preprocess(decode_image(b, max_pixels=10**9, target_size=SIZE), resize) for b in images])


def grid_features(tensors: np.ndarray) -> np.ndarray:
    """What the stand-in's graph computes before its one matrix: [N, 288, 288, 3] uint8 -> every
    STEP-th pixel on both axes -> the mean of each block of a GRID x GRID x 3 grid, flattened."""
    sub = tensors[:, ::STEP, ::STEP].astype(np.float32)
    block = (SIZE // STEP) // GRID
    return sub.reshape(len(sub), GRID, block, GRID, block, 3).mean(axis=(2, 4)).reshape(len(sub), -1)


def fit_whitening(tensors: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(mean, matrix) that whiten the grid features of these photos (model_tensors; ZCA, shrunk
    by SHRINK) and rotate them into DIM dimensions (orthonormal rows: cosines are kept)."""
    features = grid_features(tensors)
    mean = features.mean(axis=0)
    eigenvalues, vectors = np.linalg.eigh(np.cov((features - mean).T))
    eigenvalues = np.maximum(eigenvalues, 0.0) + SHRINK * eigenvalues.mean()
    whiten = vectors @ np.diag(1.0 / np.sqrt(eigenvalues)) @ vectors.T
    rotate, _ = np.linalg.qr(np.random.default_rng(0).standard_normal((DIM, features.shape[1])))  # DIM x d, orthonormal columns
    return mean.astype(np.float32), (whiten @ rotate.T).astype(np.float32)


def build_standin(folder: Path, tensors: np.ndarray) -> Path:
    """Write the stand-in .onnx and its spec into `folder`, whitened on these photos
    (model_tensors of a few hundred distinct ones or more); return the spec's path.

    image uint8 [N, 288, 288, 3] -> every 4th pixel on both axes (72x72) -> float -> mean of each
    6x6 block (12x12x3 grid) -> minus the photos' mean -> @ the whitening matrix (fit_whitening)
    -> L2-normalised."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    sub = SIZE // STEP
    block = sub // GRID
    flat = 3 * GRID * GRID
    mean, matrix = fit_whitening(tensors)
    consts = {
        "starts": np.array([0, 0], np.int64),
        "ends": np.array([SIZE, SIZE], np.int64),
        "axes": np.array([1, 2], np.int64),
        "steps": np.array([STEP, STEP], np.int64),
        "blocks": np.array([0, GRID, block, GRID, block, 3], np.int64),
        "flat": np.array([0, flat], np.int64),
        "mean": mean[None, :],
        "proj": matrix,
    }
    nodes = [
        helper.make_node("Slice", ["image", "starts", "ends", "axes", "steps"], ["sampled"]),
        helper.make_node("Cast", ["sampled"], ["pixels"], to=TensorProto.FLOAT),
        helper.make_node("Reshape", ["pixels", "blocks"], ["blocked"]),
        helper.make_node("ReduceMean", ["blocked"], ["grid"], axes=[2, 4], keepdims=0),
        helper.make_node("Reshape", ["grid", "flat"], ["vector"]),
        helper.make_node("Sub", ["vector", "mean"], ["centred"]),
        helper.make_node("MatMul", ["centred", "proj"], ["projected"]),
        helper.make_node("LpNormalization", ["projected"], ["embedding"], axis=1, p=2),
    ]
    graph = helper.make_graph(
        nodes,
        "nearfree",
        [helper.make_tensor_value_info("image", TensorProto.UINT8, ["batch", SIZE, SIZE, 3])],
        [helper.make_tensor_value_info("embedding", TensorProto.FLOAT, ["batch", DIM])],
        initializer=[numpy_helper.from_array(v, k) for k, v in consts.items()],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8  # what opset 17 needs, not the newest the installed onnx writes: older onnxruntimes load it too
    onnx.checker.check_model(model)
    onnx.save(model, folder / "nearfree.onnx")
    (folder / "nearfree.toml").write_text(SPEC)
    return folder / "nearfree.toml"


def discrimination(spec_path: Path, photos: np.ndarray, queries: np.ndarray) -> dict[str, float]:
    """The stand-in's cosines between different photos (mean, sd, neighbours per photo at or above
    FLOOR) and of the re-encoded copies with their originals (the lowest); model_tensors of both."""
    from imgdedup.runtime import create_embedder, load_spec

    embedder = create_embedder(load_spec(spec_path), workers=1, intra_op_threads=1)

    def embed(x: np.ndarray) -> np.ndarray:
        return np.concatenate([embedder.embed(x[i: i + 64]) for i in range(0, len(x), 64)])

    e, q = embed(photos), embed(queries)
    sims = e @ e.T
    others = sims[np.triu_indices(len(e), 1)]
    return {"mean": float(others.mean()), "sd": float(others.std()), "max": float(others.max()),
            "near": float(((sims >= FLOOR).sum(axis=1) - 1).mean()),
            "copies_min": float((q * e[: len(q)]).sum(axis=1).min())}


def standin_cost(spec_path: Path, photos: np.ndarray, seconds: float = 1.0) -> dict[int, float]:
    """ms per image of the stand-in alone (one single-threaded session, as the server runs it under
    load), batch 1 and 8, on preprocessed photos (model_tensors)."""
    from imgdedup.runtime import create_embedder, load_spec

    tensors = list(photos[:8])
    embedder = create_embedder(load_spec(spec_path), workers=1, intra_op_threads=1)
    out = {}
    for batch in (1, 8):
        x = np.stack((tensors * batch)[:batch])
        embedder.embed(x)
        done, t0 = 0, time.perf_counter()
        while time.perf_counter() - t0 < seconds:
            embedder.embed(x)
            done += batch
        out[batch] = (time.perf_counter() - t0) * 1000 / done
    return out


def copies(images: list[bytes], n: int) -> list[bytes]:
    """Re-encoded copies (90 % size, JPEG quality 85): other bytes, same picture."""
    import cv2

    out = []
    for b in images[:n]:
        a = cv2.imdecode(np.frombuffer(b, np.uint8), cv2.IMREAD_COLOR)
        a = cv2.resize(a, (a.shape[1] * 9 // 10, a.shape[0] * 9 // 10), interpolation=cv2.INTER_AREA)
        out.append(cv2.imencode(".jpg", a, [cv2.IMWRITE_JPEG_QUALITY, 85])[1].tobytes())
    return out


def bulk_stored(target: str, images: list[bytes]) -> dict:
    """One BulkCheck stream storing every image; counts the duplicates it answered."""
    errors = duplicates = exact = 0
    with DedupClient(target) as client:
        reqs = (pb.BulkCheckRequest(image_id=f"bulk-{i}", image=b, add_to_index=True) for i, b in enumerate(images))
        t0 = time.perf_counter()
        for r in client.bulk_check(reqs, timeout=3600):
            if r.HasField("error"):
                errors += 1
            else:
                duplicates += r.result.is_duplicate
                exact += r.result.exact_duplicate
        elapsed = time.perf_counter() - t0
    return {"ips": len(images) / elapsed, "errors": errors, "duplicates": duplicates, "exact": exact, "seconds": elapsed, "n": len(images)}


def streams_over_connections(target: str, images: list[bytes], streams: int, tag: str) -> tuple[float, int]:
    """`streams` concurrent BulkCheck streams (storing), each on its own TCP connection,
    splitting `images`; returns (images/s, errors)."""
    import grpc

    from imgdedup._proto.dedup.v1 import dedup_pb2_grpc as pb_grpc

    errors = [0] * streams
    first: list[str] = []

    def run(k: int) -> None:
        part = images[k::streams]
        options = [("grpc.use_local_subchannel_pool", 1), ("grpc.max_send_message_length", 64 << 20)]
        with grpc.insecure_channel(target, options=options) as channel:
            reqs = (pb.BulkCheckRequest(image_id=f"{tag}-{k}-{i}", image=b, add_to_index=True) for i, b in enumerate(part))
            for r in pb_grpc.DedupServiceStub(channel).BulkCheck(reqs, timeout=3600):
                if r.HasField("error"):
                    errors[k] += 1
                    first.append(f"{r.error.code} {r.error.message}"[:200])

    t0 = time.perf_counter()
    threads = [threading.Thread(target=run, args=(k,)) for k in range(streams)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    if first:
        print(f"  ({tag}: {sum(errors)} item errors, the first: {first[0]})", flush=True)
    return len(images) / (time.perf_counter() - t0), sum(errors)


def scaling(spec_path: Path, images: list[bytes], workers: list[int]) -> list[str]:
    """Measure --workers scaling; returns the report's lines. The kernel hashes connections
    over the fronts, so there are 4 streams per front of the largest W (two streams on two
    fronts share one front half the time)."""
    streams = 4 * max(workers)
    rows = []
    parent: dict[str, float] = {}  # the writer process's CPU ms per image by thread, at the largest W > 1
    for w in workers:
        with server(None, "--model", str(spec_path), "--workers", str(w)) as (target, pid):
            with DedupClient(target) as client:
                client.wait_ready()
            streams_over_connections(target, images[:64], streams, "warm")
            before, threads = cpu_of_tree(pid), cpu_by_thread(pid)
            ips, errors = streams_over_connections(target, images, streams, "bulk")
            rows.append((w, ips, (cpu_of_tree(pid) - before) * 1000 / len(images), errors))
            if w > 1:
                parent = {k: (v - threads.get(k, 0.0)) * 1000 / len(images) for k, v in cpu_by_thread(pid).items()}
    base = rows[0][1] if rows and rows[0][0] == 1 else None
    cores = os.cpu_count() or 1
    out = [f"\n--workers scaling: {len(images)} photos as {streams} concurrent BulkCheck streams, one connection each",
           f"{'workers':>7} {'img/s':>8} {'server CPU ms/img':>18} {'errors':>6} {'vs 1 worker':>12} {'target':>8}"]
    for w, ips, cpu, errors in rows:
        target = 0.8 * min(w, cores)
        ratio = f"{ips / base:.2f}x" if base else "-"
        met = "" if not base or w == 1 else ("met" if ips / base >= target else "NOT met")
        out.append(f"{w:7d} {ips:8.1f} {cpu:18.2f} {errors:6d} {ratio:>12} {f'>= {target:.1f}x' if w > 1 else '':>8} {met}")
    out.append(f"  (server CPU: the parent (the index writer when W > 1), its fronts and Milvus Lite; {cores} cores here)")
    if parent:
        busy = sum(parent.values())
        split = ", ".join(f"{k} {v:.2f}" for k, v in sorted(parent.items(), key=lambda kv: -kv[1]) if v >= 0.005)
        # One process, one interpreter lock: its CPU per image bounds what all fronts together can store.
        out.append(f"  the writer process at {rows[-1][0]} workers, CPU ms per image: {split} (total {busy:.2f}: "
                   f"at most ~{1000 / busy:,.0f} img/s from one interpreter)")
    return out


def snapshot(pid: int) -> tuple[dict[str, float], float, float, float, dict[str, float]]:
    """(CPU seconds by server thread group, its child processes (Milvus Lite; decoding
    processes), this client, the whole server process, its child processes by name)."""
    children = cpu_of_children_by_name(pid)
    return cpu_by_thread(pid), sum(children.values()), cpu_of_self(), _stat(f"/proc/{pid}/stat")[1], children


def measured_stream(target: str, pid: int, metrics_url: str, stream: list[bytes]) -> tuple[dict, tuple]:
    """One BulkCheck stream storing `stream`: its figures, and the arguments of print_cpu_split."""
    before, batches, writes = snapshot(pid), batch_totals(metrics_url), batch_totals(metrics_url, WRITES)
    b = bulk_stored(target, stream)
    after = snapshot(pid)
    b.update(batch=mean_batch(batches, batch_totals(metrics_url)), write=mean_batch(writes, batch_totals(metrics_url, WRITES)),
             cpu=server_ms(before, after, b["n"]), client=client_ms(before, after, b["n"]))
    return b, (before[:3], after[:3], b, (before[4], after[4]))


def server_ms(before: tuple, after: tuple, n: int) -> float:
    """Server CPU per image, ms: the server process (threads that ended included) + Milvus Lite."""
    return ((after[3] - before[3]) + (after[1] - before[1])) * 1000 / n


def client_ms(before: tuple, after: tuple, n: int) -> float:
    return (after[2] - before[2]) * 1000 / n


def verdict(measured: float, target: float, higher_is_better: bool) -> str:
    ratio = measured / target
    met = ratio >= 1 if higher_is_better else ratio <= 1
    return f"{ratio:.2f}x the target: {'met' if met else 'NOT met'}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--images", type=Path, default=DEFAULT_IMAGES)
    parser.add_argument("--bulk-n", type=int, default=1500, help="distinct photos for the BulkCheck stream (all there are, if fewer)")
    parser.add_argument("--n", type=int, default=400, help="checks for each unary run")
    parser.add_argument("--concurrency", type=int, nargs="+", default=[1, 16])
    parser.add_argument("--workers", type=int, nargs="*", default=[1, 2], help="`serve --workers` values to compare (none: skip)")
    parser.add_argument("--decode-processes", action=argparse.BooleanOptionalAction, default=True, help="also run the stream on a server with --decode-processes")
    args = parser.parse_args()

    # Without the benchmark set (a machine it does not travel to), distinct synthetic photos: the
    # scikit-image crops load_images falls back to are copies of five pictures, which would merge.
    images = load_images(args.images, args.bulk_n) if args.images.is_dir() else synthetic_jpegs(args.bulk_n)
    stream = images[: args.bulk_n]
    queries = copies(stream, min(args.n, len(stream)))
    print(f"machine: {machine()}")
    print(f"images: {len(stream)} distinct from {args.images if args.images.is_dir() else 'synthetic 640x480 JPEGs'}, "
          f"mean {statistics.mean(map(len, stream)) / 1024:.0f} KiB" + (f" (asked for {args.bulk_n})" if len(stream) < args.bulk_n else ""))

    with tempfile.TemporaryDirectory(prefix="dedup-standin-") as model_dir:
        photos = model_tensors(stream)  # decoded once, for the stand-in's fit, cost and cosines
        spec_path = build_standin(Path(model_dir), photos)
        cost = standin_cost(spec_path, photos)
        print(f"stand-in model alone ({SIZE}x{SIZE} uint8 NHWC -> {DIM}-d, one thread): "
              f"batch 1 {cost[1]:.3f} ms/img, batch 8 {cost[8]:.3f} ms/img")
        d = discrimination(spec_path, photos, model_tensors(queries))
        del photos  # ~250 KB each: not kept while the servers are measured
        print(f"stand-in's cosines: different photos {d['mean']:.3f} +- {d['sd']:.3f} (highest {d['max']:.3f}; the default model's "
              f"0.009 +- 0.047), {d['near']:.2f} neighbours per photo >= {FLOOR:.2f}; re-encoded copies >= {d['copies_min']:.3f}")

        metrics_port = free_port()
        metrics_url = f"http://127.0.0.1:{metrics_port}/metrics"
        with server(None, "--model", str(spec_path), "--metrics-port", str(metrics_port)) as (target, pid):
            with DedupClient(target) as client:
                client.wait_ready()
                info = client.info()
            unary(target, queries, 1, min(20, len(queries)))  # warm-up, against the empty index

            b, bulk_cpu = measured_stream(target, pid, metrics_url, stream)

            with DedupClient(target) as client:
                resp = client.stub.ListClusters(pb.ListClustersRequest(page_size=1000, min_size=2), timeout=60)
                clustered = sum(c.size for c in client.list_clusters(min_size=2, page_size=1000))
                largest = max((c.size for c in resp.clusters), default=0)
                found = sum(any(m.image_id == f"bulk-{i}" for m in client.check(q).matches) for i, q in enumerate(queries[:50]))

            rows = []
            for c in args.concurrency:
                unary(target, queries, c, min(40, args.n))  # warm-up
                before, batches, writes = snapshot(pid), batch_totals(metrics_url), batch_totals(metrics_url, WRITES)
                r = unary(target, queries, c, args.n)
                after = snapshot(pid)
                r.update(batch=mean_batch(batches, batch_totals(metrics_url)), write=mean_batch(writes, batch_totals(metrics_url, WRITES)),
                         cpu=server_ms(before, after, args.n), client=client_ms(before, after, args.n))
                rows.append((f"unary c={c}", r))
            rss = peak_rss_mib(pid)
        in_processes = None
        if args.decode_processes:
            metrics_port = free_port()
            with server(None, "--model", str(spec_path), "--metrics-port", str(metrics_port), "--decode-processes") as (target, pid):
                unary(target, queries, 1, min(20, len(queries)))  # warm-up, against the empty index
                in_processes = measured_stream(target, pid, f"http://127.0.0.1:{metrics_port}/metrics", stream)
        scaled = scaling(spec_path, stream, sorted(set(args.workers))) if args.workers else []

    print(f"server: model {info.model_name}, threshold {info.default_threshold:.2f}, providers {', '.join(info.execution_providers)}, "
          f"milvus {info.milvus_backend}")
    print(f"\ndiscrimination over the stream: {b['duplicates']} of {b['n']} images answered is_duplicate ({100 * b['duplicates'] / b['n']:.1f} %), "
          f"{b['exact']} exact; {resp.total_size} clusters of 2+ holding {clustered} images, largest {largest}")
    print(f"unary queries: re-encoded copies of the first {len(queries)} stored photos; {found} of {min(50, len(queries))} checked found their original")

    print(f"\n{'path':<22} {'img/s':>7} {'p50 ms':>7} {'p99 ms':>7} {'server CPU ms/img':>18} {'cores busy':>10} {'client ms/img':>13} {'batch':>6} {'write':>6}")
    print(f"{'BulkCheck (1 stream)':<22} {b['ips']:7.1f} {'':>7} {'':>7} {b['cpu']:18.2f} {b['cpu'] * b['ips'] / 1000:10.2f} {b['client']:13.2f} {b['batch']:6.2f} {b['write']:6.2f}"
          f"   ({b['n']} stored, {b['errors']} errors)")
    for name, r in rows:
        print(f"{name:<22} {r['ips']:7.1f} {r['p50']:7.2f} {r['p99']:7.2f} {r['cpu']:18.2f} {r['cpu'] * r['ips'] / 1000:10.2f} {r['client']:13.2f} {r['batch']:6.2f} {r['write']:6.2f}")
    print("  (server CPU: the server process and Milvus Lite; cores busy: server CPU per second of wall time;")
    print("   batch: images per inference; write: images per index write, i.e. per search-and-store of Milvus calls)")
    if rss:
        print(f"server peak RSS: {rss:.0f} MiB")

    print("\ntargets (2 cores, near-free model, one BulkCheck stream):")
    print(f"  >= {TARGET_IPS:,.0f} img/s:                measured {b['ips']:7.1f} img/s = {verdict(b['ips'], TARGET_IPS, True)}")
    print(f"  <= {TARGET_CPU_MS:.1f} ms server CPU per image: measured {b['cpu']:7.2f} ms    = {verdict(b['cpu'], TARGET_CPU_MS, False)}")

    print_cpu_split(*bulk_cpu)
    if in_processes is not None:
        p, split = in_processes
        print(f"\nwith --decode-processes (decoding in processes of their own, core/decoding.py; a server of its own):\n"
              f"BulkCheck (1 stream)  {p['ips']:7.1f} img/s  server CPU {p['cpu']:.2f} ms/img (its processes included)  "
              f"cores busy {p['cpu'] * p['ips'] / 1000:.2f}  {p['ips'] / b['ips']:.2f}x the threads' stream above  ({p['n'] - p['errors']} stored, {p['errors']} errors)")
        print_cpu_split(*split)
    for line in scaled:
        print(line)


if __name__ == "__main__":
    main()
