"""What a namespace at its rate quota costs the other namespaces (core/quotas.py).

    python benchmarks/quotas.py [--images DIR] [--stream-n 400] [--rounds 2] [--rate 1]
                                [--noisy-clients 4]

One server (started here, real model) with `images_per_second = --rate` for the namespace
`noisy` and no limit for `quiet`. A BulkCheck stream in `quiet` stores --stream-n photos, in
three modes, alternating over --rounds rounds so the machine's drift meets all alike:
- alone;
- beside `noisy` at its limit: --noisy-clients callers check photos back to back, and when
  refused wait the RetryInfo delay (a client that honours the quota);
- beside `noisy` flooding: the same callers never wait (refused calls come straight back).
It prints the stream's throughput in each mode and what it kept, and `noisy`'s accepted and
refused calls per second. The target: the namespace at its limit costs the others < 10 % of
their throughput. The accepted `noisy` checks do real work (decode, model, search) that the
stream loses whatever the scheduling: printed beside it (rate x the stream's time per image).

    python benchmarks/quotas.py --shared [--seconds 20] [--rate 5] [--noisy-clients 4]

instead measures how one rate holds across processes (core/rate_shares.py): --noisy-clients
polite callers (they wait RetryInfo's delay) in `noisy` for --seconds each against one process,
`--workers 2` reached on one connection, `--workers 2` on a connection per caller, and two
replicas (one the writer, the other its front) with the callers split between them; it prints
the accepted checks per second against the quota.

Images: dev photos (--images, default ../shared/dedup-bench/dev/originals; scikit-image crops
when absent). The stream's photos are stored once first (not measured); each measured stream
re-sends them with new bytes (a JPEG comment per phase), so every phase does the same work.
"""

from __future__ import annotations

import argparse
import socket
import statistics
import sys
import tempfile
import threading
import time
from pathlib import Path

import grpc
from google.rpc import error_details_pb2
from grpc_status import rpc_status

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _server import machine, server  # noqa: E402
from latency_under_load import retagged  # noqa: E402
from throughput import DEFAULT_IMAGES, load_images  # noqa: E402

from imgdedup._proto.dedup.v1 import dedup_pb2 as pb  # noqa: E402
from imgdedup._proto.dedup.v1 import dedup_pb2_grpc as pb_grpc  # noqa: E402
from imgdedup.client import DedupClient  # noqa: E402

NOISY_PHOTOS = 40
TARGET_KEEP = 0.90


def stream(target: str, images: list[bytes], phase: str) -> tuple[float, int]:
    """One BulkCheck stream in `quiet` storing `images` under phase-unique ids and bytes:
    (seconds, errors)."""
    reqs = (pb.BulkCheckRequest(image_id=f"{phase}-{i}", image=retagged(b, phase), add_to_index=True, namespace="quiet") for i, b in enumerate(images))
    with DedupClient(target, timeout=None) as client:
        t0 = time.perf_counter()
        errors = sum(r.HasField("error") for r in client.bulk_check(reqs, timeout=3600))
        return time.perf_counter() - t0, errors


def retry_delay(exc: grpc.RpcError) -> float | None:
    status = rpc_status.from_call(exc)
    for d in status.details if status else ():
        if d.Is(error_details_pb2.RetryInfo.DESCRIPTOR):
            info = error_details_pb2.RetryInfo()
            d.Unpack(info)
            return info.retry_delay.ToTimedelta().total_seconds()
    return None


def noisy_caller(target: str, photos: list[bytes], polite: bool, stop: threading.Event, counts: dict) -> None:
    """Checks in `noisy` back to back until `stop`; refused ones wait RetryInfo's delay if polite."""
    with DedupClient(target, namespace="noisy") as client:
        i = 0
        while not stop.is_set():
            try:
                client.check(photos[i % len(photos)])
                counts["accepted"] += 1
            except grpc.RpcError as exc:
                if exc.code() != grpc.StatusCode.RESOURCE_EXHAUSTED:
                    raise
                counts["refused"] += 1
                if polite:
                    stop.wait(retry_delay(exc) or 0.1)
            i += 1


