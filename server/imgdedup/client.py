"""A small synchronous Python client for DedupService (used by the CLI and the benchmarks)."""

from __future__ import annotations

from collections import namedtuple
from pathlib import Path
from typing import Iterable, Iterator

import grpc

from imgdedup._proto.dedup.v1 import dedup_pb2 as pb
from imgdedup._proto.dedup.v1 import dedup_pb2_grpc as pb_grpc

MAX_MESSAGE_BYTES = 64 * 1024 * 1024


class _CallDetails(namedtuple("_CallDetails", "method timeout metadata credentials wait_for_ready compression"), grpc.ClientCallDetails):
    pass


class _BearerToken(grpc.UnaryUnaryClientInterceptor, grpc.UnaryStreamClientInterceptor, grpc.StreamUnaryClientInterceptor, grpc.StreamStreamClientInterceptor):
    """Adds `authorization: Bearer <token>` to every call made through the channel."""

    def __init__(self, token: str):
        if not token or not all(0x21 <= ord(ch) <= 0x7E for ch in token):
            raise ValueError("a token must be printable ASCII without spaces")
        self._header = ("authorization", f"Bearer {token}")

    def __repr__(self) -> str:
        return "_BearerToken(<hidden>)"

    def _details(self, d: grpc.ClientCallDetails) -> _CallDetails:
        metadata = [m for m in (d.metadata or ()) if m[0] != "authorization"] + [self._header]
        return _CallDetails(d.method, d.timeout, metadata, d.credentials, getattr(d, "wait_for_ready", None), getattr(d, "compression", None))

    def intercept_unary_unary(self, continuation, client_call_details, request):
        return continuation(self._details(client_call_details), request)

    def intercept_unary_stream(self, continuation, client_call_details, request):
        return continuation(self._details(client_call_details), request)

    def intercept_stream_unary(self, continuation, client_call_details, request_iterator):
        return continuation(self._details(client_call_details), request_iterator)

    def intercept_stream_stream(self, continuation, client_call_details, request_iterator):
        return continuation(self._details(client_call_details), request_iterator)


