"""Two replicas on one index: A writes the collection and serves its index writer
(--writer-listen), B is a front of A's writer (--writer). Both give the answers one server
gives: B finds what A acknowledged a moment ago, copies sent to both at the same moment end up
in one cluster, deletes re-split clusters while the other replica writes, and kill -9 of
either replica loses no acknowledged image (docs/scale-out.md).

Runs in both Milvus passes (on Lite, A alone opens the Lite file)."""

from __future__ import annotations

import json
import os
import re
import signal
import threading
import time

import cv2
import grpc
import numpy as np
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc

from conftest import ServerProcess, channel_for, check, encode, free_port, rgb, wait_until
from imgdedup._proto.dedup.v1 import dedup_pb2 as pb
from imgdedup._proto.dedup.v1 import dedup_pb2_grpc as pb_grpc
from test_reliability import _assert_consistent, _stream_requests

pytestmark = pytest.mark.single_process

PHOTOS = ("astronaut", "coffee", "rocket", "chelsea", "camera", "retina", "immunohistochemistry", "hubble_deep_field")


def _copy(name: str, scale: float, quality: int) -> bytes:
    img = rgb(name)
    h, w = img.shape[:2]
    return encode(cv2.resize(img, (int(w * scale), int(h * scale)), interpolation=cv2.INTER_AREA), quality=quality)


def _all_clusters(stub) -> list[tuple[str, int, tuple[str, ...]]]:
    out, token = [], ""
    while True:
        resp = stub.ListClusters(pb.ListClustersRequest(min_size=1, page_size=1000, page_token=token), timeout=60)
        out += [(c.cluster_id, c.size, tuple(sorted(m.image_id for m in c.members))) for c in resp.clusters]
        if not (token := resp.next_page_token):
            return sorted(out)


class Pair:
    """Replica A (the writer, listening on writer_port) and replica B (a front of it)."""

    def __init__(self, tmp_path, writer_port: int | None = None, env: dict | None = None):
        self.tmp_path = tmp_path
        self.writer_port = writer_port or free_port()
        self.env = env or {}
        self.a = self.start_a()
        self.b = ServerProcess(tmp_path / "b", "--writer", f"127.0.0.1:{self.writer_port}", env=self.env).start()

    def start_a(self) -> ServerProcess:
        srv = ServerProcess(self.tmp_path / "a", "--writer-listen", f"127.0.0.1:{self.writer_port}", env=self.env, new_session=True).start()
        assert any(re.search(rf"index writer serving at 127\.0\.0\.1:{self.writer_port}", line) for line in srv.output)
        return srv

    def stop(self) -> None:
        assert self.b.stop() == 0
        assert self.a.stop() == 0


@pytest.fixture
def pair(tmp_path):
    p = Pair(tmp_path)
    try:
        yield p
    finally:
        p.stop()


def test_a_copy_sent_to_one_replica_right_after_the_other_stored_the_original_is_found(pair):
    with channel_for(pair.a.target) as ca, channel_for(pair.b.target) as cb:
        a, b = pb_grpc.DedupServiceStub(ca), pb_grpc.DedupServiceStub(cb)
        for n, name in enumerate(PHOTOS[:6]):
            first, second = (a, b) if n % 2 == 0 else (b, a)
            stored = check(first, _copy(name, 1.0, 90), image_id=name, add=True)
            assert stored.stored and not stored.is_duplicate
            found = check(second, _copy(name, 0.6, 70))  # at once, on the other replica
            assert found.is_duplicate and found.matches[0].image_id == name, (name, found)
            assert found.matches[0].cluster_id == stored.cluster_id
            exact = check(second, _copy(name, 1.0, 90))
            assert exact.exact_duplicate and exact.matches[0].image_id == name
        assert _all_clusters(a) == _all_clusters(b)
        info_a, info_b = a.GetInfo(pb.GetInfoRequest()), b.GetInfo(pb.GetInfoRequest())
        assert info_a.indexed_images == info_b.indexed_images == 6
        assert info_a.milvus_backend == info_b.milvus_backend