def phase(target: str, images: list[bytes], name: str, noisy: tuple[list[bytes], int, bool] | None) -> dict:
    stop = threading.Event()
    counts = {"accepted": 0, "refused": 0}
    callers = []
    if noisy is not None:
        photos, clients, polite = noisy
        # Each caller its own counts (no shared increments), added up after.
        shares = [{"accepted": 0, "refused": 0} for _ in range(clients)]
        callers = [threading.Thread(target=noisy_caller, args=(target, photos, polite, stop, shares[k])) for k in range(clients)]
        for t in callers:
            t.start()
        time.sleep(0.5)  # let them reach their steady state (the bucket's burst spent)
    seconds, errors = stream(target, images, name)
    stop.set()
    for t in callers:
        t.join()
    if noisy is not None:
        counts = {k: sum(s[k] for s in shares) for k in counts}
    return {"n": len(images), "seconds": seconds, "errors": errors, **counts}


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def flood(targets: list[str], photos: list[bytes], clients: int, seconds: float, one_channel: bool) -> dict:
    """Polite callers in `noisy`, spread over `targets` in turns, for `seconds`: accepted and
    refused checks per second, and the accepted ones per target. `one_channel`: the callers of a
    target share one connection; else each has its own (gRPC would otherwise share one
    connection between channels to the same address: a local subchannel pool each)."""
    stop = threading.Event()
    counts = [{"accepted": 0, "refused": 0} for _ in range(clients)]

    def caller(k: int, stub: pb_grpc.DedupServiceStub) -> None:
        i = k
        while not stop.is_set():
            try:
                stub.CheckDuplicate(pb.CheckDuplicateRequest(image=photos[i % len(photos)], namespace="noisy"), timeout=60)
                counts[k]["accepted"] += 1
            except grpc.RpcError as exc:
                if exc.code() != grpc.StatusCode.RESOURCE_EXHAUSTED:
                    raise
                counts[k]["refused"] += 1
                stop.wait(retry_delay(exc) or 0.1)
            i += 1

    options = [("grpc.max_send_message_length", 64 << 20)]
    shared_channels = {t: grpc.insecure_channel(t, options=options) for t in targets} if one_channel else {}
    channels = [shared_channels[targets[k % len(targets)]] if one_channel
                else grpc.insecure_channel(targets[k % len(targets)], options=[*options, ("grpc.use_local_subchannel_pool", 1)])
                for k in range(clients)]
    threads = [threading.Thread(target=caller, args=(k, pb_grpc.DedupServiceStub(c))) for k, c in enumerate(channels)]
    t0 = time.perf_counter()
    for t in threads:
        t.start()
    stop.wait(seconds)
    stop.set()
    for t in threads:
        t.join()
    elapsed = time.perf_counter() - t0
    for c in {id(c): c for c in channels}.values():
        c.close()
    per_target = {t: sum(counts[k]["accepted"] for k in range(clients) if targets[k % len(targets)] == t) / elapsed for t in targets}
    return {"accepted": sum(c["accepted"] for c in counts) / elapsed, "refused": sum(c["refused"] for c in counts) / elapsed, "per_target": per_target}


