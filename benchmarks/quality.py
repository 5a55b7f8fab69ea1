"""Detection-quality benchmark for the image de-duplication server, measured through its gRPC API.

Run it on any folder laid out like the dedup-bench sets (see /work/shared/dedup-bench/README.md):

    FOLDER/images/<name>.jpg     the images
    FOLDER/ground_truth.json     {"<original>": ["<copy>", ...], ...}; a key and its list form one group
    FOLDER/edits.json            optional: {"<copy>": {"original": ..., "edit": ..., ...}}

Build a set and run the benchmark:

    .venv/bin/python /work/shared/dedup-bench/make_transformed.py /tmp/dedup-dev/transformed --max-originals 300
    .venv/bin/python benchmarks/quality.py /tmp/dedup-dev/transformed --json-out /tmp/quality.json

Options: `--server HOST:PORT` uses a running server (it should be empty: images it already holds
are ignored, but they can still join clusters); without it the script starts its own server
(`python -m imgdedup serve --port 0 --data-dir <tempdir>`) and stops it with SIGTERM at the end.
`--limit-groups N` indexes a seeded random subset of N groups; `--threshold T ...` sets the
thresholds of the sweep; `--json-out PATH` writes every number as JSON; `--server-log PATH` keeps
the self-started server's log; `--pairs-out PATH` writes the indexing order, every recorded
pair and the server's clusters (to study matching rules offline). `--help` lists the rest.

What it measures:

1. Every image is sent once through BulkCheck with add_to_index=True (image_id = file name), in a
   seeded random order, with a low per-call threshold (--match-threshold, 0.3) and top_k 20, so
   each response lists the similarity of the new image to its nearest earlier images. Images
   that fail with a retryable status (UNAVAILABLE, RESOURCE_EXHAUSTED) are re-sent once, alone,
   with CheckDuplicate (--retries); images that still fail count as singletons.
2. The server's clusters (ListClusters, min_size=1) are scored with PAIRWISE precision, recall and
   F1: a predicted pair is two images in one cluster, a true pair two images in one ground-truth
   group. Pairs are counted from the contingency table, sum of n*(n-1)/2 over its cells.
   The server clusters at its own default threshold, whatever the per-call threshold is.
3. Recall per edit (is the copy in its original's cluster?) and per source (the name prefix
   before the first '-').
4. A threshold sweep without re-indexing: the scored pairs from step 1 are joined with union-find
   at each threshold. The sweep at the server's default threshold should reproduce the server's
   clusters; the script reports how many pairs differ. It also reports the smallest threshold
   from which precision stays >= --target-precision (0.995) for every higher threshold.

The report goes to stdout, progress to stderr. Exit status: 0, or 1 when an image still failed
after the retries or the server's answers were inconsistent (both listed under "Problems").
"""

from __future__ import annotations

import argparse
import json
import os
import queue
import random
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter, defaultdict
from dataclasses import dataclass, field
from pathlib import Path

import grpc

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _server import cpu_model  # noqa: E402

from imgdedup._proto.dedup.v1 import dedup_pb2 as pb  # noqa: E402
from imgdedup.client import DedupClient  # noqa: E402
from imgdedup.evaluation import (  # noqa: E402
    Dataset,
    components_at,
    copy_recall,
    load_dataset,
    pairwise_scores,
    partition_diff,
    per_source,
    cluster_shape,
    sweep,
)

DEFAULT_SWEEP = [round(0.30 + 0.05 * i, 2) for i in range(14)]  # 0.30 .. 0.95



