"""Crashes, restarts and garbage: acknowledged images survive, clusters stay consistent, the
server keeps serving."""

from __future__ import annotations

import os
import signal

import grpc
import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings, strategies as st

from conftest import ServerProcess, channel_for, check, encode, rgb
from imgdedup._proto.dedup.v1 import dedup_pb2 as pb
from imgdedup._proto.dedup.v1 import dedup_pb2_grpc as pb_grpc

PHOTOS = ("astronaut", "coffee", "chelsea", "rocket", "camera", "retina", "hubble_deep_field")


def _stream_requests(n: int):
    photos = [rgb(p) for p in PHOTOS]
    for i in range(n):
        a = photos[i % len(photos)]
        variant = a[:, ::-1] if (i // len(photos)) % 2 else a
        yield pb.BulkCheckRequest(image_id=f"img-{i}", image=encode(np.ascontiguousarray(variant), quality=60 + i % 35), add_to_index=True)


def _assert_consistent(stub, must_have: set[str]) -> None:
    """Every acknowledged image is in exactly one cluster; sizes match members and the count."""
    clusters, token = [], ""
    while True:
        resp = stub.ListClusters(pb.ListClustersRequest(min_size=1, page_size=1000, page_token=token))
        clusters += resp.clusters
        token = resp.next_page_token
        if not token:
            break
    members = [m.image_id for c in clusters for m in c.members]
    assert len(members) == len(set(members)), "an image is in two clusters"
    assert all(c.size == len(c.members) for c in clusters), "a cluster's size disagrees with its members"
    assert must_have <= set(members), f"acknowledged images lost: {sorted(must_have - set(members))[:5]}"
    assert stub.GetInfo(pb.GetInfoRequest()).indexed_images == len(members)


def _ack_until_killed(srv: ServerProcess, n: int, kill_after: int, sig: int = signal.SIGKILL) -> tuple[set[str], list[str]]:
    acked: set[str] = set()
    errors: list[str] = []
    with channel_for(srv.target) as channel:
        stub = pb_grpc.DedupServiceStub(channel)
        try:
            for resp in stub.BulkCheck(_stream_requests(n), timeout=300):
                if resp.WhichOneof("outcome") == "result" and resp.result.stored:
                    acked.add(resp.image_id)
                if len(acked) == kill_after:
                    os.killpg(srv.proc.pid, sig)  # the server and its Milvus Lite child at once
        except grpc.RpcError as exc:
            errors.append(exc.code().name)
    return acked, errors


def test_kill_9_during_bulkcheck_loses_no_acknowledged_image(tmp_path):
    srv = ServerProcess(tmp_path, new_session=True).start()
    acked, _ = _ack_until_killed(srv, n=60, kill_after=20)
    srv.proc.wait(30)
    assert srv.proc.returncode == -signal.SIGKILL and len(acked) >= 20

    again = ServerProcess(tmp_path).start()
    try:
        with channel_for(again.target) as channel:
            _assert_consistent(pb_grpc.DedupServiceStub(channel), acked)
    finally:
        assert again.stop() == 0


def test_crash_between_image_and_cluster_writes_is_repaired_on_restart(tmp_path):
    """FAULT INJECTION: DEDUP_TEST_CRASH_AT makes the process exit right after image rows are
    written and before their cluster rows are; the next start must rebuild the clusters."""
    first = ServerProcess(tmp_path).start()
    with channel_for(first.target) as channel:
        stub = pb_grpc.DedupServiceStub(channel)
        a = check(stub, encode(rgb("astronaut")), image_id="a", add=True)
    first.stop()

    crashing = ServerProcess(tmp_path, env={"DEDUP_TEST_CRASH_AT": "after-image-insert"}).start()
    with channel_for(crashing.target) as channel, pytest.raises(grpc.RpcError):
        check(pb_grpc.DedupServiceStub(channel), encode(rgb("astronaut")[:, ::-1].copy()), image_id="a-flip", add=True)
    crashing.proc.wait(30)
    assert crashing.proc.returncode == 137

    again = ServerProcess(tmp_path).start()
    try:
        assert any("rebuilding clusters" in line for line in again.output)
        with channel_for(again.target) as channel:
            stub = pb_grpc.DedupServiceStub(channel)
            _assert_consistent(stub, {"a", "a-flip"})  # the image row was written: it counts
            cluster = stub.GetCluster(pb.GetClusterRequest(cluster_id=a.cluster_id))
            assert cluster.size == 2 and {m.image_id for m in cluster.members} == {"a", "a-flip"}
    finally:
        again.stop()


def test_sigterm_drains_in_flight_work_then_exits_cleanly(tmp_path):
    srv = ServerProcess(tmp_path).start()
    acked: set[str] = set()
    with channel_for(srv.target) as channel:
        stub = pb_grpc.DedupServiceStub(channel)
        for resp in stub.BulkCheck(_stream_requests(30), timeout=300):
            if resp.WhichOneof("outcome") == "result" and resp.result.stored:
                acked.add(resp.image_id)
            if len(acked) == 5:
                srv.proc.send_signal(signal.SIGTERM)
    assert len(acked) == 30, "the stream in flight was cut instead of drained"
    srv.proc.wait(60)
    assert srv.proc.returncode == 0
    assert any("shutting down" in line for line in srv.output)

    again = ServerProcess(tmp_path).start()
    try:
        with channel_for(again.target) as channel:
            _assert_consistent(pb_grpc.DedupServiceStub(channel), acked)
    finally:
        again.stop()


def test_a_cancelled_stream_stops_its_work(tmp_path):
    import time

    srv = ServerProcess(tmp_path).start()
    try:
        with channel_for(srv.target) as channel:
            stub = pb_grpc.DedupServiceStub(channel)
            responses = stub.BulkCheck(_stream_requests(200), timeout=300)
            for n, _ in enumerate(responses, 1):
                if n == 3:
                    responses.cancel()
                    break
            info = lambda: stub.GetInfo(pb.GetInfoRequest()).indexed_images  # noqa: E731
            time.sleep(1.0)
            settled = info()
            time.sleep(1.0)
            assert info() == settled < 60  # nothing more is stored once the stream is gone
            assert check(stub, encode(rgb("coffee"))).image_id  # and the server serves on
    finally:
        assert srv.stop() == 0


# -- garbage ----------------------------------------------------------------------------------
_VALID = [encode(rgb("coffee")), encode(rgb("camera"), ".png"), encode(rgb("rocket"), ".webp")]


@st.composite
def _blobs(draw) -> bytes:
    kind = draw(st.sampled_from(["random", "truncated", "bitflip", "prefix"]))
    if kind == "random":
        return draw(st.binary(max_size=4096))
    base = draw(st.sampled_from(_VALID))
    if kind == "truncated":
        return base[: draw(st.integers(0, len(base)))]
    if kind == "prefix":  # a real header followed by junk
        return base[: draw(st.integers(1, 64))] + draw(st.binary(max_size=2048))
    data = bytearray(base)
    for _ in range(draw(st.integers(1, 20))):
        data[draw(st.integers(0, len(data) - 1))] ^= 1 << draw(st.integers(0, 7))
    return bytes(data)


@pytest.fixture(scope="module")
def garbage_stub(tmp_path_factory):
    srv = ServerProcess(tmp_path_factory.mktemp("garbage")).start()
    with channel_for(srv.target) as channel:
        yield pb_grpc.DedupServiceStub(channel), srv
    srv.stop()


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    blob=_blobs(),
    image_id=st.text(max_size=300),
    threshold=st.one_of(st.none(), st.floats(allow_nan=True, allow_infinity=True, width=32)),
    top_k=st.one_of(st.none(), st.integers(0, 2**32 - 1)),
    add=st.booleans(),
)
def test_generated_garbage_gets_clear_errors_and_the_server_keeps_serving(garbage_stub, blob, image_id, threshold, top_k, add):
    stub, srv = garbage_stub
    try:
        r = stub.CheckDuplicate(pb.CheckDuplicateRequest(image_id=image_id, image=blob, add_to_index=add, threshold=threshold, top_k=top_k), timeout=60)
        assert r.image_id  # a real answer (a bit-flipped photo can still decode)
    except grpc.RpcError as exc:
        assert exc.code() == grpc.StatusCode.INVALID_ARGUMENT, (exc.code(), exc.details())
        assert exc.details()
    assert srv.proc.poll() is None


def test_garbage_in_a_stream_gets_one_error_each_and_the_stream_goes_on(garbage_stub):
    stub, _ = garbage_stub
    rng = np.random.default_rng(3)
    reqs = []
    for i in range(30):
        blob = _VALID[i % 3] if i % 3 == 0 else rng.integers(0, 256, int(rng.integers(0, 3000)), dtype=np.uint8).tobytes()
        reqs.append(pb.BulkCheckRequest(image_id=f"g{i}", image=blob))
    out = list(stub.BulkCheck(iter(reqs), timeout=120))
    assert [r.index for r in out] == list(range(30))
    for i, r in enumerate(out):
        assert r.WhichOneof("outcome") == ("result" if i % 3 == 0 else "error"), i
    assert stub.GetInfo(pb.GetInfoRequest()).version
