"""A small synchronous Python client for DedupService (used by the CLI and the benchmarks)."""

from __future__ import annotations

from typing import Iterable, Iterator

import grpc

from imgdedup._proto.dedup.v1 import dedup_pb2 as pb
from imgdedup._proto.dedup.v1 import dedup_pb2_grpc as pb_grpc

MAX_MESSAGE_BYTES = 64 * 1024 * 1024


class DedupClient:
    def __init__(self, target: str = "127.0.0.1:50051", *, timeout: float | None = 60.0):
        self.channel = grpc.insecure_channel(
            target,
            options=[
                ("grpc.max_send_message_length", MAX_MESSAGE_BYTES),
                ("grpc.max_receive_message_length", MAX_MESSAGE_BYTES),
            ],
        )
        self.stub = pb_grpc.DedupServiceStub(self.channel)
        self.timeout = timeout

    def close(self) -> None:
        self.channel.close()

    def __enter__(self) -> "DedupClient":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def wait_ready(self, timeout: float = 120.0) -> None:
        from grpc_health.v1 import health_pb2, health_pb2_grpc
        import time

        health = health_pb2_grpc.HealthStub(self.channel)
        deadline = time.monotonic() + timeout
        while True:
            try:
                if health.Check(health_pb2.HealthCheckRequest(), timeout=2).status == health_pb2.HealthCheckResponse.SERVING:
                    return
            except grpc.RpcError:
                pass
            if time.monotonic() > deadline:
                raise TimeoutError("server did not become ready")
            time.sleep(0.1)

    def check(self, image: bytes, *, image_id: str = "", add_to_index: bool = False, threshold: float | None = None, top_k: int | None = None) -> pb.CheckDuplicateResponse:
        req = pb.CheckDuplicateRequest(image_id=image_id, image=image, add_to_index=add_to_index, threshold=threshold, top_k=top_k)
        return self.stub.CheckDuplicate(req, timeout=self.timeout)

    def bulk_check(self, requests: Iterable[pb.BulkCheckRequest], *, timeout: float | None = None) -> Iterator[pb.BulkCheckResponse]:
        return self.stub.BulkCheck(iter(requests), timeout=timeout)

    def list_clusters(self, *, min_size: int = 2, page_size: int = 100) -> Iterator[pb.Cluster]:
        token = ""
        while True:
            resp = self.stub.ListClusters(pb.ListClustersRequest(page_size=page_size, page_token=token, min_size=min_size), timeout=self.timeout)
            yield from resp.clusters
            token = resp.next_page_token
            if not token:
                return

    def delete(self, image_ids: list[str]) -> pb.DeleteImagesResponse:
        return self.stub.DeleteImages(pb.DeleteImagesRequest(image_ids=image_ids), timeout=self.timeout)

    def info(self) -> pb.GetInfoResponse:
        return self.stub.GetInfo(pb.GetInfoRequest(), timeout=self.timeout)
