"""`dedup serve --decode-processes`: images decoded in processes of their own (core/decoding.py).

The server answers as with decoding threads (copies found, views matched, bad images refused
with their reason, a stream's order kept); a decoding process killed while idle fails no image
(it is started again when next needed), one killed while it decodes fails that image alone
with UNAVAILABLE and RetryInfo; and the
processes end with the server, a kill -9 of it included, and their shared memory is removed.
The decoder itself gives the same model inputs as decoding in the thread, through its shared
blocks and through the pipe for bytes and inputs too large for them."""

from __future__ import annotations

import os
import signal
import threading
import time
from pathlib import Path

import cv2
import grpc
import numpy as np
import pytest
from google.rpc import error_details_pb2, status_pb2

from conftest import ServerProcess, channel_for, check, encode, rgb, wait_until
from imgdedup._proto.dedup.v1 import dedup_pb2 as pb
from imgdedup._proto.dedup.v1 import dedup_pb2_grpc as pb_grpc

pytestmark = [pytest.mark.single_process, pytest.mark.store_neutral]

PHOTOS = ("astronaut", "coffee", "rocket", "chelsea")


def _decoders(server_pid: int) -> dict[int, str]:
    """The server's decoding processes: pid -> OS name (decoder_0, decoder-low_1, ...)."""
    out = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            fields = Path(f"/proc/{entry}/stat").read_text().rsplit(")", 1)[1].split()
            name = Path(f"/proc/{entry}/comm").read_text().strip()
        except OSError:  # ended meanwhile
            continue
        if int(fields[1]) == server_pid and name.startswith("decoder") and fields[0] != "Z":
            out[int(entry)] = name
    return out


def _cpu_ticks(pid: int) -> int:
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return -1
    return int(fields[11]) + int(fields[12])


@pytest.fixture(scope="module")
def srv(tmp_path_factory):
    server = ServerProcess(tmp_path_factory.mktemp("dedup-data"), "--decode-processes", "--decode-workers", "2").start()
    yield server
    server.stop()


def test_answers_as_with_threads(srv):
    decoders = _decoders(srv.proc.pid)
    assert sorted(decoders.values()) == ["decoder-low_0", "decoder-low_1", "decoder_0", "decoder_1"]
    with channel_for(srv.target) as channel:
        stub = pb_grpc.DedupServiceStub(channel)
        # A stream (bulk: the niced processes) stores the photos and a copy of the first, in order.
        items = [pb.BulkCheckRequest(image_id=name, image=encode(rgb(name)), add_to_index=True) for name in PHOTOS]
        items.append(pb.BulkCheckRequest(image_id="astronaut-copy", image=encode(cv2.resize(rgb("astronaut"), (400, 400)), quality=70), add_to_index=True))
        items.append(pb.BulkCheckRequest(image_id="broken", image=encode(rgb("coffee"))[:5000], add_to_index=True))
        png = bytearray(encode(rgb("coffee"), ".png"))
        png[200:-100] = bytes(len(png) - 300)  # its header intact, its pixel data zeroed: refused by the decoding process
        items.append(pb.BulkCheckRequest(image_id="corrupt", image=bytes(png), add_to_index=True))
        replies = list(stub.BulkCheck(iter(items), timeout=120))
        assert [r.index for r in replies] == list(range(len(items)))
        assert all(not r.HasField("error") for r in replies[:5])
        assert [m.image_id for m in replies[4].result.matches][:1] == ["astronaut"]
        assert replies[5].error.code == grpc.StatusCode.INVALID_ARGUMENT.value[0] and "truncated" in replies[5].error.message
        assert replies[6].error.code == grpc.StatusCode.INVALID_ARGUMENT.value[0] and _reason(replies[6].error) == "CORRUPT_IMAGE"
        # A unary check (the high-priority processes): a padded copy is found through its content view.
        padded = cv2.copyMakeBorder(cv2.resize(rgb("rocket"), (300, 200)), 150, 150, 150, 150, cv2.BORDER_CONSTANT, value=(255, 255, 255))
        answer = check(stub, encode(padded))
        assert answer.is_duplicate and answer.matches[0].image_id == "rocket"
        with pytest.raises(grpc.RpcError) as refused:
            check(stub, b"GIF89a" + b"\0" * 64)
        assert refused.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert _decoders(srv.proc.pid) == decoders  # none ended


