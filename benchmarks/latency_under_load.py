"""Unary latency while BulkCheck imports run, and what the imports lose to it (priorities).

    python benchmarks/latency_under_load.py [--images DIR] [--stream-n 1400] [--rounds 2]
                                            [--unary-interval-ms 400] [--idle-n 200] [--server HOST:PORT]

Low-latency unary callers share the server with long BulkCheck imports; unary calls go ahead of
bulk items at every queue (core/priority.py). This measures, on one server:
- unary CheckDuplicate (concurrency 1, check only) on an idle server: p50, p99;
- one BulkCheck stream (stored) alone, then again with a unary caller beside it; the same with
  4 concurrent streams sharing the images: the streams' throughput alone and with the unary
  load, and the unary latency under them;
and prints the ratios against the targets (unary under one stream: p50 <= 3x and p99 <= 4x the
idle server's; the stream keeps >= 90 % of its throughput alone).

The unary caller under load sends one call every --unary-interval-ms (default 400 ms: 2.5 calls
per second; concurrency 1; a call that takes longer delays the next): a low-latency caller, not a
second bulk load. Its own work (its rate x the server CPU of one call on the idle server) is
printed beside the streams' loss: that much the streams lose whatever the scheduling (a caller in
a closed loop, --unary-interval-ms 0, takes a large share). Alone and with the unary caller run
in alternating rounds, so that the machine's drift meets both alike.

Images: dev photos (--images, default ../shared/dedup-bench/dev/originals; scikit-image crops
when absent). The unary calls use photos that are never stored. The streams' photos are stored
once first (not measured), then every measured stream re-sends them with new bytes (a JPEG
comment that differs per phase), so that each phase does the same work: decode, model, a search
that finds the earlier copy, a write; none is an exact duplicate.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import threading
import time
import urllib.request
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _server import cpu_by_thread, cpu_of_children, cpu_of_self, machine, server  # noqa: E402
from throughput import DEFAULT_IMAGES, free_port, load_images, pct  # noqa: E402

from imgdedup._proto.dedup.v1 import dedup_pb2 as pb  # noqa: E402
from imgdedup.client import DedupClient  # noqa: E402

UNARY_PHOTOS = 50
TARGET_P50, TARGET_P99, TARGET_KEEP = 3.0, 4.0, 0.90


def retagged(blob: bytes, tag: str) -> bytes:
    """The same JPEG with a comment segment after SOI: new bytes (a new SHA-256), same pixels."""
    if not blob.startswith(b"\xff\xd8"):
        raise ValueError("not a JPEG")
    body = tag.encode()
    return blob[:2] + b"\xff\xfe" + (len(body) + 2).to_bytes(2, "big") + body + blob[2:]


def stream(target: str, images: list[bytes], phase: str, out: dict) -> None:
    """One BulkCheck stream storing `images` under phase-unique ids and bytes."""
    reqs = (pb.BulkCheckRequest(image_id=f"{phase}-{i}", image=retagged(b, phase), add_to_index=True) for i, b in enumerate(images))
    with DedupClient(target, timeout=None) as client:
        t0 = time.perf_counter()
        errors = sum(r.HasField("error") for r in client.bulk_check(reqs, timeout=3600))
        out.update(seconds=time.perf_counter() - t0, n=len(images), errors=errors)


def streams(target: str, images: list[bytes], count: int, phase: str) -> list[dict]:
    """`count` concurrent streams splitting `images`; each one's result."""
    results = [{} for _ in range(count)]
    threads = [threading.Thread(target=stream, args=(target, images[k::count], f"{phase}s{k}", results[k])) for k in range(count)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return results


def unary_calls(target: str, images: list[bytes], *, interval_s: float, n: int | None = None, stop: threading.Event | None = None) -> list[float]:
    """Check-only calls at concurrency 1, one every interval_s (0: back to back), until n calls
    are made or `stop` is set; returns their latencies in ms."""
    latencies: list[float] = []
    with DedupClient(target) as client:
        next_at = time.perf_counter()
        i = 0
        while (n is None or i < n) and not (stop is not None and stop.is_set()):
            delay = next_at - time.perf_counter()
            if delay > 0:
                if stop is None:
                    time.sleep(delay)
                elif stop.wait(delay):
                    break
            next_at = max(next_at + interval_s, time.perf_counter())
            t = time.perf_counter()
            client.check(images[i % len(images)])
            latencies.append((time.perf_counter() - t) * 1000)
            i += 1
    return latencies


class CpuMeter:
    """CPU seconds over a phase, from /proc (self-started server only): the server's, with its
    Milvus Lite process, and the cores that other processes (not the server, not this
    benchmark) kept busy, which a shared machine takes from the phase."""

    def __init__(self, pid: int | None):
        self.pid = pid
        self._start = self._sample()

    def _sample(self) -> tuple[float, float, float, float] | None:
        if self.pid is None:
            return None
        fields = [int(x) for x in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:9]]
        busy = (sum(fields) - fields[3] - fields[4]) / os.sysconf("SC_CLK_TCK")  # all but idle, iowait
        server_cpu = sum(cpu_by_thread(self.pid).values()) + cpu_of_children(self.pid)
        return time.perf_counter(), busy, server_cpu, cpu_of_self()

    def stop(self) -> tuple[float, float]:
        """(server CPU seconds, other processes' cores) since the start."""
        end = self._sample()
        if self._start is None or end is None:
            return float("nan"), float("nan")
        (t0, busy0, server0, self0), (t1, busy1, server1, self1) = self._start, end
        others = (busy1 - busy0) - (server1 - server0) - (self1 - self0)
        return server1 - server0, max(0.0, others) / (t1 - t0)


