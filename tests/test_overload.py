"""Overload, deadlines and a vector database that goes away: clear statuses, nothing breaks."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import time
import urllib.request
from concurrent.futures import ThreadPoolExecutor

import grpc
import pytest
from google.rpc import error_details_pb2
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_status import rpc_status

from conftest import ServerProcess, channel_for, check, encode, free_port, rgb, wait_until
from imgdedup._proto.dedup.v1 import dedup_pb2 as pb
from imgdedup._proto.dedup.v1 import dedup_pb2_grpc as pb_grpc

PHOTOS = [encode(rgb(n), quality=q) for n in ("astronaut", "coffee", "rocket", "camera") for q in (70, 80, 90)]


def _codes(stub, n: int, timeout: float = 60) -> list:
    def one(i: int):
        try:
            stub.CheckDuplicate(pb.CheckDuplicateRequest(image=PHOTOS[i % len(PHOTOS)]), timeout=timeout)
            return grpc.StatusCode.OK, None
        except grpc.RpcError as exc:
            return exc.code(), exc

    with ThreadPoolExecutor(n) as pool:
        return list(pool.map(one, range(n)))


def test_full_queue_sheds_load_with_retry_info(tmp_path):
    srv = ServerProcess(tmp_path, env={"DEDUP_MAX_QUEUE_SIZE": "2", "DEDUP_MAX_BATCH_SIZE": "1"}).start()
    try:
        with channel_for(srv.target) as channel:
            stub = pb_grpc.DedupServiceStub(channel)
            results = _codes(stub, 24)
            codes = [c for c, _ in results]
            assert set(codes) <= {grpc.StatusCode.OK, grpc.StatusCode.RESOURCE_EXHAUSTED}
            assert codes.count(grpc.StatusCode.RESOURCE_EXHAUSTED) >= 1 and codes.count(grpc.StatusCode.OK) >= 2
            exc = next(e for c, e in results if c == grpc.StatusCode.RESOURCE_EXHAUSTED)
            retry = error_details_pb2.RetryInfo()
            assert any(d.Unpack(retry) for d in rpc_status.from_call(exc).details)
            assert retry.retry_delay.ToNanoseconds() > 0
            assert check(stub, PHOTOS[0]).image_id  # and it keeps serving
    finally:
        assert srv.stop() == 0


@pytest.mark.single_process  # reads one process's metrics, threads or children
def test_work_past_its_deadline_never_reaches_the_model_and_streams_are_capped(tmp_path):
    port = free_port()
    srv = ServerProcess(tmp_path, "--metrics-port", str(port), env={"DEDUP_MAX_BATCH_SIZE": "1", "DEDUP_BULK_MAX_ITEMS": "3"}).start()
    try:
        with channel_for(srv.target) as channel:
            stub = pb_grpc.DedupServiceStub(channel)
            # A backlog of 80 images (batch size 1: about 1 s of model time), then 8 calls with a
            # 0.4 s deadline that queue behind it and expire while waiting: in the embedding
            # queue (counted as dropped) or still decoding (never queued). Either way the model
            # must run exactly the 80 backlog images and none of the late ones.
            with ThreadPoolExecutor(1) as pool:
                backlog = pool.submit(_codes, stub, 80)
                time.sleep(0.1)
                late = _codes(stub, 8, timeout=0.4)
                assert [c for c, _ in backlog.result()] == [grpc.StatusCode.OK] * 80
            assert [c for c, _ in late] == [grpc.StatusCode.DEADLINE_EXCEEDED] * 8
            text = urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10).read().decode()
            dropped = float(re.search(r"^dedup_embed_dropped_total ([0-9.e+]+)$", text, re.M).group(1))
            embedded = float(re.search(r"^dedup_embed_batch_size_sum ([0-9.e+]+)$", text, re.M).group(1))
            assert embedded == 80 and dropped <= 8
            assert check(stub, PHOTOS[1]).image_id

            # bulk_max_items=3: the 4th and 5th items of a stream are refused, clearly.
            reqs = [pb.BulkCheckRequest(image_id=f"s{i}", image=PHOTOS[i]) for i in range(5)]
            out = list(stub.BulkCheck(iter(reqs), timeout=60))
            assert [r.WhichOneof("outcome") for r in out] == ["result"] * 3 + ["error"] * 2
            assert out[3].error.code == grpc.StatusCode.RESOURCE_EXHAUSTED.value[0] and "bulk_max_items" in out[3].error.message
    finally:
        assert srv.stop() == 0


@pytest.mark.single_process  # reads one process's metrics, threads or children
@pytest.mark.lite_only
def test_milvus_going_away_turns_health_off_then_reconnects(tmp_path):
    srv = ServerProcess(tmp_path, env={"DEDUP_STORAGE_CHECK_INTERVAL_S": "0.3", "DEDUP_MILVUS_TIMEOUT_S": "2"}).start()
    try:
        with channel_for(srv.target) as channel:
            stub = pb_grpc.DedupServiceStub(channel)
            health = health_pb2_grpc.HealthStub(channel)
            stored = check(stub, PHOTOS[0], image_id="kept", add=True)
            # The real fault: the embedded Milvus Lite process (this server's child) dies.
            children = subprocess.run(["pgrep", "-P", str(srv.proc.pid)], capture_output=True, text=True).stdout.split()
            assert len(children) == 1
            os.kill(int(children[0]), signal.SIGKILL)
            try:
                check(stub, PHOTOS[3], add=True)
                raised = None
            except grpc.RpcError as exc:
                raised = exc.code()
            assert raised in (None, grpc.StatusCode.UNAVAILABLE)  # never INTERNAL or a hang
            status = lambda: health.Check(health_pb2.HealthCheckRequest(), timeout=5).status  # noqa: E731
            assert wait_until(lambda: status() == health_pb2.HealthCheckResponse.NOT_SERVING, timeout=20, interval=0.01)
            assert wait_until(lambda: status() == health_pb2.HealthCheckResponse.SERVING, timeout=60)
            again = check(stub, PHOTOS[0])
            assert again.exact_duplicate and again.matches[0].image_id == "kept"
            assert again.matches[0].cluster_id == stored.cluster_id
            assert any("reconnected to Milvus" in line for line in srv.output)
    finally:
        srv.stop()


@pytest.mark.lite_only
def test_a_milvus_lite_slow_to_listen_is_waited_for_at_start(tmp_path):
    """milvus-lite takes its process as started once it has lived 0.5 s; on a loaded machine
    the socket may come later (a failed CI start). The slowness is caused by a stand-in named
    as such: a directory in BIN_PATH (milvus-lite's own override) whose `milvus` waits 2 s,
    then runs the real binary with its libraries."""
    import milvus_lite.server

    real = os.path.join(os.path.dirname(os.path.abspath(milvus_lite.server.__file__)), "lib")
    slow = tmp_path / "slow_milvus_lite_stand_in"
    slow.mkdir()
    for name in os.listdir(real):
        if name != "milvus":
            os.symlink(os.path.join(real, name), slow / name)
    (slow / "milvus").write_text(f'#!/bin/sh\nsleep 2\nexec "{real}/milvus" "$@"\n')
    (slow / "milvus").chmod(0o755)
    srv = ServerProcess(tmp_path / "srv", env={"BIN_PATH": str(slow)}).start()
    try:
        with channel_for(srv.target) as channel:
            stub = pb_grpc.DedupServiceStub(channel)
            stored = check(stub, PHOTOS[0], image_id="slow", add=True)
            assert check(stub, PHOTOS[0]).matches[0].image_id == "slow" == stored.image_id
        assert any("not answering yet" in line for line in srv.output)
    finally:
        assert srv.stop() == 0
