"""`dedup serve --workers 2`: two front processes on one port over the parent's index writer.

The whole suite also runs with every server so started (run.sh test's workers pass); these tests
look at the processes themselves: both fronts take connections and do the work, a copy is
found on any connection right after another stored its original, a front killed with -9 is
started again without losing an acknowledged image, and SIGTERM ends every process."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import grpc
import pytest

from conftest import ServerProcess, check, encode, rgb, wait_until
from imgdedup._proto.dedup.v1 import dedup_pb2 as pb
from imgdedup._proto.dedup.v1 import dedup_pb2_grpc as pb_grpc
from imgdedup.logs import announce
from test_reliability import _assert_consistent, _stream_requests

pytestmark = pytest.mark.single_process

PHOTOS = ("astronaut", "coffee", "rocket", "chelsea", "camera", "retina")


def _connection(target: str) -> grpc.Channel:
    """A channel with a TCP connection of its own (gRPC shares them between equal channels),
    so the kernel picks a front for it."""
    return grpc.insecure_channel(target, options=[("grpc.use_local_subchannel_pool", 1), ("grpc.max_send_message_length", 64 << 20)])


def _fronts(parent: int) -> list[int]:
    pids = subprocess.run(["pgrep", "-P", str(parent)], capture_output=True, text=True).stdout.split()
    return [int(p) for p in pids if "spawn_main" in _cmdline(int(p))]


def _cmdline(pid: int) -> str:
    """A process's command line; "" once it is gone (a killed front can be reaped between
    pgrep listing it and this read)."""
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().decode(errors="replace")
    except FileNotFoundError:
        return ""


def _connections(fronts: list[int], port: int) -> dict[int, int]:
    """Established TCP connections to `port` that each front holds (from /proc)."""
    inodes = set()
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        for line in Path(table).read_text().splitlines()[1:]:
            fields = line.split()
            if fields[3] == "01" and int(fields[1].rsplit(":", 1)[1], 16) == port:  # ESTABLISHED
                inodes.add(fields[9])
    held = {}
    for pid in fronts:
        links = []
        for fd in os.listdir(f"/proc/{pid}/fd"):
            try:
                links.append(os.readlink(f"/proc/{pid}/fd/{fd}"))
            except OSError:
                continue
        held[pid] = sum(1 for link in links if link.startswith("socket:[") and link[8:-1] in inodes)
    return held


@pytest.fixture
def workers(tmp_path):
    srv = ServerProcess(tmp_path, "--workers", "2").start()
    try:
        yield srv
    finally:
        assert srv.stop() == 0


def test_both_fronts_serve_one_index(workers):
    fronts = _fronts(workers.proc.pid)
    assert len(fronts) == 2, fronts
    channels = [_connection(workers.target) for _ in range(16)]
    try:
        stubs = [pb_grpc.DedupServiceStub(c) for c in channels]
        for stub in stubs:  # every connection sees the same (empty) index
            assert stub.GetInfo(pb.GetInfoRequest()).indexed_images == 0
        # Sixteen connections, hashed by the kernel: both fronts hold some (all on one: 2^-15).
        held = _connections(fronts, workers.port)
        assert sum(held.values()) == 16 and all(n > 0 for n in held.values()), held
        for n, name in enumerate(PHOTOS):
            img = rgb(name)
            stored = check(stubs[n], encode(img), image_id=name, add=True)
            for other in stubs:  # on every connection, so on both fronts, at once
                copy = check(other, encode(img[::2, ::2].copy(), quality=70))
                assert copy.is_duplicate and copy.matches[0].image_id == name and copy.matches[0].cluster_id == stored.cluster_id
                # The same bytes: exact on both fronts at once, whether a front's copy of the
                # writer's digest set already holds them or the writer confirms them.
                same = check(other, encode(img))
                assert same.exact_duplicate and same.matches[0].image_id == name
        streams = [threading.Thread(target=lambda s=s, k=k: list(s.BulkCheck(
            (pb.BulkCheckRequest(image_id=f"s{k}-{r.image_id}", image=r.image, add_to_index=True) for r in _stream_requests(8)), timeout=300)))
            for k, s in enumerate(stubs)]
        for t in streams:
            t.start()
        for t in streams:
            t.join(300)
        _assert_consistent(stubs[0], {f"s{k}-img-{i}" for k in range(16) for i in range(8)})
    finally:
        for c in channels:
            c.close()


def test_a_front_killed_with_9_is_started_again_and_no_acknowledged_image_is_lost(workers):
    fronts = _fronts(workers.proc.pid)
    acked: set[str] = set()
    lock = threading.Lock()
    killed = threading.Event()
    errors: list[str] = []  # what the streams met, for the failure message

    def stream(k: int) -> None:
        with _connection(workers.target) as channel:
            try:
                for r in pb_grpc.DedupServiceStub(channel).BulkCheck(
                        (pb.BulkCheckRequest(image_id=f"k{k}-{r.image_id}", image=r.image, add_to_index=True) for r in _stream_requests(30)), timeout=300):
                    with lock:
                        if r.WhichOneof("outcome") == "result" and r.result.stored:
                            acked.add(r.image_id)
                            if len(acked) >= 16 and not killed.is_set():
                                killed.set()
                                os.kill(fronts[0], signal.SIGKILL)
                        elif r.WhichOneof("outcome") == "error":
                            errors.append(f"{r.image_id}: {r.error.code} {r.error.message}")
            except grpc.RpcError as exc:  # the stream whose front died
                with lock:
                    errors.append(f"stream {k}: {exc.code().name} {exc.details()}")
                assert exc.code() in (grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.UNKNOWN, grpc.StatusCode.CANCELLED), exc

    threads = [threading.Thread(target=stream, args=(k,)) for k in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(300)
    assert killed.is_set() and len(acked) >= 16, (len(acked), errors[:8], "".join(workers.output[-20:]))
    assert wait_until(lambda: len(_fronts(workers.proc.pid)) == 2 and fronts[0] not in _fronts(workers.proc.pid), timeout=120)
    assert any("exited with -9; starting it again" in line for line in workers.output)
    time.sleep(3)  # the new front loads its model; connections meanwhile go to the other
    channels = [_connection(workers.target) for _ in range(6)]
    try:
        stubs = [pb_grpc.DedupServiceStub(c) for c in channels]
        for stub in stubs:
            assert check(stub, encode(rgb("coffee"), quality=77)).is_duplicate
        _assert_consistent(stubs[0], acked)
    finally:
        for c in channels:
            c.close()


def test_sigterm_stops_every_process(tmp_path):
    srv = ServerProcess(tmp_path, "--workers", "2").start()
    everyone = _fronts(srv.proc.pid) + [int(p) for p in subprocess.run(["pgrep", "-P", str(srv.proc.pid)], capture_output=True, text=True).stdout.split()]
    with _connection(srv.target) as channel:
        assert check(pb_grpc.DedupServiceStub(channel), encode(rgb("rocket")), image_id="r", add=True).stored
    assert srv.stop() == 0

    def left() -> list[str]:
        out = []
        for p in everyone:
            try:
                if Path(f"/proc/{p}/stat").read_text().rsplit(")", 1)[1].split()[0] != "Z":
                    out.append(Path(f"/proc/{p}/cmdline").read_bytes().decode(errors="replace"))
            except OSError:  # gone
                pass
        return out

    # The fronts, Milvus Lite and multiprocessing's resource tracker end with the parent (the
    # tracker a moment after: when it sees the parent's end of its pipe close).
    assert wait_until(lambda: not left(), timeout=10), left()
    again = ServerProcess(tmp_path, "--workers", "2").start()  # the data survives
    try:
        with _connection(again.target) as channel:
            assert check(pb_grpc.DedupServiceStub(channel), encode(rgb("rocket"))).exact_duplicate
    finally:
        assert again.stop() == 0


def test_the_lines_clients_read_are_written_whole(monkeypatch):
    """The parent's "listening on" line and its newline in one write: print() wrote them apart
    (stdout unbuffered), and a front's log line once landed between them, so the port read
    back was "<port>2026" (the log line's year) and the tests dialled a port that wrapped."""
    writes: list[str] = []

    class Recorder:
        def write(self, text: str) -> int:
            writes.append(text)
            return len(text)

        def flush(self) -> None:
            pass

    monkeypatch.setattr(sys, "stdout", Recorder())
    announce("dedup server listening on 127.0.0.1:41445")
    announce("dedup server ready (2 workers)")
    assert writes == ["dedup server listening on 127.0.0.1:41445\n", "dedup server ready (2 workers)\n"]