def queue_seconds(metrics_url: str | None) -> dict[str, tuple[float, float]]:
    """Per priority: (sum, count) of dedup_embed_queue_seconds so far."""
    if not metrics_url:
        return {}
    text = urllib.request.urlopen(metrics_url, timeout=10).read().decode()
    out: dict[str, list[float]] = {}
    for line in text.splitlines():
        for part, slot in (("_sum{", 0), ("_count{", 1)):
            if line.startswith("dedup_embed_queue_seconds" + part):
                level = line.split('priority="', 1)[1].split('"', 1)[0]
                out.setdefault(level, [0.0, 0.0])[slot] = float(line.rsplit(" ", 1)[1])
    return {k: (v[0], v[1]) for k, v in out.items()}


def phase(target: str, pid: int | None, images: list[bytes], count: int, name: str, metrics_url: str | None, unary: tuple[list[bytes], float] | None) -> dict:
    """Run `count` streams over `images`, with a paced unary caller beside them if `unary`;
    returns totals (combine() adds up the rounds)."""
    before = queue_seconds(metrics_url)
    cpu = CpuMeter(pid)
    latencies: list[float] = []
    stop = threading.Event()
    caller = None
    if unary is not None:
        photos, interval_s = unary
        caller = threading.Thread(target=lambda: latencies.extend(unary_calls(target, photos, interval_s=interval_s, stop=stop)))
        caller.start()
    t0 = time.perf_counter()
    results = streams(target, images, count, name)
    wall = time.perf_counter() - t0
    stop.set()
    if caller is not None:
        caller.join()
    after = queue_seconds(metrics_url)
    queued = {level: (after[level][0] - before.get(level, (0.0, 0.0))[0], after[level][1] - before.get(level, (0.0, 0.0))[1]) for level in after}
    return {"n": sum(r["n"] for r in results), "wall": wall, "streams": [(r["n"], r["seconds"]) for r in results],
            "errors": sum(r["errors"] for r in results), "latencies": latencies, "queued": queued, "others_s": cpu.stop()[1] * wall}


