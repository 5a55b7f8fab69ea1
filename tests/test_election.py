"""The writer lease (docs/scale-out.md "Choosing the writer"): replicas started with
--writer-election elect their collection's one writer through etcd (here the Milvus server's own),
and another replica takes over when the writer dies, hangs or stops, losing no acknowledged
image. The lease itself (transport/lease.py) against the real etcd, then whole replicas.

Runs in the Milvus server pass only: Milvus Lite has no etcd, and a Lite file has one writer
process by construction."""

from __future__ import annotations

import asyncio
import os
import signal
import threading
import uuid

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc

from conftest import ServerProcess, channel_for, check, free_port, wait_until
from imgdedup._proto.dedup.v1 import dedup_pb2 as pb
from imgdedup._proto.dedup.v1 import dedup_pb2_grpc as pb_grpc
from imgdedup.transport.lease import EtcdLease
from test_reliability import _assert_consistent
from test_replicas import _all_clusters, _copy, stream_crashing_the_writer

pytestmark = [pytest.mark.milvus_server, pytest.mark.single_process]

TTL_S = 3


def test_the_lease_has_one_holder_at_a_time_and_says_how_the_last_one_stopped(milvus_backend):
    async def run() -> None:
        prefix = "lease" + uuid.uuid4().hex[:8]
        a, b = (EtcdLease(milvus_backend.etcd_url, prefix, ttl_s=2) for _ in range(2))
        assert await a.holder() is None
        won_a, won_b = await asyncio.gather(a.try_acquire("10.0.0.1:7000"), b.try_acquire("10.0.0.2:7000"))
        assert (won_a is None) != (won_b is None)  # exactly one
        first, lease, other = (won_a, a, b) if won_a else (won_b, b, a)
        assert not first.clean  # nobody stopped cleanly before it
        holder = await other.holder()
        assert holder is not None and holder.epoch == first.epoch
        assert await other.try_acquire("10.0.0.3:7000") is None
        assert await lease.keep_alive(first.lease_id) > 0
        # A clean stop hands over at once, and says so.
        await lease.release(first, clean=True)
        second = await other.try_acquire("10.0.0.3:7000")
        assert second is not None and second.clean and second.epoch > first.epoch
        assert (await lease.holder()).address == "10.0.0.3:7000"
        # A holder that stops renewing loses the key after its TTL, and the next is told it did
        # not stop cleanly.
        await asyncio.sleep(4)
        assert await other.keep_alive(second.lease_id) == 0
        assert await lease.holder() is None
        third = await lease.try_acquire("10.0.0.1:7000")
        assert third is not None and not third.clean
        await lease.release(third, clean=False)

    asyncio.run(run())


class Replicas:
    """Replicas of one collection that elect their writer through the Milvus server's etcd."""

    def __init__(self, tmp_path, etcd_url: str, ttl_s: float = TTL_S):
        self.tmp_path, self.etcd_url, self.ttl_s = tmp_path, etcd_url, ttl_s
        self.env = {"DEDUP_COLLECTION_PREFIX": "el" + uuid.uuid4().hex[:12]}
        self.ports = {name: free_port() for name in "ab"}
        self.procs: dict[str, ServerProcess] = {}

    def start(self, name: str, *extra: str) -> ServerProcess:
        args = ("--writer-election", self.etcd_url, "--writer-listen", f"127.0.0.1:{self.ports[name]}", "--writer-lease-ttl-s", str(self.ttl_s), *extra)
        self.procs[name] = ServerProcess(self.tmp_path / name, *args, env=self.env, new_session=True).start()
        return self.procs[name]

    def writer_address(self, name: str) -> str:
        return f"127.0.0.1:{self.ports[name]}"

    def said(self, name: str, text: str) -> bool:
        return any(text in line for line in self.procs[name].output)

    def stop(self) -> None:
        for srv in self.procs.values():
            if srv.proc is not None and srv.proc.poll() is None:
                os.killpg(srv.proc.pid, signal.SIGCONT)
                srv.stop()


@pytest.fixture
def replicas(tmp_path, milvus_backend):
    r = Replicas(tmp_path, milvus_backend.etcd_url)
    try:
        yield r
    finally:
        r.stop()


def _status(channel) -> int:
    return health_pb2_grpc.HealthStub(channel).Check(health_pb2.HealthCheckRequest(), timeout=5).status