# -- server process -------------------------------------------------------------------------------
class OwnServer:
    """A server started as a subprocess on a free port with a temporary data dir."""

    def __init__(self, startup_timeout: float, keep_log: Path | None = None):
        self.keep_log = keep_log
        self.tmp = tempfile.TemporaryDirectory(prefix="dedup-quality-")
        self.data_dir = Path(self.tmp.name) / "data"
        self.log_path = Path(self.tmp.name) / "server.log"
        self.startup_timeout = startup_timeout
        self.proc: subprocess.Popen | None = None
        self.address = ""

    def __enter__(self) -> "OwnServer":
        cmd = [sys.executable, "-m", "imgdedup", "serve", "--port", "0", "--data-dir", str(self.data_dir)]
        self._log = open(self.log_path, "wb")
        self.proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=self._log, text=True)
        lines: queue.Queue[str | None] = queue.Queue()

        def drain() -> None:  # keep reading stdout so the server never blocks on a full pipe
            assert self.proc is not None and self.proc.stdout is not None
            for line in self.proc.stdout:
                lines.put(line)
            lines.put(None)

        threading.Thread(target=drain, daemon=True).start()
        deadline = time.monotonic() + self.startup_timeout
        prefix = "dedup server listening on "
        while not self.address:
            try:
                line = lines.get(timeout=max(0.1, deadline - time.monotonic()))
            except queue.Empty:
                self.stop()
                raise SystemExit(f"the server did not print its address within {self.startup_timeout:.0f} s\n{self.log_tail()}")
            if line is None:
                self.stop()
                raise SystemExit(f"the server exited with code {self.proc.wait()} before listening\n{self.log_tail()}")
            if line.startswith(prefix):
                self.address = line[len(prefix):].strip()
        return self

    def __exit__(self, *exc) -> None:
        self.stop()
        if self.keep_log is not None:
            shutil.copyfile(self.log_path, self.keep_log)
        self.tmp.cleanup()

    def stop(self) -> None:
        if self.proc is None:
            return
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=60)
            except subprocess.TimeoutExpired:
                print(f"warning: server pid {self.proc.pid} ignored SIGTERM for 60 s; killing it", file=sys.stderr)
                self.proc.kill()
                self.proc.wait()
        self._log.close()

    def log_tail(self, lines: int = 30) -> str:
        try:
            return "server log (last lines):\n" + "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return ""


# -- indexing -------------------------------------------------------------------------------------
@dataclass
class IndexRun:
    order: list[str]
    stored: set[str] = field(default_factory=set)
    errors: dict[str, tuple[int, str]] = field(default_factory=dict)  # name -> (gRPC code, message)
    first_pass_errors: dict[str, tuple[int, str]] = field(default_factory=dict)
    edges: dict[tuple[str, str], float] = field(default_factory=dict)  # (a, b), a < b -> similarity
    timings: dict[str, list[float]] = field(default_factory=lambda: defaultdict(list))
    oddities: list[str] = field(default_factory=list)
    foreign_matches: int = 0
    elapsed_s: float = 0.0  # the BulkCheck stream, without retries
    retry_s: float = 0.0

    def __post_init__(self) -> None:
        self.wanted = set(self.order)


RETRYABLE = {grpc.StatusCode.UNAVAILABLE.value[0], grpc.StatusCode.RESOURCE_EXHAUSTED.value[0]}


def index_images(client: DedupClient, data: Dataset, order: list[str], *, match_threshold: float, top_k: int, retries: int) -> IndexRun:
    """Send every image once through one BulkCheck stream; then re-send, one CheckDuplicate at a
    time, the images that failed with a retryable status (UNAVAILABLE, RESOURCE_EXHAUSTED)."""
    run = IndexRun(order)
    images = data.folder / "images"

    def requests():
        for name in order:
            yield pb.BulkCheckRequest(image_id=name, image=(images / name).read_bytes(), add_to_index=True, threshold=match_threshold, top_k=top_k)

    t0 = time.perf_counter()
    last_report = t0
    n = 0
    for n, resp in enumerate(client.bulk_check(requests()), 1):
        expected = order[n - 1]
        if resp.index != n - 1 or resp.image_id != expected:
            run.oddities.append(f"BulkCheck response {n - 1} is index {resp.index} / {resp.image_id!r}, expected {expected!r}")
        if resp.HasField("error"):
            run.errors[expected] = (resp.error.code, resp.error.message)
        else:
            _record(run, expected, resp.result)
        now = time.perf_counter()
        if now - last_report > 15:
            last_report = now
            print(f"  ... {n}/{len(order)} images, {n / (now - t0):.1f} images/s", file=sys.stderr, flush=True)
    run.elapsed_s = time.perf_counter() - t0
    if n != len(order):
        run.oddities.append(f"BulkCheck returned {n} responses for {len(order)} requests")
    run.first_pass_errors = dict(run.errors)

    t0 = time.perf_counter()
    for _ in range(retries):
        again = [name for name, (code, _msg) in run.errors.items() if code in RETRYABLE]
        for name in again:
            try:
                r = client.check((images / name).read_bytes(), image_id=name, add_to_index=True, threshold=match_threshold, top_k=top_k)
            except grpc.RpcError as exc:
                run.errors[name] = (exc.code().value[0], exc.details() or "")
                continue
            del run.errors[name]
            _record(run, name, r)
    run.retry_s = time.perf_counter() - t0
    return run