def test_copies_sent_to_both_replicas_at_the_same_moment_end_up_in_one_cluster(pair):
    with channel_for(pair.a.target) as ca, channel_for(pair.b.target) as cb:
        a, b = pb_grpc.DedupServiceStub(ca), pb_grpc.DedupServiceStub(cb)
        # Unary: each photo's two copies at once, one to each replica.
        for name in PHOTOS[:4]:
            start = threading.Barrier(2)
            answers: dict[str, pb.CheckDuplicateResponse] = {}

            def send(stub, key, image):
                start.wait()
                answers[key] = check(stub, image, image_id=f"{name}-{key}", add=True)

            threads = [threading.Thread(target=send, args=(a, "a", _copy(name, 0.8, 85))),
                       threading.Thread(target=send, args=(b, "b", _copy(name, 0.7, 75)))]
            for t in threads:
                t.start()
            for t in threads:
                t.join(120)
            assert answers["a"].cluster_id == answers["b"].cluster_id, name
            assert answers["a"].is_duplicate != answers["b"].is_duplicate  # exactly one saw the other
        # Streams: both replicas stream copies of the same photos at the same time.
        def stream(stub, tag, scale, results):
            reqs = [pb.BulkCheckRequest(image_id=f"{n}-{tag}", image=_copy(n, scale, 80), add_to_index=True) for n in PHOTOS[4:]]
            results += list(stub.BulkCheck(iter(reqs), timeout=300))

        ra, rb = [], []
        threads = [threading.Thread(target=stream, args=(a, "sa", 0.9, ra)), threading.Thread(target=stream, args=(b, "sb", 0.65, rb))]
        for t in threads:
            t.start()
        for t in threads:
            t.join(300)
        assert [r.WhichOneof("outcome") for r in ra + rb] == ["result"] * (2 * len(PHOTOS[4:]))
        clusters = _all_clusters(a)
        assert clusters == _all_clusters(b)
        assert len(clusters) == len(PHOTOS), clusters  # one per photo: no split cluster
        for _, size, members in clusters:
            assert size == len(members) == 2 and len({m.rsplit("-", 1)[0] for m in members}) == 1, members


def test_deletes_re_split_clusters_while_the_other_replica_writes(tmp_path):
    pair = Pair(tmp_path, env={"DEDUP_THRESHOLD": "0.6"})  # halves match the whole, not each other
    try:
        with channel_for(pair.a.target) as ca, channel_for(pair.b.target) as cb:
            a, b = pb_grpc.DedupServiceStub(ca), pb_grpc.DedupServiceStub(cb)
            img = rgb("astronaut")
            w = img.shape[1]
            check(a, encode(np.ascontiguousarray(img[:, : int(w * 0.55)])), image_id="left", add=True)
            check(b, encode(np.ascontiguousarray(img[:, int(w * 0.45):])), image_id="right", add=True)
            whole = check(a, encode(img), image_id="whole", add=True)
            assert {m.image_id for m in whole.matches} == {"left", "right"}
            # A streams other photos (no astronaut: a whole one would bridge again) while B
            # deletes the bridge.
            others = [pb.BulkCheckRequest(image_id=f"img-{i}", image=_copy(PHOTOS[1 + i % 5], 1.0 - 0.02 * i, 60 + i), add_to_index=True) for i in range(24)]
            results: list = []
            writer = threading.Thread(target=lambda: results.extend(a.BulkCheck(iter(others), timeout=300)))
            writer.start()
            deleted = b.DeleteImages(pb.DeleteImagesRequest(image_ids=["whole"]), timeout=60)
            writer.join(300)
            assert list(deleted.deleted_ids) == ["whole"]
            assert all(r.WhichOneof("outcome") == "result" for r in results) and len(results) == 24
            for stub in (a, b):
                clusters = _all_clusters(stub)
                of = {m: cid for cid, _, members in clusters for m in members}
                assert of["left"] != of["right"] and "whole" not in of
            assert _all_clusters(a) == _all_clusters(b)
            _assert_consistent(a, {f"img-{i}" for i in range(24)} | {"left", "right"})
    finally:
        pair.stop()


def _stream_until_killed(stub, n: int, kill_after: int, kill) -> set[str]:
    acked: set[str] = set()
    try:
        for resp in stub.BulkCheck(_stream_requests(n), timeout=300):
            if resp.WhichOneof("outcome") == "result" and resp.result.stored:
                acked.add(resp.image_id)
            if len(acked) == kill_after:
                kill()
    except grpc.RpcError as exc:
        assert exc.code() in (grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.CANCELLED, grpc.StatusCode.UNKNOWN), exc
    return acked


