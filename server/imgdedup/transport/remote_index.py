"""RemoteIndex: the IndexBackend of a front whose index writer is another process.

`dedup serve --workers N` runs N fronts over the parent's writer (a unix socket); a replica
started with writer_address uses another replica's writer (writer_listen). Checks go to the
writer over one Commit stream per front, in the order the front enqueued them (so each
BulkCheck stream keeps its write order); reads and deletes are unary calls. Errors the writer
answers reach the caller unchanged (ForwardedError); a writer that cannot be reached gives
UNAVAILABLE with RetryInfo, as an unreachable Milvus does. See docs/scale-out.md.
"""

from __future__ import annotations

import asyncio
import itertools
import logging
import time
import uuid
import weakref
from collections import Counter
from typing import Hashable

import grpc
import numpy as np
from google.rpc import status_pb2
from grpc_health.v1 import health_pb2, health_pb2_grpc

from imgdedup._proto.dedup.internal.v1 import writer_pb2 as ipb
from imgdedup._proto.dedup.internal.v1 import writer_pb2_grpc as ipb_grpc
from imgdedup._proto.dedup.v1 import dedup_pb2 as pb
from imgdedup import metrics
from imgdedup.config import Settings
from imgdedup.core.backends import ClusterView
from imgdedup.core.digests import DigestSet
from imgdedup.core.errors import DedupError, Overloaded, StorageUnavailable
from imgdedup.core.index import CheckResult, PendingImage
from imgdedup.core.priority import Priority
from imgdedup.core.rate_shares import EXPIRE_S
from imgdedup.storage.milvus import digest_key
from imgdedup.transport.errors import ForwardedError
from imgdedup.transport.messages import PRIORITY_TO_PB, allotments_of, cluster_view, hit_of, namespace_rows, vector_bytes, vector_of
from imgdedup.transport.writer_service import FRONT_ID_KEY, KEEPALIVE_OPTIONS, SERVICE_NAME

log = logging.getLogger(__name__)
MAX_ITEMS_PER_MESSAGE = 256


def writer_channel(settings: Settings) -> grpc.aio.Channel:
    address = settings.writer_address
    assert address
    options = [
        ("grpc.max_receive_message_length", settings.max_message_bytes),
        ("grpc.max_send_message_length", settings.max_message_bytes),
        # A writer restarted on the same address is found again quickly.
        ("grpc.initial_reconnect_backoff_ms", 200),
        ("grpc.max_reconnect_backoff_ms", 2000),
        *KEEPALIVE_OPTIONS,
    ]
    if settings.writer_tls_ca_file is not None:
        creds = grpc.ssl_channel_credentials(root_certificates=settings.writer_tls_ca_file.read_bytes())
        return grpc.aio.secure_channel(address, creds, options=options)
    return grpc.aio.insecure_channel(address, options=options)


def _auth_metadata(settings: Settings) -> tuple[tuple[str, str], ...]:
    token = settings.writer_token.get_secret_value() if settings.writer_token else ""
    return (("authorization", f"Bearer {token}"),) if token else ()


def _error(exc: grpc.aio.AioRpcError, address: str) -> DedupError:
    """The writer's own status when it answered one, else 'unavailable'."""
    for key, value in exc.trailing_metadata() or ():
        if key == "grpc-status-details-bin":
            return ForwardedError(status_pb2.Status.FromString(value))
    return StorageUnavailable(f"index writer at {address} unavailable: {exc.code().name}: {exc.details()}")


class _Stream:
    """One Commit call and the items sent on it that wait for their results."""

    def __init__(self, call, address: str):
        self.call = call
        self.address = address
        self.waiting: dict[int, asyncio.Future] = {}
        self.error: DedupError | None = None  # why the stream was given up, if it was
        self.receiver = asyncio.get_running_loop().create_task(self._receive(), name="commit-receiver")

    @property
    def broken(self) -> bool:
        return self.receiver.done() or self.error is not None

    def give_up(self, error: DedupError) -> None:
        """Fail what waits on this stream with `error` and end it."""
        self.error = self.error or error
        self.call.cancel()

    async def _receive(self) -> None:
        error: DedupError = StorageUnavailable(f"index writer at {self.address} closed the commit stream")
        try:
            async for response in self.call:
                for r in response.results:
                    future = self.waiting.pop(r.seq, None)
                    if future is None or future.done():
                        continue
                    if r.HasField("error"):
                        future.set_exception(ForwardedError(r.error))
                    else:
                        future.set_result(CheckResult([hit_of(m) for m in r.matches], r.stored, r.cluster_id, threshold=r.threshold, exact=r.exact_duplicate))
        except grpc.aio.AioRpcError as exc:
            error = _error(exc, self.address)
            log.error("commit stream to the index writer failed: %s", error)
        except asyncio.CancelledError:
            error = StorageUnavailable("the server is stopping")
            raise
        except Exception as exc:  # never leave a future unanswered
            error = StorageUnavailable(f"commit stream to the index writer at {self.address} failed: {exc}")
            log.exception("commit stream to the index writer failed")
        finally:
            error = self.error or error
            for future in self.waiting.values():
                if not future.done():
                    future.set_exception(error)
            self.waiting.clear()