def shared(args, photos: list[bytes]) -> None:
    """--shared: one namespace's rate against one process, two fronts and two replicas."""
    print(f"noisy: {args.noisy_clients} polite callers, quota {args.rate:g} images/s (burst the same), {args.seconds:g} s per setup")
    print(f"  {'setup':<42} {'accepted/s':>10} {'x quota':>8} {'refused/s':>9}  accepted/s by process")
    with tempfile.TemporaryDirectory(prefix="dedup-quota-") as tmp:
        config = Path(tmp) / "dedup.toml"
        config.write_text(f"[quotas.noisy]\nimages_per_second = {args.rate}\nburst = {max(1.0, args.rate)}\n")
        setups = [("one process", ["--workers", "1"], True), ("--workers 2, one connection", ["--workers", "2"], True),
                  ("--workers 2, a connection per caller", ["--workers", "2"], False)]
        for name, extra, one_channel in setups:
            with server(None, "--config", str(config), *extra) as (target, _pid):
                with DedupClient(target) as client:
                    client.wait_ready()
                row = flood([target], photos, args.noisy_clients, args.seconds, one_channel)
            print(f"  {name:<42} {row['accepted']:10.2f} {row['accepted'] / args.rate:8.2f} {row['refused']:9.1f}")
        port = _free_port()
        with server(None, "--config", str(config), "--workers", "1", "--writer-listen", f"127.0.0.1:{port}") as (a, _):
            with server(None, "--config", str(config), "--workers", "1", "--writer", f"127.0.0.1:{port}") as (b, _):
                for t in (a, b):
                    with DedupClient(t) as client:
                        client.wait_ready()
                row = flood([a, b], photos, args.noisy_clients, args.seconds, False)
        split = " + ".join(f"{v:.2f}" for v in row["per_target"].values())
        print(f"  {'two replicas, callers split between them':<42} {row['accepted']:10.2f} {row['accepted'] / args.rate:8.2f} {row['refused']:9.1f}  {split}")
    print("\nthe quota holds across processes when every row is ~1.00 x quota (each process may hold one token more at first)")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--images", type=Path, default=DEFAULT_IMAGES)
    parser.add_argument("--stream-n", type=int, default=400, help="photos the quiet stream sends per mode")
    parser.add_argument("--rounds", type=int, default=2, help="alternating rounds of the three modes, the photos split between them")
    parser.add_argument("--rate", type=float, default=1.0, help="the noisy namespace's images_per_second (burst: the same)")
    parser.add_argument("--noisy-clients", type=int, default=4, help="concurrent callers in the noisy namespace")
    parser.add_argument("--shared", action="store_true", help="measure how one rate holds across fronts and replicas instead (see above)")
    parser.add_argument("--seconds", type=float, default=20.0, help="--shared: seconds of calls per setup")
    args = parser.parse_args()
    if args.shared:
        print(f"machine: {machine()}")
        shared(args, load_images(args.images, NOISY_PHOTOS))
        return

    images = load_images(args.images, args.stream_n + NOISY_PHOTOS)
    if not all(b.startswith(b"\xff\xd8") for b in images):
        raise SystemExit("the stream re-sends photos with a JPEG comment: give a folder of JPEGs")
    noisy_photos, stream_photos = images[:NOISY_PHOTOS], images[NOISY_PHOTOS:]
    print(f"machine: {machine()}")
    print(f"images: {len(stream_photos)} for the quiet stream, {len(noisy_photos)} for the noisy callers "
          f"(never stored), mean {statistics.mean(map(len, images)) / 1024:.0f} KiB")
    modes = {"alone": None, "noisy at its limit": True, "noisy flooding": False}
    with tempfile.TemporaryDirectory(prefix="dedup-quota-") as tmp:
        config = Path(tmp) / "dedup.toml"
        config.write_text(f"[quotas.noisy]\nimages_per_second = {args.rate}\nburst = {max(1.0, args.rate)}\n")
        with server(None, "--config", str(config)) as (target, _pid):
            with DedupClient(target) as client:
                client.wait_ready()
            t0 = time.perf_counter()
            stream(target, stream_photos, "prime")
            print(f"priming (not measured): {len(stream_photos)} photos stored in {time.perf_counter() - t0:.1f} s")
            measured: dict[str, list[dict]] = {m: [] for m in modes}
            for r in range(args.rounds):
                chunk = stream_photos[r::args.rounds]
                for mode, polite in modes.items():
                    noisy = None if polite is None else (noisy_photos, args.noisy_clients, polite)
                    measured[mode].append(phase(target, chunk, f"{mode.split()[-1]}r{r}", noisy))

    print(f"\nquiet: one BulkCheck stream, stored, {len(stream_photos)} photos per mode in {args.rounds} rounds; "
          f"noisy: {args.noisy_clients} unary callers, quota {args.rate:g} images/s")
    print(f"  {'mode':<20} {'quiet img/s':>11} {'kept':>7} {'noisy accepted/s':>16} {'noisy refused/s':>15} {'errors':>6}")
    rows = {}
    for mode, results in measured.items():
        secs = sum(x["seconds"] for x in results)
        rows[mode] = {
            "ips": sum(x["n"] for x in results) / secs,
            "accepted": sum(x["accepted"] for x in results) / secs,
            "refused": sum(x["refused"] for x in results) / secs,
            "errors": sum(x["errors"] for x in results),
        }
    alone = rows["alone"]["ips"]
    for mode, row in rows.items():
        print(f"  {mode:<20} {row['ips']:11.1f} {row['ips'] / alone:7.1%} {row['accepted']:16.2f} {row['refused']:15.1f} {row['errors']:6d}")
    print("\ntarget: a namespace at its rate limit costs the others < 10 % of their throughput")
    for mode in ("noisy at its limit", "noisy flooding"):
        row = rows[mode]
        cost = 1 - row["ips"] / alone
        own = row["accepted"] / alone  # its accepted checks' own work, in the stream's time per image
        print(f"  {mode}: cost {cost:.1%} ({'met' if cost < 1 - TARGET_KEEP else 'MISSED'}); "
              f"of which its accepted checks' own work ~{own:.1%} ({row['accepted']:.2f}/s x 1/{alone:.1f} s)")


if __name__ == "__main__":
    main()