class DedupClient:
    """Plaintext by default. TLS when any tls_* argument is given: `tls_ca_file` (PEM roots that
    sign the server's certificate; default: the system roots), `tls_cert_file` + `tls_key_file`
    (this client's certificate for mutual TLS), `tls_server_name` (the name to verify in the
    server's certificate, when it differs from the target's host). `token`: sent as
    `authorization: Bearer <token>` on every DedupService call. `namespace`: the namespace every
    call works in ("" = the server's default), unless a request names its own."""

    def __init__(
        self,
        target: str = "127.0.0.1:50051",
        *,
        timeout: float | None = 60.0,
        tls_ca_file: str | Path | None = None,
        tls_cert_file: str | Path | None = None,
        tls_key_file: str | Path | None = None,
        tls_server_name: str | None = None,
        token: str | None = None,
        namespace: str = "",
    ):
        self.namespace = namespace
        options = [
            ("grpc.max_send_message_length", MAX_MESSAGE_BYTES),
            ("grpc.max_receive_message_length", MAX_MESSAGE_BYTES),
        ]
        auth = _BearerToken(token.strip()) if token and token.strip() else None
        if (tls_cert_file is None) != (tls_key_file is None):
            raise ValueError("a client certificate needs both tls_cert_file and tls_key_file")
        if any(x is not None for x in (tls_ca_file, tls_cert_file, tls_server_name)):
            if tls_server_name:
                options.append(("grpc.ssl_target_name_override", tls_server_name))
            credentials = grpc.ssl_channel_credentials(
                root_certificates=Path(tls_ca_file).read_bytes() if tls_ca_file is not None else None,
                private_key=Path(tls_key_file).read_bytes() if tls_key_file is not None else None,
                certificate_chain=Path(tls_cert_file).read_bytes() if tls_cert_file is not None else None,
            )
            self.channel = grpc.secure_channel(target, credentials, options=options)
        else:
            self.channel = grpc.insecure_channel(target, options=options)
        # Health checks (wait_ready) go over the bare channel; DedupService calls carry the token.
        calls = grpc.intercept_channel(self.channel, auth) if auth else self.channel
        self.stub = pb_grpc.DedupServiceStub(calls)
        self.timeout = timeout

    def close(self) -> None:
        self.channel.close()

    def __enter__(self) -> "DedupClient":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def health(self, service: str = "", *, timeout: float = 2.0) -> str:
        """The grpc.health.v1 status name ("SERVING", "NOT_SERVING", ...) of `service`
        ("" = the whole server); raises grpc.RpcError when the server does not answer."""
        from grpc_health.v1 import health_pb2, health_pb2_grpc

        status = health_pb2_grpc.HealthStub(self.channel).Check(health_pb2.HealthCheckRequest(service=service), timeout=timeout).status
        return health_pb2.HealthCheckResponse.ServingStatus.Name(status)

    def wait_ready(self, timeout: float = 120.0) -> None:
        import time

        deadline = time.monotonic() + timeout
        while True:
            try:
                if self.health() == "SERVING":
                    return
            except grpc.RpcError:
                pass
            if time.monotonic() > deadline:
                raise TimeoutError("server did not become ready")
            time.sleep(0.1)

    def check(self, image: bytes, *, image_id: str = "", add_to_index: bool = False, threshold: float | None = None, top_k: int | None = None,
              match_mode: int = pb.MATCH_MODE_UNSPECIFIED) -> pb.CheckDuplicateResponse:
        req = pb.CheckDuplicateRequest(image_id=image_id, image=image, add_to_index=add_to_index, threshold=threshold, top_k=top_k, namespace=self.namespace, match_mode=match_mode)
        return self.stub.CheckDuplicate(req, timeout=self.timeout)

    def bulk_check(self, requests: Iterable[pb.BulkCheckRequest], *, timeout: float | None = None) -> Iterator[pb.BulkCheckResponse]:
        def named(items: Iterable[pb.BulkCheckRequest]) -> Iterator[pb.BulkCheckRequest]:
            for r in items:
                if self.namespace and not r.namespace:
                    r.namespace = self.namespace
                yield r

        return self.stub.BulkCheck(named(requests), timeout=timeout)

    def list_clusters(self, *, min_size: int = 2, page_size: int = 100) -> Iterator[pb.Cluster]:
        token = ""
        while True:
            req = pb.ListClustersRequest(page_size=page_size, page_token=token, min_size=min_size, namespace=self.namespace)
            resp = self.stub.ListClusters(req, timeout=self.timeout)
            yield from resp.clusters
            token = resp.next_page_token
            if not token:
                return

    def delete(self, image_ids: list[str]) -> pb.DeleteImagesResponse:
        return self.stub.DeleteImages(pb.DeleteImagesRequest(image_ids=image_ids, namespace=self.namespace), timeout=self.timeout)

    def get_cluster(self, cluster_id: str) -> pb.Cluster:
        return self.stub.GetCluster(pb.GetClusterRequest(cluster_id=cluster_id, namespace=self.namespace), timeout=self.timeout)

    def info(self) -> pb.GetInfoResponse:
        return self.stub.GetInfo(pb.GetInfoRequest(namespace=self.namespace), timeout=self.timeout)

    def namespaces(self) -> list[pb.Namespace]:
        return list(self.stub.ListNamespaces(pb.ListNamespacesRequest(), timeout=self.timeout).namespaces)

    def delete_namespace(self, namespace: str, *, confirm: str) -> int:
        """Delete a whole namespace; `confirm` must repeat its name. Returns the images deleted."""
        answer = self.stub.DeleteNamespace(pb.DeleteNamespaceRequest(namespace=namespace, confirm=confirm), timeout=self.timeout)
        return answer.deleted_images