def test_process_killed_while_idle_costs_nothing(srv):
    before = _decoders(srv.proc.pid)
    for pid in before:
        os.kill(pid, signal.SIGKILL)
    assert wait_until(lambda: not set(before) & set(_decoders(srv.proc.pid)), 10)
    with channel_for(srv.target) as channel:
        stub = pb_grpc.DedupServiceStub(channel)
        answer = check(stub, encode(cv2.resize(rgb("chelsea"), (300, 200)), quality=80))  # unary: a high-priority process
        assert answer.matches and answer.matches[0].image_id == "chelsea"
        replies = list(stub.BulkCheck(iter([pb.BulkCheckRequest(image_id="coffee-copy", image=encode(rgb("coffee"), quality=60))]), timeout=60))
        assert not replies[0].HasField("error") and replies[0].result.matches[0].image_id == "coffee"
    after = _decoders(srv.proc.pid)  # started again when next needed: one of each level
    assert not set(before) & set(after)
    assert sorted(name.rsplit("_", 1)[0] for name in after.values()) == ["decoder", "decoder-low"]
    assert "decoding process decoder_" in "".join(srv.output) and "had ended" in "".join(srv.output)


def _slow_image() -> bytes:
    """A 7,000 x 7,000 PNG (few bytes, smooth): ~0.3-1 s to decode, a whole-size decode (PNG has
    no reduced decoding) and the views' tests on 49 megapixels."""
    y, x = np.mgrid[0:7000, 0:7000]
    img = np.dstack([(x // 28) % 256, (y // 28) % 256, ((x + y) // 55) % 256]).astype(np.uint8)
    ok, buf = cv2.imencode(".png", img, [cv2.IMWRITE_PNG_COMPRESSION, 1])
    assert ok
    return buf.tobytes()


def test_process_killed_while_decoding_fails_that_image_only(srv):
    """The one fault here is a real one: the decoding process is sent SIGKILL while it works
    (seen by its CPU time growing). If the kill comes too late (the decode was done), the
    attempt is repeated, up to three times."""
    slow = _slow_image()
    with channel_for(srv.target) as channel:
        stub = pb_grpc.DedupServiceStub(channel)
        for attempt in range(3):
            busy = {pid: _cpu_ticks(pid) for pid, name in _decoders(srv.proc.pid).items() if not name.startswith("decoder-low")}
            outcome: list = []
            caller = threading.Thread(target=lambda: outcome.append(_call(stub, slow)))
            caller.start()
            killed = None
            deadline = time.monotonic() + 30
            while killed is None and time.monotonic() < deadline and caller.is_alive():
                for pid, ticks in busy.items():
                    if _cpu_ticks(pid) > ticks:
                        os.kill(pid, signal.SIGKILL)
                        killed = pid
                        break
                time.sleep(0.005)
            caller.join(60)
            if killed is not None and isinstance(outcome[0], grpc.RpcError):
                break
        error = outcome[0]
        assert isinstance(error, grpc.RpcError), f"no decode was caught in the act in 3 attempts: {outcome}"
        assert error.code() == grpc.StatusCode.UNAVAILABLE and "retry" in error.details()
        status = status_pb2.Status.FromString(dict(error.trailing_metadata())["grpc-status-details-bin"])
        assert any(d.Is(error_details_pb2.RetryInfo.DESCRIPTOR) for d in status.details)
        assert _reason(status) == "DECODER_UNAVAILABLE"
        # The next image is decoded (by a process started again), and the index is untouched.
        answer = check(stub, encode(cv2.resize(rgb("astronaut"), (256, 256)), quality=75))
        assert "astronaut" in {m.image_id for m in answer.matches}
        assert stub.GetInfo(pb.GetInfoRequest(), timeout=30).indexed_images == 5
    assert killed not in _decoders(srv.proc.pid)


def _reason(status: status_pb2.Status) -> str:
    for detail in status.details:
        if detail.Is(error_details_pb2.ErrorInfo.DESCRIPTOR):
            info = error_details_pb2.ErrorInfo()
            detail.Unpack(info)
            return info.reason
    return ""


def _call(stub, image: bytes):
    try:
        return check(stub, image)
    except grpc.RpcError as exc:
        return exc


def test_processes_end_with_the_server(tmp_path):
    server = ServerProcess(tmp_path, "--decode-processes", "--decode-workers", "1", new_session=True).start()
    try:
        decoders = _decoders(server.proc.pid)
        assert len(decoders) == 2
        blocks = _shared_blocks(server.proc.pid)
        assert len(blocks) == 4  # two per process
        os.kill(server.proc.pid, signal.SIGKILL)  # the server alone: its pipes close
        assert wait_until(lambda: all(not Path(f"/proc/{pid}").exists() or _state(pid) == "Z" for pid in decoders), 20), _state_all(decoders)
        # and its resource tracker removes the shared blocks it made
        assert wait_until(lambda: not any(block.exists() for block in blocks), 20), [b for b in blocks if b.exists()]
    finally:
        server.stop(signal.SIGKILL, timeout=10)
        if server.proc is not None:
            try:
                os.killpg(server.proc.pid, signal.SIGKILL)  # anything of its group still left (its Milvus Lite)
            except ProcessLookupError:
                pass


def _state(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return "gone"


def _state_all(pids) -> dict[int, str]:
    return {pid: _state(pid) for pid in pids}


def _shared_blocks(pid: int) -> set[Path]:
    """The shared-memory files a process has mapped."""
    maps = Path(f"/proc/{pid}/maps").read_text().splitlines()
    return {Path(line.split(maxsplit=5)[5].removesuffix(" (deleted)")) for line in maps if "/dev/shm/" in line}


@pytest.mark.parametrize("shm", ["blocks", "full"])
def test_decoder_gives_what_the_thread_gives(shm, monkeypatch, caplog):
    """ProcessDecoder against InThreadDecoder on the same bytes: a JPEG (the shared blocks both
    ways), a noisy PNG over IN_SLOT_BYTES (its bytes through the pipe), a long strip whose
    short-side inputs exceed OUT_SLOT_BYTES (the inputs pickled back), a padded photo (two
    inputs: the whole and its content view) and a refused image; then the blocks are removed.
    "full": /dev/shm cannot hold the blocks (a real ENOSPC: an input block larger than its free
    space), so everything goes through the pipe, with a warning."""
    from imgdedup.core import decoding
    from imgdedup.core.decoding import IN_SLOT_BYTES, OUT_SLOT_BYTES, InThreadDecoder, ProcessDecoder
    from imgdedup.core.images import ImageError, probe_image
    from imgdedup.core.model_inputs import InputMaker
    from imgdedup.core.priority import Priority
    from imgdedup.runtime.spec import ResizePolicy

    noisy = encode(np.random.default_rng(0).integers(0, 256, (1400, 1400, 3), dtype=np.uint8), ".png")
    assert len(noisy) > IN_SLOT_BYTES
    strip = encode(np.tile(rgb("coffee")[:, :, :], (1, 8, 1)))  # 400 x 4,800: short side 288 -> 288 x 3,456
    assert 288 * 3456 * 3 > OUT_SLOT_BYTES
    padded = encode(cv2.copyMakeBorder(cv2.resize(rgb("rocket"), (300, 200)), 150, 150, 150, 150, cv2.BORDER_CONSTANT, value=(255, 255, 255)))
    images = {"jpeg": encode(rgb("astronaut")), "noisy": noisy, "strip": strip, "padded": padded}
    if shm == "full":
        free = os.statvfs("/dev/shm")
        monkeypatch.setattr(decoding, "IN_SLOT_BYTES", free.f_bavail * free.f_frsize + (1 << 30))
    for mode in ("square", "short_side"):
        make = InputMaker(10**9, 288, ResizePolicy(mode=mode, size=288), content_views=True, inset_views=True)
        here, there = InThreadDecoder(make), ProcessDecoder(make, workers=1)
        try:
            there.wait_ready()
            blocks = _shared_blocks(os.getpid())
            assert len(blocks) == (4 if shm == "blocks" else 0)
            assert ("no shared memory" in caplog.text) == (shm == "full")
            # Every answer is compared once all are in: one left in a block would be overwritten.
            # The header probed in the process (no facts given) or given to it.
            answers = [(mode, name, level, given, here(data, Priority.HIGH), there(data, level, probe_image(data, max_pixels=10**9) if given else None))
                       for name, data in images.items() for level in Priority for given in (False, True)]
            for *where, (want_facts, want), (got_facts, got) in answers:
                assert got_facts == want_facts, where
                assert got.inset == want.inset and len(got.tensors) == len(want.tensors), where
                assert all(np.array_equal(a, b) for a, b in zip(got.tensors, want.tensors)), where
            assert len(here(padded, Priority.HIGH)[1].tensors) == 2
            # Vetted only (bytes probably stored): the facts, no inputs.
            assert there(padded, Priority.HIGH, decode=False) == (probe_image(padded, max_pixels=10**9), None)
            # Refused by the header (in the process) and by the decoder.
            with pytest.raises(ImageError) as refused:
                there(b"GIF89a" + b"\0" * 64, Priority.HIGH)
            assert refused.value.reason == here_refuses(here, b"GIF89a" + b"\0" * 64)
            png = bytearray(encode(rgb("coffee"), ".png"))
            png[200:-100] = bytes(len(png) - 300)
            with pytest.raises(ImageError) as refused:
                there(bytes(png), Priority.LOW)
            assert refused.value.reason == "CORRUPT_IMAGE"
        finally:
            there.close()
        assert not any(block.exists() for block in blocks)


def here_refuses(decoder, data: bytes) -> str:
    from imgdedup.core.images import ImageError
    from imgdedup.core.priority import Priority

    with pytest.raises(ImageError) as refused:
        decoder(data, Priority.HIGH)
    return refused.value.reason