def test_a_front_takes_over_when_the_writer_is_killed_and_loses_nothing(replicas):
    a = replicas.start("a")
    b = replicas.start("b")
    assert replicas.said("a", f"index writer serving at {replicas.writer_address('a')}")
    assert replicas.said("b", f"following the index writer at {replicas.writer_address('a')}")
    with channel_for(b.target) as cb:
        sb = pb_grpc.DedupServiceStub(cb)
        first = check(sb, _copy("immunohistochemistry", 1.0, 90), image_id="before", add=True)  # not among the stream's photos
        assert first.stored
        acked = {"before"} | stream_crashing_the_writer(sb, a.proc)
        a.proc.wait(30)
        # B takes the lease once it expires, rebuilds the clusters (A may have died mid-write)
        # and serves as the writer, without a restart.
        assert wait_until(lambda: replicas.said("b", f"index writer serving at {replicas.writer_address('b')}"), timeout=TTL_S + 60)
        assert replicas.said("b", "did not stop cleanly")
        assert wait_until(lambda: _status(cb) == health_pb2.HealthCheckResponse.SERVING, timeout=60)
        again = check(sb, _copy("immunohistochemistry", 0.7, 70), image_id="after", add=True)
        assert again.stored and again.is_duplicate and again.matches[0].image_id == "before"
        _assert_consistent(sb, acked | {"after"})
    # A comes back on the same address: it follows B now.
    a = replicas.start("a")
    assert replicas.said("a", f"following the index writer at {replicas.writer_address('b')}")
    with channel_for(a.target) as ca, channel_for(b.target) as cb:
        sa, sb = pb_grpc.DedupServiceStub(ca), pb_grpc.DedupServiceStub(cb)
        found = check(sa, _copy("immunohistochemistry", 0.8, 80))
        assert found.is_duplicate and {m.image_id for m in found.matches} >= {"before", "after"}
        assert _all_clusters(sa) == _all_clusters(sb)


def test_a_writer_that_stops_cleanly_hands_the_lease_over_at_once(tmp_path, milvus_backend):
    # A long TTL: the takeover below cannot be the lease expiring.
    replicas = Replicas(tmp_path, milvus_backend.etcd_url, ttl_s=60)
    try:
        a = replicas.start("a")
        b = replicas.start("b")
        with channel_for(a.target) as ca:
            assert check(pb_grpc.DedupServiceStub(ca), _copy("rocket", 1.0, 90), image_id="r", add=True).stored
        assert a.stop() == 0
        assert wait_until(lambda: replicas.said("b", f"index writer serving at {replicas.writer_address('b')}"), timeout=30)
        assert not replicas.said("b", "did not stop cleanly")  # no rebuild needed
        with channel_for(b.target) as cb:
            sb = pb_grpc.DedupServiceStub(cb)
            found = check(sb, _copy("rocket", 0.6, 70), image_id="r2", add=True)
            assert found.is_duplicate and found.matches[0].image_id == "r"
            _assert_consistent(sb, {"r", "r2"})
    finally:
        replicas.stop()


def test_a_paused_writer_does_not_write_after_its_lease_ran_out(replicas):
    a = replicas.start("a")
    b = replicas.start("b")
    with channel_for(a.target) as ca, channel_for(b.target) as cb:
        sa, sb = pb_grpc.DedupServiceStub(ca), pb_grpc.DedupServiceStub(cb)
        assert check(sa, _copy("chelsea", 1.0, 90), image_id="cat", add=True).stored
        os.killpg(a.proc.pid, signal.SIGSTOP)  # a long pause: A does not know it lost the lease
        answer: list = []
        late = threading.Thread(target=lambda: answer.append(_try(sa, _copy("astronaut", 1.0, 90), "sent-to-paused-a")))
        late.start()  # waits in A's socket until A runs again
        assert wait_until(lambda: replicas.said("b", f"index writer serving at {replicas.writer_address('b')}"), timeout=TTL_S + 60)
        assert check(sb, _copy("chelsea", 0.7, 70), image_id="cat2", add=True).is_duplicate
        os.killpg(a.proc.pid, signal.SIGCONT)
        late.join(120)
        # A woke with a lease that had run out. The check it was holding either failed (A
        # refused to write it: NOT_THE_WRITER, or NO_WRITER while it stepped down) and is not
        # stored, or, if A had already stepped down and followed B when it reached the write
        # queue, was stored by B: never by A on its own.
        assert answer, "the check held by the paused writer got no answer"
        held_stored = not isinstance(answer[0], grpc.RpcError)
        if not held_stored:
            assert answer[0].code() == grpc.StatusCode.UNAVAILABLE and "writer" in answer[0].details(), answer[0]
        assert wait_until(lambda: replicas.said("a", f"following the index writer at {replicas.writer_address('b')}"), timeout=60)
        assert replicas.said("a", "stops writing the collection")
        assert check(sb, _copy("astronaut", 1.0, 90)).exact_duplicate == held_stored
        expected = {"cat", "cat2"} | ({"sent-to-paused-a"} if held_stored else set())
        _assert_consistent(sb, expected)
        assert {m for _, _, members in _all_clusters(sb) for m in members} == expected
        # A, a front of B now, stores through B.
        assert wait_until(lambda: _status(ca) == health_pb2.HealthCheckResponse.SERVING, timeout=60)
        assert check(sa, _copy("rocket", 1.0, 90), image_id="sent-later", add=True).stored
        assert _all_clusters(sa) == _all_clusters(sb)