class RemoteIndex:
    """Built whole by `open()`, once the writer answers SERVING."""

    def __init__(self, settings: Settings, channel: grpc.aio.Channel, backend: str):
        self.settings = settings
        self.address = settings.writer_address or ""
        self.backend = backend
        self._channel = channel
        self._stub = ipb_grpc.IndexWriterServiceStub(channel)
        self._health = health_pb2_grpc.HealthStub(channel)
        self._metadata = _auth_metadata(settings)
        # The same across reconnects: the writer keys this front's flows by it (writer.proto).
        self._commit_metadata = (*self._metadata, (FRONT_ID_KEY, uuid.uuid4().hex))
        self._timeout = settings.writer_timeout_s
        self._seq = itertools.count(1)
        self._flow_ids: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()
        self._next_flow = itertools.count(1)
        self._outbox: list[tuple[ipb.CommitItem, asyncio.Future]] = []
        self._queued: Counter[Priority] = Counter()
        self._wake = asyncio.Event()
        self._stream: _Stream | None = None
        self._exact_asks: list[tuple[str, str, asyncio.Future]] = []
        self._no_shares_until = 0.0  # the writer does not share rate quotas (share_rates)
        # A copy of the writer's hash set of stored bytes (WatchDigests): the digests it rules out
        # are not asked about (a FindExact call per image cost the writer's process ~0.5 ms of
        # CPU per image, a third of its share: docs/scale-out.md).
        self._digests = DigestSet()
        loop = asyncio.get_running_loop()
        self._sender = loop.create_task(self._send_loop(), name="commit-sender")
        self._watcher = loop.create_task(self._watch_digests(), name="digest-watcher")

    @classmethod
    async def open(cls, settings: Settings) -> "RemoteIndex":
        """Wait (as long as it takes: health stays NOT_SERVING meanwhile) for the writer."""
        channel = writer_channel(settings)
        health = health_pb2_grpc.HealthStub(channel)
        stub = ipb_grpc.IndexWriterServiceStub(channel)
        metadata = _auth_metadata(settings)
        try:
            info = await cls._wait_for_writer(settings, health, stub, metadata)
        except BaseException:  # given up on (cancelled), or refused
            await channel.close()
            raise
        log.info("index writer at %s: %s", settings.writer_address, info.milvus_backend)
        return cls(settings, channel, info.milvus_backend)

    @staticmethod
    async def _wait_for_writer(settings: Settings, health, stub, metadata) -> ipb.GetIndexInfoResponse:
        said = 0.0
        while True:
            try:
                answer = await health.Check(health_pb2.HealthCheckRequest(service=SERVICE_NAME), timeout=2.0)
                if answer.status == health_pb2.HealthCheckResponse.SERVING:
                    return await stub.GetIndexInfo(ipb.GetIndexInfoRequest(), timeout=settings.writer_timeout_s, metadata=metadata)
                why = health_pb2.HealthCheckResponse.ServingStatus.Name(answer.status)
            except grpc.aio.AioRpcError as exc:
                if exc.code() in (grpc.StatusCode.UNAUTHENTICATED, grpc.StatusCode.PERMISSION_DENIED):
                    raise SystemExit(f"the index writer at {settings.writer_address} refused this server: {exc.details()} (writer_token)") from None
                why = f"{exc.code().name}: {exc.details()}"
            if time.monotonic() - said > 10:
                log.warning("waiting for the index writer at %s (%s)", settings.writer_address, why)
                said = time.monotonic()
            await asyncio.sleep(0.2)

    async def close(self, grace_s: float | None = None, why: str = "the server is stopping") -> None:
        """Wait up to grace_s (default grace_period_s) for what was sent to be answered; what is
        left fails with UNAVAILABLE, saying `why`."""
        deadline = time.monotonic() + (self.settings.grace_period_s if grace_s is None else grace_s)
        while (self._outbox or (self._stream and self._stream.waiting)) and time.monotonic() < deadline:
            await asyncio.sleep(0.01)
        self._sender.cancel()
        self._watcher.cancel()
        await asyncio.gather(self._sender, self._watcher, return_exceptions=True)
        self._fail_outbox(StorageUnavailable(why))
        if self._stream is not None:
            self._stream.give_up(StorageUnavailable(why))  # what still waits fails saying why
            self._stream.receiver.cancel()
            await asyncio.gather(self._stream.receiver, return_exceptions=True)
        await self._channel.close()

    def _fail_outbox(self, error: DedupError) -> None:
        outbox, self._outbox = self._outbox, []
        for _, future in outbox:
            if not future.done():
                future.set_exception(error)

    async def healthy(self) -> bool:
        try:
            answer = await self._health.Check(health_pb2.HealthCheckRequest(service=SERVICE_NAME), timeout=2.0)
        except grpc.aio.AioRpcError as exc:
            log.error("the index writer at %s is not answering: %s", self.address, exc.code().name)
            return False
        return answer.status == health_pb2.HealthCheckResponse.SERVING

    # -- checks ----------------------------------------------------------------------------
    def might_hold(self, namespace: str, sha256: str) -> bool | None:
        if not self._digests.loaded:
            return None  # find_exact asks the writer
        return self._digests.might_contain(digest_key(sha256, namespace))

    def watch_digests(self) -> None:
        return None  # a copy is not handed on: this front's own fronts ask the writer it asks

    async def _watch_digests(self) -> None:
        """Keep self._digests a copy of the writer's set; while it is not (a broken watch, a new
        writer), it says nothing and every image is asked about, as before it was loaded."""
        delay = 0.2
        while True:
            call = self._stub.WatchDigests(ipb.WatchDigestsRequest(), metadata=self._metadata)
            try:
                async for message in call:
                    if message.keys:
                        self._digests.add_keys(np.frombuffer(message.keys, dtype="<u8"))
                    if message.loaded:
                        self._digests.loaded = True
                        log.debug("copy of the writer's digest set loaded: %d keys", len(self._digests))
                        delay = 0.2
            except grpc.aio.AioRpcError as exc:
                if exc.code() == grpc.StatusCode.UNIMPLEMENTED:  # it may keep one later (a parent elected writer)
                    log.debug("the index writer at %s keeps no digest set to copy: %s", self.address, exc.details())
                    delay = 30.0
                else:
                    log.debug("watching the writer's digest set: %s", exc.code().name)
            finally:
                call.cancel()
                self._digests.reset()
            await asyncio.sleep(delay)
            delay = min(2 * delay, 5.0) if delay < 5.0 else delay

    async def find_exact(self, namespace: str, sha256: str):
        """Asked for the digests this front's copy of the writer's set cannot rule out (all of
        them while the copy is not loaded); those hashed in one event-loop turn go in one call."""
        if not self._exact_asks:
            asyncio.get_running_loop().call_soon(self._ask_exact)
        future = asyncio.get_running_loop().create_future()
        self._exact_asks.append((namespace, sha256, future))
        image = await future
        if image.HasField("error"):
            raise ForwardedError(image.error)
        if not image.found:
            return None
        return vector_of(image.vector), [vector_of(v) for v in image.views], image.inset_views

    def _ask_exact(self) -> None:
        asks, self._exact_asks = self._exact_asks, []
        request = ipb.FindExactRequest(sha256=[d for _, d, _ in asks], namespaces=[n for n, _, _ in asks])
        task = asyncio.get_running_loop().create_task(self._unary(self._stub.FindExact, request))

        def answered(t: asyncio.Task) -> None:
            for n, (_, _, future) in enumerate(asks):
                if future.done():
                    continue
                if t.cancelled():
                    future.cancel()
                elif t.exception() is not None:
                    future.set_exception(t.exception())
                else:
                    future.set_result(t.result().images[n])

        task.add_done_callback(answered)

    def enqueue(self, item: PendingImage, priority: Priority, flow: Hashable) -> asyncio.Future[CheckResult]:
        if self._queued[priority] >= self.settings.max_queue_size:
            metrics.SHED.labels("index").inc()
            raise Overloaded("index write queue is full")
        if flow is None:
            flow_id = 0
        elif (flow_id := self._flow_ids.get(flow)) is None:
            flow_id = self._flow_ids[flow] = next(self._next_flow)
        message = ipb.CommitItem(
            seq=next(self._seq),
            image_id=item.image_id,
            vector=vector_bytes(item.vector),
            views=[vector_bytes(v) for v in item.views],
            inset_views=item.inset,
            add_to_index=item.add_to_index,
            threshold=item.threshold or 0.0,
            match_mode=item.mode,
            top_k=item.top_k,
            pixels=item.pixels,
            sha256=item.sha256,
            priority=PRIORITY_TO_PB[priority],
            flow=flow_id,
            namespace=item.namespace,
            more_coming=item.more_coming,
            exact_checked=item.exact_checked,
        )
        future = asyncio.get_running_loop().create_future()
        self._queued[priority] += 1
        future.add_done_callback(lambda _: self._queued.subtract((priority,)))
        self._outbox.append((message, future))
        self._wake.set()
        return future

    async def _send_loop(self) -> None:
        """Write what was enqueued, in order, on the current Commit stream (a new one after a
        failure: the items of a broken stream have failed with UNAVAILABLE)."""
        while True:
            await self._wake.wait()
            self._wake.clear()
            while self._outbox:
                batch, self._outbox = self._outbox[:MAX_ITEMS_PER_MESSAGE], self._outbox[MAX_ITEMS_PER_MESSAGE:]
                batch = [(m, f) for m, f in batch if not f.done()]  # cancelled by their callers
                if not batch:
                    continue
                try:
                    if self._stream is None or self._stream.broken:
                        self._stream = _Stream(self._stub.Commit(metadata=self._commit_metadata), self.address)
                    stream = self._stream
                    for message, future in batch:
                        stream.waiting[message.seq] = future
                    await stream.call.write(ipb.CommitRequest(items=[m for m, _ in batch]))
                except asyncio.CancelledError:
                    for _, future in batch:
                        if not future.done():
                            future.set_exception(StorageUnavailable("the server is stopping"))
                    raise
                except Exception as exc:  # any failure fails this batch only; the loop goes on
                    error = StorageUnavailable(f"index writer at {self.address} unavailable: {exc}")
                    log.error("writing to the index writer failed: %s", exc)
                    if self._stream is not None:
                        self._stream.give_up(error)
                    self._stream = None
                    for _, future in batch:
                        if not future.done():
                            future.set_exception(error)

    async def share_rates(self, process: str, demand: dict[str, float]):
        """Asked every half second, with a deadline of its own: the writer counts a process out
        after EXPIRE_S without a report. A writer of an older release (UNIMPLEMENTED) is asked
        again every 30 s only; meanwhile each process keeps its own part."""
        if time.monotonic() < self._no_shares_until:
            return None
        try:
            answer = await self._stub.ShareRates(ipb.ShareRatesRequest(process=process, demand=demand), timeout=min(self._timeout, EXPIRE_S / 2), metadata=self._metadata)
        except grpc.aio.AioRpcError as exc:
            if exc.code() != grpc.StatusCode.UNIMPLEMENTED:
                raise _error(exc, self.address) from None
            log.warning("the index writer at %s shares no rate quotas (an older release): each process keeps its own part of them", self.address)
            self._no_shares_until = time.monotonic() + 30.0
            return None
        return allotments_of(answer)

    # -- deletes and reads -------------------------------------------------------------------
    async def _unary(self, method, request):
        try:
            return await method(request, timeout=self._timeout, metadata=self._metadata)
        except grpc.aio.AioRpcError as exc:
            raise _error(exc, self.address) from None

    async def delete(self, namespace: str, image_ids: list[str]) -> tuple[list[str], list[str]]:
        answer = await self._unary(self._stub.DeleteImages, pb.DeleteImagesRequest(namespace=namespace, image_ids=image_ids))
        return list(answer.deleted_ids), list(answer.not_found_ids)

    async def list_clusters(self, namespace: str, page_size: int, page_token: str, min_size: int) -> tuple[list[ClusterView], str, int]:
        request = pb.ListClustersRequest(namespace=namespace, page_size=page_size, page_token=page_token, min_size=min_size)
        answer = await self._unary(self._stub.ListClusters, request)
        return [cluster_view(c) for c in answer.clusters], answer.next_page_token, answer.total_size

    async def get_cluster(self, namespace: str, cluster_id: str) -> ClusterView:
        return cluster_view(await self._unary(self._stub.GetCluster, pb.GetClusterRequest(namespace=namespace, cluster_id=cluster_id)))

    async def counts(self, namespace: str) -> tuple[int, int]:
        answer = await self._unary(self._stub.GetIndexInfo, ipb.GetIndexInfoRequest(namespace=namespace))
        return answer.indexed_images, answer.clusters

    async def namespaces(self) -> list[tuple[str, int, int]]:
        return namespace_rows(await self._unary(self._stub.ListNamespaces, pb.ListNamespacesRequest()))

    async def delete_namespace(self, namespace: str) -> int:
        answer = await self._unary(self._stub.DeleteNamespace, pb.DeleteNamespaceRequest(namespace=namespace, confirm=namespace))
        return answer.deleted_images