def stream_crashing_the_writer(stub, writer, n: int = 30, crash_after: int = 10) -> set[str]:
    """Stream n images to `stub`; kill -9 the writer's process group (as a crash) once
    crash_after are acknowledged. Every later item is stored or fails UNAVAILABLE; returns the
    ids acknowledged as stored."""
    acked: set[str] = set()
    for resp in stub.BulkCheck(_stream_requests(n), timeout=300):
        if resp.WhichOneof("outcome") == "result" and resp.result.stored:
            acked.add(resp.image_id)
        else:
            assert resp.error.code == grpc.StatusCode.UNAVAILABLE.value[0], resp.error
        if len(acked) == crash_after and writer.poll() is None:
            os.killpg(writer.pid, signal.SIGKILL)
    return acked


def test_kill_9_of_the_front_replica_mid_stream_loses_no_acknowledged_image(pair):
    with channel_for(pair.b.target) as cb:
        acked = _stream_until_killed(pb_grpc.DedupServiceStub(cb), 40, 12, lambda: pair.b.proc.send_signal(signal.SIGKILL))
    assert len(acked) >= 12
    pair.b.proc.wait(30)
    pair.b = ServerProcess(pair.tmp_path / "b", "--writer", f"127.0.0.1:{pair.writer_port}").start()
    with channel_for(pair.a.target) as ca, channel_for(pair.b.target) as cb:
        _assert_consistent(pb_grpc.DedupServiceStub(ca), acked)
        assert _all_clusters(pb_grpc.DedupServiceStub(ca)) == _all_clusters(pb_grpc.DedupServiceStub(cb))


def test_kill_9_of_the_writer_replica_mid_stream_loses_nothing_and_the_other_recovers(pair):
    with channel_for(pair.b.target) as cb:
        b = pb_grpc.DedupServiceStub(cb)
        health = health_pb2_grpc.HealthStub(cb)
        status = lambda: health.Check(health_pb2.HealthCheckRequest(), timeout=5).status  # noqa: E731
        acked = stream_crashing_the_writer(b, pair.a.proc)  # A and its Milvus Lite
        assert len(acked) >= 10
        pair.a.proc.wait(30)
        assert wait_until(lambda: status() == health_pb2.HealthCheckResponse.NOT_SERVING, timeout=30)
        with pytest.raises(grpc.RpcError) as err:
            check(b, encode(rgb("coffee")), add=True)
        assert err.value.code() == grpc.StatusCode.UNAVAILABLE
        pair.a = pair.start_a()  # on the same data and writer address
        assert wait_until(lambda: status() == health_pb2.HealthCheckResponse.SERVING, timeout=60)
        again = check(b, encode(rgb("coffee")), image_id="after", add=True)  # B was not restarted
        assert again.stored
        _assert_consistent(b, acked | {"after"})


def _hammer(stubs: dict, namespace: str, seconds: float) -> tuple[dict[str, int], float]:
    """Checks sent in turns to each stub for `seconds`; the ones each let through, and the time
    it took. A refusal must be RESOURCE_EXHAUSTED (it is held up to 0.25 s: core/quotas.py)."""
    image = encode(rgb("camera"))
    passed = {name: 0 for name in stubs}
    t0 = time.monotonic()
    while time.monotonic() - t0 < seconds:
        for name, stub in stubs.items():
            try:
                check(stub, image, namespace=namespace)
                passed[name] += 1
            except grpc.RpcError as exc:
                assert exc.code() == grpc.StatusCode.RESOURCE_EXHAUSTED, exc.details()
    return passed, time.monotonic() - t0


def test_replicas_share_a_namespace_rate_quota(tmp_path):
    """A namespace's images-per-second quota holds across replicas (core/rate_shares.py): a caller
    that sends to both gets the rate once, not once per replica. Each replica alone would let
    1 + 1/s through (~14 over 6 s of calls sent to both in turns); sharing, together at most the
    rate, plus the one token each may hold at first."""
    rate = 1.0
    pair = Pair(tmp_path, env={"DEDUP_QUOTAS": json.dumps({"slow": {"images_per_second": rate, "burst": 1}})})
    try:
        with channel_for(pair.a.target) as ca, channel_for(pair.b.target) as cb:
            passed, elapsed = _hammer({"a": pb_grpc.DedupServiceStub(ca), "b": pb_grpc.DedupServiceStub(cb)}, "slow", 6.0)
        total = sum(passed.values())
        assert total <= 2 + rate * elapsed + 1, (passed, elapsed)
        assert passed["a"] >= 1 and passed["b"] >= 1, passed
        assert total >= rate * elapsed * 0.6, (passed, elapsed)  # and the rate is there to be had
    finally:
        pair.stop()