def _record(run: IndexRun, name: str, r: pb.CheckDuplicateResponse) -> None:
    if not r.stored:
        run.oddities.append(f"{name}: add_to_index=True but stored=False")
    else:
        run.stored.add(name)
    for m in r.matches:
        if m.image_id not in run.wanted:
            run.foreign_matches += 1
        elif m.image_id == name:
            run.oddities.append(f"{name}: matched itself")
        else:
            key = (min(name, m.image_id), max(name, m.image_id))
            run.edges[key] = max(run.edges.get(key, -1.0), m.similarity)
    for k in ("decode_ms", "embed_ms", "index_ms", "total_ms"):
        run.timings[k].append(getattr(r.timings, k))


def read_clusters(client: DedupClient, wanted: set[str], stored: set[str]) -> tuple[dict[str, str], list[str], int]:
    """image -> server cluster id for the images of this run; sanity problems; and how many images
    from outside this run share a cluster with one of its images."""
    cluster_of: dict[str, str] = {}
    problems: list[str] = []
    foreign = 0
    for c in client.list_clusters(min_size=1, page_size=1000):
        if c.size != len(c.members):
            problems.append(f"cluster {c.cluster_id}: size {c.size} but {len(c.members)} members")
        if c.members and c.members[0].image_id != c.representative_id:
            problems.append(f"cluster {c.cluster_id}: first member {c.members[0].image_id} is not the representative {c.representative_id}")
        ours = [m.image_id for m in c.members if m.image_id in wanted]
        if ours:
            foreign += len(c.members) - len(ours)
        for image_id in ours:
            if image_id in cluster_of:
                problems.append(f"{image_id} is in clusters {cluster_of[image_id]} and {c.cluster_id}")
            cluster_of[image_id] = c.cluster_id
    lost = stored - cluster_of.keys()
    if lost:
        problems.append(f"{len(lost)} stored images are in no cluster, e.g. {sorted(lost)[:3]}")
    extra = cluster_of.keys() - stored
    if extra:
        problems.append(f"{len(extra)} images are in clusters but were not acknowledged as stored, e.g. {sorted(extra)[:3]}")
    return cluster_of, problems, foreign


# -- report ---------------------------------------------------------------------------------------
def machine() -> dict:
    return {"nproc": len(os.sched_getaffinity(0)), "cpu_model": cpu_model()}


def percentile(values: list[float], q: float) -> float:
    if not values:
        return float("nan")
    values = sorted(values)
    return values[min(len(values) - 1, int(q * len(values)))]


def fmt_sim(x: float | None, floor: float) -> str:
    return f"<{floor:.2f}" if x is None or x < floor else f"{x:.3f}"


STATUS_NAMES = {c.value[0]: c.name for c in grpc.StatusCode}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], epilog=__doc__.split("\n\n", 1)[1], formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("folder", type=Path, help="folder with images/ and ground_truth.json")
    ap.add_argument("--server", help="HOST:PORT of a running (empty) server; default: start one")
    ap.add_argument("--limit-groups", type=int, help="index only a seeded random subset of N groups")
    ap.add_argument("--seed", type=int, default=0, help="seed of the group subset and of the indexing order (default 0)")
    ap.add_argument("--order", choices=("shuffled", "sorted"), default="shuffled", help="indexing order (default shuffled)")
    ap.add_argument("--threshold", type=float, nargs="+", default=DEFAULT_SWEEP, help="thresholds of the sweep (default 0.30 .. 0.95 by 0.05)")
    ap.add_argument("--match-threshold", type=float, default=0.3, help="per-call threshold while indexing: the lowest similarity recorded (default 0.3)")
    ap.add_argument("--top-k", type=int, default=20, help="matches recorded per image (default 20)")
    ap.add_argument("--target-precision", type=float, default=0.995)
    ap.add_argument("--retries", type=int, default=1, help="re-send images that failed with UNAVAILABLE/RESOURCE_EXHAUSTED this many times (default 1)")
    ap.add_argument("--startup-timeout", type=float, default=300.0, help="seconds to wait for the server to be ready")
    ap.add_argument("--server-log", type=Path, help="keep the self-started server's log here")
    ap.add_argument("--pairs-out", type=Path, help="write the indexing order, every recorded pair and the server's clusters as JSON (for offline studies of matching rules)")
    ap.add_argument("--json-out", type=Path, help="write all numbers to this JSON file")
    args = ap.parse_args(argv)

    if args.limit_groups is not None and args.limit_groups < 1:
        ap.error("--limit-groups must be at least 1")
    low = [t for t in args.threshold if t < args.match_threshold]
    if low:
        ap.error(f"sweep thresholds {low} are below --match-threshold {args.match_threshold}: those pairs are not recorded")

    data = load_dataset(args.folder, args.limit_groups, args.seed)
    order = sorted(data.names)
    if args.order == "shuffled":
        random.Random(args.seed).shuffle(order)

    if args.server:
        results = benchmark(args, data, order, args.server, "given")
    else:
        with OwnServer(args.startup_timeout, keep_log=args.server_log) as server:
            try:
                results = benchmark(args, data, order, server.address, f"self-started, pid {server.proc.pid}")
            except BaseException:
                print(server.log_tail(), file=sys.stderr)
                raise
    print(format_report(results), flush=True)
    if args.json_out:
        args.json_out.parent.mkdir(parents=True, exist_ok=True)
        args.json_out.write_text(json.dumps(results, indent=2) + "\n")
        print(f"wrote {args.json_out}", file=sys.stderr)
    return 1 if results["errors"] or results["problems"] else 0