def test_a_replica_with_worker_processes_is_one_voter_that_writes_or_follows(replicas):
    # A runs `--workers 2`: its parent takes part in the election for the whole replica; its
    # fronts write through the parent, which is the writer, or a front of the elected one.
    a = replicas.start("a", "--workers", "2")
    b = replicas.start("b")
    assert replicas.said("a", "ready (2 workers)")
    assert replicas.said("a", f"index writer serving at {replicas.writer_address('a')}")
    assert replicas.said("b", f"following the index writer at {replicas.writer_address('a')}")
    with channel_for(a.target) as ca, channel_for(b.target) as cb:
        sa, sb = pb_grpc.DedupServiceStub(ca), pb_grpc.DedupServiceStub(cb)
        assert check(sa, _copy("coffee", 1.0, 90), image_id="coffee", add=True).stored
        found = check(sb, _copy("coffee", 0.7, 70), image_id="coffee2", add=True)
        assert found.is_duplicate and found.matches[0].image_id == "coffee"
    assert a.stop() == 0  # fronts first, then the parent's writer: it hands the lease over
    assert wait_until(lambda: replicas.said("b", f"index writer serving at {replicas.writer_address('b')}"), timeout=30)
    assert not replicas.said("b", "did not stop cleanly")
    a = replicas.start("a", "--workers", "2")
    assert replicas.said("a", f"following the index writer at {replicas.writer_address('b')}")
    with channel_for(a.target) as ca, channel_for(b.target) as cb:
        sa, sb = pb_grpc.DedupServiceStub(ca), pb_grpc.DedupServiceStub(cb)
        found = check(sa, _copy("coffee", 0.8, 80), image_id="coffee3", add=True)  # front -> parent -> B
        assert found.stored and {m.image_id for m in found.matches} >= {"coffee", "coffee2"}
        # A stream through A's fronts: its items keep their order through both hops.
        photos = [("rocket", 1.0, 90), ("rocket", 0.7, 75), ("chelsea", 1.0, 90), ("chelsea", 0.8, 70)]
        reqs = [pb.BulkCheckRequest(image_id=f"s{i}", image=_copy(*p), add_to_index=True) for i, p in enumerate(photos)]
        out = list(sa.BulkCheck(iter(reqs), timeout=120))
        assert [o.index for o in out] == [0, 1, 2, 3] and all(o.WhichOneof("outcome") == "result" for o in out), out
        assert [o.result.is_duplicate for o in out] == [False, True, False, True]
        _assert_consistent(sb, {"coffee", "coffee2", "coffee3", "s0", "s1", "s2", "s3"})
        assert _all_clusters(sa) == _all_clusters(sb)
    # B dies: A's parent takes the lease over, its fronts still serving.
    os.killpg(b.proc.pid, signal.SIGKILL)
    b.proc.wait(30)
    assert wait_until(lambda: replicas.said("a", f"index writer serving at {replicas.writer_address('a')}"), timeout=TTL_S + 60)
    with channel_for(a.target) as ca:
        sa = pb_grpc.DedupServiceStub(ca)
        assert wait_until(lambda: _status(ca) == health_pb2.HealthCheckResponse.SERVING, timeout=60)
        again = check(sa, _copy("rocket", 0.6, 70), image_id="rocket-after", add=True)
        assert again.stored and {m.image_id for m in again.matches} >= {"s0", "s1"}
        _assert_consistent(sa, {"coffee", "coffee2", "coffee3", "s0", "s1", "s2", "s3", "rocket-after"})


def _try(stub, image: bytes, image_id: str):
    try:
        return check(stub, image, image_id=image_id, add=True)
    except grpc.RpcError as exc:
        return exc
