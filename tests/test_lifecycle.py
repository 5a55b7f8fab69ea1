"""Health, reflection, restart on the same data dir, clean shutdown, generated code."""

from __future__ import annotations

import signal
import subprocess
import sys

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection_pb2, reflection_pb2_grpc

from conftest import MILVUS, ROOT, ServerProcess, channel_for, check, encode, rgb, wait_until
from imgdedup._proto.dedup.v1 import dedup_pb2 as pb
from imgdedup._proto.dedup.v1 import dedup_pb2_grpc as pb_grpc


def test_generated_code_matches_the_proto():
    proc = subprocess.run([sys.executable, str(ROOT / "scripts" / "gen_protos.py"), "--check"], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stdout + proc.stderr


def test_health_serves_only_once_model_and_milvus_are_ready(tmp_path):
    srv = ServerProcess(tmp_path).start(wait_ready=False)
    try:
        seen = []
        with channel_for(srv.target) as channel:
            health = health_pb2_grpc.HealthStub(channel)
            stub = pb_grpc.DedupServiceStub(channel)
            while True:
                status = health.Check(health_pb2.HealthCheckRequest(service="dedup.v1.DedupService"), timeout=10).status
                if not seen or seen[-1] != status:
                    seen.append(status)
                if status == health_pb2.HealthCheckResponse.SERVING:
                    break
                try:  # while not serving, calls are refused with UNAVAILABLE, not hung or crashed
                    stub.GetInfo(pb.GetInfoRequest(), timeout=10)
                except grpc.RpcError as err:
                    assert err.code() == grpc.StatusCode.UNAVAILABLE
            assert seen == [health_pb2.HealthCheckResponse.NOT_SERVING, health_pb2.HealthCheckResponse.SERVING]
            assert stub.GetInfo(pb.GetInfoRequest(), timeout=10).indexed_images == 0
    finally:
        assert srv.stop() == 0


def test_reflection_lists_the_services(server):
    with channel_for(server.target) as channel:
        stub = reflection_pb2_grpc.ServerReflectionStub(channel)
        (resp,) = stub.ServerReflectionInfo(iter([reflection_pb2.ServerReflectionRequest(list_services="")]))
        names = {s.name for s in resp.list_services_response.service}
    assert {"dedup.v1.DedupService", "grpc.health.v1.Health"} <= names


def test_info_describes_the_model_and_backend(stub):
    info = stub.GetInfo(pb.GetInfoRequest())
    assert info.model_name == "sscd_disc_mixup"
    assert info.input_size == 288 and info.embedding_dim == 512
    assert "CPUExecutionProvider" in info.execution_providers or "CUDAExecutionProvider" in info.execution_providers
    assert 0 < info.default_threshold <= 1
    assert info.milvus_backend == ("milvus-lite" if MILVUS == "lite" else "milvus")
    assert info.version


def test_restart_on_the_same_data_dir_keeps_everything(tmp_path):
    a, c = rgb("astronaut"), rgb("coffee")
    srv = ServerProcess(tmp_path).start()
    with channel_for(srv.target) as channel:
        stub = pb_grpc.DedupServiceStub(channel)
        first = check(stub, encode(a), image_id="a", add=True)
        check(stub, encode(a[:, ::-1].copy()), image_id="a-flip", add=True)
        check(stub, encode(c), image_id="c", add=True)
        before = stub.ListClusters(pb.ListClustersRequest(min_size=1))
    assert srv.stop(signal.SIGTERM) == 0

    srv2 = ServerProcess(tmp_path).start()
    try:
        with channel_for(srv2.target) as channel:
            stub = pb_grpc.DedupServiceStub(channel)
            assert stub.GetInfo(pb.GetInfoRequest()).indexed_images == 3
            after = stub.ListClusters(pb.ListClustersRequest(min_size=1))
            assert after == before
            r = check(stub, encode((a * 0.7).astype("uint8")))
            assert r.is_duplicate and r.matches[0].cluster_id == first.cluster_id
            # The in-memory hash sets are refilled from Milvus: stored bytes are still exact
            # duplicates once they are loaded, and deleted ones are not.
            assert wait_until(lambda: any("hashes of stored images loaded: 3 images" in line for line in srv2.output))
            again = check(stub, encode(c))
            assert again.exact_duplicate and again.matches[0].image_id == "c"
            stub.DeleteImages(pb.DeleteImagesRequest(image_ids=["c"]))
            gone = check(stub, encode(c))
            assert not gone.exact_duplicate and "c" not in [m.image_id for m in gone.matches]
            # Stored ids are known again too: the same id and bytes store nothing new, the same
            # id with other bytes replaces the image (and leaves the astronaut's cluster).
            resent = check(stub, encode(a), image_id="a", add=True)
            assert resent.stored and resent.cluster_id == first.cluster_id
            assert stub.GetInfo(pb.GetInfoRequest()).indexed_images == 2
            replaced = check(stub, encode(rgb("chelsea")), image_id="a-flip", add=True)
            assert replaced.stored and replaced.cluster_id != first.cluster_id
            assert stub.GetInfo(pb.GetInfoRequest()).indexed_images == 2
            cluster = stub.GetCluster(pb.GetClusterRequest(cluster_id=first.cluster_id))
            assert [m.image_id for m in cluster.members] == ["a"]
    finally:
        assert srv2.stop() == 0