def benchmark(args: argparse.Namespace, data: Dataset, order: list[str], address: str, how: str) -> dict:
    """Index through the server, read its clusters, and compute every number of the report."""
    with DedupClient(address, timeout=300) as client:
        client.wait_ready(timeout=args.startup_timeout)
        info = client.info()
        default_t = round(info.default_threshold, 6)
        print(f"indexing {len(order)} images through BulkCheck at {address} ...", file=sys.stderr, flush=True)
        idx = index_images(client, data, order, match_threshold=args.match_threshold, top_k=args.top_k, retries=args.retries)
        t0 = time.perf_counter()
        cluster_of, problems, foreign = read_clusters(client, set(order), idx.stored)
        list_s = time.perf_counter() - t0
    if args.pairs_out:
        args.pairs_out.parent.mkdir(parents=True, exist_ok=True)
        pairs = [[a, b, sim] for (a, b), sim in sorted(idx.edges.items())]
        args.pairs_out.write_text(json.dumps({"order": order, "pairs": pairs, "cluster_of": cluster_of}) + "\n")

    # Images the server did not store count as singletons.
    server_pred = {x: cluster_of.get(x, "missing:" + x) for x in data.group_of}
    server_copy = copy_recall(server_pred, data)
    sw = sweep(idx.edges, data, sorted(set(args.threshold) | {default_t}), args.target_precision, default_t, args.match_threshold)
    safe = sw["safe"]
    safe_copy = copy_recall(components_at(idx.edges, data, safe["threshold"]).labels(), data) if safe["threshold"] is not None else {}
    listed_ok = [r["threshold"] for r in sw["rows"] if r["precision"] >= args.target_precision]

    by_edit: dict[str, list[str]] = defaultdict(list)
    for c, e in data.edit_of.items():
        by_edit[e].append(c)
    per_edit: dict[str, dict] = {}
    for e, copies in sorted(by_edit.items()):
        # Copy-original similarity; 0 when the pair was not among the recorded matches.
        sims = [idx.edges.get((min(c, data.original_of[c]), max(c, data.original_of[c])), 0.0) for c in copies]
        per_edit[e] = {
            "copies": len(copies),
            "recall_server": sum(server_copy[c] for c in copies) / len(copies),
            "recall_at_safe_threshold": sum(safe_copy[c] for c in copies) / len(copies) if safe_copy else None,
            "direct_match_at_default": sum(s >= default_t for s in sims) / len(sims),
            "median_similarity": statistics.median(sims),
            "p10_similarity": percentile(sims, 0.10),
        }

    truth = data.group_of
    negatives = sorted(((sim, a, b) for (a, b), sim in idx.edges.items() if truth[a] != truth[b]), reverse=True)

    n = len(order)
    groups = len(set(data.group_of.values()))
    return {
        "folder": str(data.folder),
        "images": n,
        "groups": groups,
        "groups_in_set": data.n_groups_total,
        "limit_groups": args.limit_groups,
        "seed": args.seed,
        "order": args.order,
        "server": {
            "address": address,
            "how": how,
            "model_name": info.model_name,
            "execution_providers": list(info.execution_providers),
            "milvus_backend": info.milvus_backend,
            "version": info.version,
            "default_threshold": default_t,
            "preexisting_images": info.indexed_images,
            "foreign_images_in_clusters": foreign,
        },
        "machine": machine(),
        "elapsed_s": idx.elapsed_s,
        "images_per_s": n / idx.elapsed_s if idx.elapsed_s else 0.0,
        "retry_s": idx.retry_s,
        "list_clusters_s": list_s,
        "timings_ms": {k: {"p50": percentile(v, .5), "p95": percentile(v, .95), "mean": statistics.fmean(v)} for k, v in idx.timings.items() if v},
        "match_threshold": args.match_threshold,
        "top_k": args.top_k,
        "scored_pairs": len(idx.edges),
        "server_clusters": {
            **pairwise_scores(server_pred, data.group_of, data.ignored_group_of),
            **cluster_shape(server_pred),
            "copy_recall": sum(server_copy.values()) / len(server_copy) if server_copy else None,
            "copies_found": sum(server_copy.values()),
            "copies": len(server_copy),
        },
        "per_edit": per_edit,
        "per_source": per_source(server_pred, data),
        "sweep": sw["rows"],
        "target_precision": args.target_precision,
        "smallest_listed_threshold_at_target": min(listed_ok) if listed_ok else None,
        "safe_threshold": safe,
        "local_vs_server_at_default": partition_diff(server_pred, sw["labels_at_default"]),
        "hardest_negatives": [{"similarity": sim, "a": a, "b": b} for sim, a, b in negatives[:10]],
        "first_pass_errors": {k: {"code": STATUS_NAMES.get(c, c), "message": m} for k, (c, m) in idx.first_pass_errors.items()},
        "errors": {k: {"code": STATUS_NAMES.get(c, c), "message": m} for k, (c, m) in idx.errors.items()},
        "problems": idx.oddities + problems,
        "foreign_matches": idx.foreign_matches,
    }