def combine(rounds: list[dict]) -> dict:
    """The rounds of one configuration as one measurement."""
    wall = sum(r["wall"] for r in rounds)

    def queue_ms(level: str) -> float:
        total, n = (sum(r["queued"].get(level, (0.0, 0.0))[k] for r in rounds) for k in (0, 1))
        return total / n * 1000 if n else float("nan")

    latencies = [x for r in rounds for x in r["latencies"]]
    return {
        "ips": sum(r["n"] for r in rounds) / wall,
        "per_stream": [sum(r["streams"][k][0] for r in rounds) / sum(r["streams"][k][1] for r in rounds) for k in range(len(rounds[0]["streams"]))],
        "errors": sum(r["errors"] for r in rounds),
        "latencies": latencies,
        "unary_ips": len(latencies) / wall,
        "queue_high_ms": queue_ms("high"),
        "queue_low_ms": queue_ms("low"),
        "others": sum(r["others_s"] for r in rounds) / wall,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--images", type=Path, default=DEFAULT_IMAGES)
    parser.add_argument("--stream-n", type=int, default=1400, help="photos the streams send, per configuration (1 or 4 streams) and mode (alone, with unary calls)")
    parser.add_argument("--rounds", type=int, default=2, help="alternating rounds of alone / with unary calls, the photos split between them")
    parser.add_argument("--idle-n", type=int, default=200, help="unary calls on the idle server")
    parser.add_argument("--unary-interval-ms", type=float, default=400.0, help="one unary call every this many ms under load (0: back to back)")
    parser.add_argument("--server", help="use a running server instead of starting one (no queue times then)")
    args = parser.parse_args()

    images = load_images(args.images, args.stream_n + UNARY_PHOTOS)
    if not all(b.startswith(b"\xff\xd8") for b in images):
        raise SystemExit("the streams re-send photos with a JPEG comment: give a folder of JPEGs")
    unary_photos, stream_photos = images[:UNARY_PHOTOS], images[UNARY_PHOTOS:]
    interval_s = args.unary_interval_ms / 1000
    print(f"machine: {machine()}")
    print(f"images: {len(images)} from {args.images if args.images.is_dir() else 'scikit-image crops'} "
          f"({len(stream_photos)} for the streams, {len(unary_photos)} for unary calls, never stored), "
          f"mean {statistics.mean(map(len, images)) / 1024:.0f} KiB")

    metrics_port = None if args.server else free_port()
    metrics_url = f"http://127.0.0.1:{metrics_port}/metrics" if metrics_port else None
    with server(args.server, *(("--metrics-port", str(metrics_port)) if metrics_port else ())) as (target, pid):
        with DedupClient(target) as client:
            client.wait_ready()
        t0 = time.perf_counter()
        primed = streams(target, stream_photos, 1, "prime")[0]
        print(f"priming (not measured): {primed['n']} photos stored in {time.perf_counter() - t0:.1f} s; "
              f"each phase below re-sends them with new bytes")
        unary_calls(target, unary_photos, interval_s=0, n=20)  # warm-up
        cpu = CpuMeter(pid)
        idle = unary_calls(target, unary_photos, interval_s=0, n=args.idle_n)
        idle_cpu, idle_others = cpu.stop()
        rows = {}
        for count in (1, 4):
            # Alone and with unary calls in alternating rounds, so that a drift of the
            # machine's speed meets both alike.
            measured: dict[bool, list[dict]] = {False: [], True: []}
            for r in range(args.rounds):
                chunk = stream_photos[r::args.rounds]
                measured[False].append(phase(target, pid, chunk, count, f"alone{count}r{r}-", metrics_url, None))
                measured[True].append(phase(target, pid, chunk, count, f"unary{count}r{r}-", metrics_url, (unary_photos, interval_s)))
            rows[count, False], rows[count, True] = combine(measured[False]), combine(measured[True])

    idle_p50, idle_p99 = pct(idle, 50), pct(idle, 99)
    pace = f"one call every {args.unary_interval_ms:g} ms" if interval_s else "back to back"
    print(f"\nunary CheckDuplicate, concurrency 1, check only (idle: back to back; under load: {pace}):")
    print(f"  {'':<26} {'calls':>5} {'p50 ms':>7} {'p99 ms':>7} {'p50 x idle':>10} {'p99 x idle':>10} {'model queue ms (high / low)':>28} {'others':>6}")
    print(f"  {'idle server':<26} {len(idle):5d} {idle_p50:7.1f} {idle_p99:7.1f} {'':>10} {'':>10} {'':>28} {idle_others:6.2f}")
    for count in (1, 4):
        r = rows[count, True]
        lat = r["latencies"]
        print(f"  {f'under {count} BulkCheck stream' + ('s' if count > 1 else ''):<26} {len(lat):5d} {pct(lat, 50):7.1f} {pct(lat, 99):7.1f} "
              f"{pct(lat, 50) / idle_p50:10.2f} {pct(lat, 99) / idle_p99:10.2f} {f'{r["queue_high_ms"]:.1f} / {r["queue_low_ms"]:.1f}':>28} {r['others']:6.2f}")

    print(f"\nBulkCheck, stored, {len(stream_photos)} images per row and mode, in {args.rounds} alternating rounds (4 streams: a quarter each):")
    print(f"  {'':<10} {'alone img/s':>11} {'with unary img/s':>16} {'kept':>6} {'unary img/s':>11} {'per stream img/s (with unary)':>30} {'others':>11} {'errors':>6}")
    for count in (1, 4):
        alone, loaded = rows[count, False], rows[count, True]
        spread = " / ".join(f"{x:.1f}" for x in loaded["per_stream"])
        print(f"  {f'{count} stream' + ('s' if count > 1 else ''):<10} {alone['ips']:11.1f} {loaded['ips']:16.1f} {loaded['ips'] / alone['ips']:6.1%} "
              f"{loaded['unary_ips']:11.1f} {spread:>30} {f'{alone["others"]:.2f} / {loaded["others"]:.2f}':>11} {alone['errors'] + loaded['errors']:6d}")

    print("  others: cores that other processes on this machine kept busy meanwhile (alone / with unary)")

    one = rows[1, True]
    p50x, p99x = pct(one["latencies"], 50) / idle_p50, pct(one["latencies"], 99) / idle_p99
    kept = one["ips"] / rows[1, False]["ips"]

    def verdict(ok: bool) -> str:
        return "met" if ok else "MISSED"

    print("\ntargets (unary under one saturating stream; measured above):")
    print(f"  p50 <= {TARGET_P50:g}x idle: {p50x:.2f}x  {verdict(p50x <= TARGET_P50)}")
    print(f"  p99 <= {TARGET_P99:g}x idle: {p99x:.2f}x  {verdict(p99x <= TARGET_P99)}")
    share = one["unary_ips"] * idle_cpu / len(idle) / (os.cpu_count() or 1)
    print(f"  stream keeps >= {TARGET_KEEP:.0%} of its throughput alone: {kept:.1%}  {verdict(kept >= TARGET_KEEP)}")
    print(f"  (the unary calls' own work: {one['unary_ips']:.1f} calls/s x {idle_cpu / len(idle) * 1000:.0f} ms of server CPU each "
          f"(idle server) = {share:.1%} of the {os.cpu_count()} cores)")


if __name__ == "__main__":
    main()