def format_report(r: dict) -> str:
    lines: list[str] = []
    p = lines.append
    srv, mach, sc = r["server"], r["machine"], r["server_clusters"]
    t_def, floor = srv["default_threshold"], r["match_threshold"]
    subset = f"random subset of {r['groups_in_set']} groups, seed {r['seed']}" if r["limit_groups"] else "all groups"
    p("== dedup detection quality, measured through the gRPC API ==")
    p(f"data      {r['folder']}: {r['images']} images in {r['groups']} groups ({subset}), indexing order {r['order']}")
    p(f"server    {srv['address']} ({srv['how']}): {srv['model_name']}, {'/'.join(srv['execution_providers'])}, "
      f"{srv['milvus_backend']}, version {srv['version']}, default threshold {t_def:g}")
    p(f"machine   {mach['nproc']} CPUs, {mach['cpu_model']}")
    retried = f"; retries took {r['retry_s']:.1f} s" if r["first_pass_errors"] else ""
    p(f"indexing  {r['images']} images in {r['elapsed_s']:.1f} s = {r['images_per_s']:.1f} images/s (one BulkCheck stream); "
      f"errors: {len(r['first_pass_errors'])} in the stream, {len(r['errors'])} after retries{retried}; ListClusters {r['list_clusters_s']:.2f} s")
    tm = r["timings_ms"]
    if tm:
        p("latency   per image as the server reports it, under load, ms: "
          + ", ".join(f"{k[:-3]} p50 {tm[k]['p50']:.0f} / p95 {tm[k]['p95']:.0f}" for k in ("decode_ms", "embed_ms", "index_ms", "total_ms")))
    if srv["preexisting_images"]:
        p(f"WARNING   the server already held {srv['preexisting_images']} images; {srv['foreign_images_in_clusters']} of them share clusters with this run and were ignored")
    p("")
    p(f"Server clusters (ListClusters, min_size 1; clustered at the server's threshold {t_def:g})")
    p(f"  {sc['clusters']} clusters: {sc['multi']} with 2+ images, {sc['singletons']} singletons, largest {sc['largest']}")
    p(f"  pairwise precision {sc['precision']:.4f}  recall {sc['recall']:.4f}  F1 {sc['f1']:.4f}   "
      f"({sc['tp_pairs']} correct of {sc['predicted_pairs']} predicted pairs; {sc['true_pairs']} true pairs)")
    if sc["copies"]:
        p(f"  copies in their original's cluster: {sc['copies_found']}/{sc['copies']} = {sc['copy_recall']:.4f}")
    if r["per_edit"]:
        p("")
        p("Recall per edit (copy in its original's cluster). 'server': server clusters; '@safe': local clusters at the safe threshold below;")
        p(f"'direct': the copy-original similarity itself >= {t_def:g}; sim: copy-original cosine (<{floor:.2f}: not among the top {r['top_k']} matches)")
        p(f"  {'edit':<8} {'copies':>6} {'server':>7} {'@safe':>7} {'direct':>7} {'median sim':>10} {'p10 sim':>8}")
        for e, x in r["per_edit"].items():
            at_safe = f"{x['recall_at_safe_threshold']:.3f}" if x["recall_at_safe_threshold"] is not None else "-"
            p(f"  {e:<8} {x['copies']:>6} {x['recall_server']:>7.3f} {at_safe:>7} {x['direct_match_at_default']:>7.3f} "
              f"{fmt_sim(x['median_similarity'], floor):>10} {fmt_sim(x['p10_similarity'], floor):>8}")
    p("")
    p("Per source (server clusters; false pairs: wrong pairs with at least one image of the source)")
    p(f"  {'source':<10} {'groups':>6} {'images':>6} {'pair recall':>11} {'copy recall':>11} {'false pairs':>11}")
    for s, x in r["per_source"].items():
        cr = f"{x['copy_recall']:.3f}" if x["copy_recall"] is not None else "-"
        p(f"  {s:<10} {x['groups']:>6} {x['images']:>6} {x['pair_recall']:>11.3f} {cr:>11} {x['false_pairs']:>11}")
    p("")
    p(f"Threshold sweep: connected components of the {r['scored_pairs']} recorded pairs (similarity >= {floor:g}, top {r['top_k']} per image), no re-indexing")
    p(f"  {'threshold':>9} {'precision':>9} {'recall':>7} {'F1':>7} {'copy rec':>8} {'clusters':>8} {'2+':>5} {'largest':>7}")
    for x in r["sweep"]:
        mark = "  <- server default" if x["threshold"] == t_def else ""
        cr = f"{x['copy_recall']:.4f}" if x["copy_recall"] is not None else "-"
        p(f"  {x['threshold']:>9.3f} {x['precision']:>9.4f} {x['recall']:>7.4f} {x['f1']:>7.4f} {cr:>8} {x['clusters']:>8} {x['multi']:>5} {x['largest']:>7}{mark}")
    target, safe, listed = r["target_precision"], r["safe_threshold"], r["smallest_listed_threshold_at_target"]
    p(f"  smallest listed threshold with precision >= {target}: {listed if listed is not None else 'none'}")
    if safe["threshold"] is None:
        p(f"  precision is below {target} even at the most similar pair")
    else:
        where = (f"precision drops below at similarity {safe['first_failing_similarity']:.4f}" if safe["first_failing_similarity"] is not None
                 else f"it holds all the way down to {floor:g}, the lowest similarity recorded")
        p(f"  safe threshold (smallest t with precision >= {target} at t and every higher t): {safe['threshold']:.4f}; {where}")
        p(f"    at {safe['threshold']:.4f}: precision {safe['precision']:.4f}  recall {safe['recall']:.4f}  F1 {safe['f1']:.4f}")
    d = r["local_vs_server_at_default"]
    p(f"  check: local components at {t_def:g} vs server clusters: {d['only_first']} pairs only in the server's, {d['only_second']} only in the local ones")
    if r["hardest_negatives"]:
        p("  most similar recorded pairs from different groups:")
        for x in r["hardest_negatives"][:5]:
            p(f"    {x['similarity']:.4f}  {x['a']}  {x['b']}")
    if r["first_pass_errors"] or r["errors"] or r["problems"] or r["foreign_matches"]:
        p("")
        p("Problems")
        for (code, msg), count in Counter((e["code"], e["message"]) for e in r["first_pass_errors"].values()).most_common(5):
            p(f"  {count} x in the stream: {code}: {msg}")
        for name, e in list(r["errors"].items())[:10]:
            p(f"  still failing after retries: {name}: {e['code']}: {e['message']}")
        if len(r["errors"]) > 10:
            p(f"  ... and {len(r['errors']) - 10} more")
        for o in r["problems"][:20]:
            p(f"  {o}")
        if r["foreign_matches"]:
            p(f"  {r['foreign_matches']} matches to images outside this run were ignored")
    return "\n".join(lines)


if __name__ == "__main__":
    sys.exit(main())
