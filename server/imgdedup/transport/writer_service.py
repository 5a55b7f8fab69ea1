"""IndexWriterService over gRPC: the one writer of a collection, serving the fronts of other
processes (`dedup serve --workers N`'s children, replicas started with writer_address).

A thin translation over an IndexBackend (a LocalIndex; under `--workers` with writer_election,
the parent's ElectedIndex, which may itself be a front of another replica's writer), as
DedupServicer is over the engine. Each Commit stream
is one front's connection: its items are queued in the order they arrive (flows keep their
FIFO order and fair turns, core/priority.py), and their results go back as they complete.
"""

from __future__ import annotations

import asyncio
import functools
import logging
import weakref
from typing import AsyncIterator

import grpc

from imgdedup._proto.dedup.internal.v1 import writer_pb2 as ipb
from imgdedup._proto.dedup.internal.v1 import writer_pb2_grpc as ipb_grpc
from imgdedup._proto.dedup.v1 import dedup_pb2 as pb
from imgdedup.core.index import CheckResult, PendingImage
from imgdedup.core.backends import IndexBackend
from imgdedup.core.match_modes import MatchMode
from imgdedup.core.priority import Priority
from imgdedup.storage.milvus import DEFAULT_NAMESPACE
from imgdedup.transport.errors import abort, to_status
from imgdedup.transport.messages import PRIORITY_FROM_PB, allotments_pb, cluster_pb, match_pb, namespaces_pb, vector_bytes, vector_of

log = logging.getLogger(__name__)
SERVICE_NAME = ipb.DESCRIPTOR.services_by_name["IndexWriterService"].full_name
DIGEST_CHUNK = 1 << 16
FRONT_ID_KEY = "dedup-front-id"  # Commit metadata: which front, the same across its reconnects
# Both ends ping an idle connection, so a half-open one (a dropped NAT entry, a dead host) is
# noticed in seconds and its items fail with UNAVAILABLE instead of waiting for ever.
KEEPALIVE_OPTIONS = [
    ("grpc.keepalive_time_ms", 10_000),
    ("grpc.keepalive_timeout_ms", 5_000),
    ("grpc.keepalive_permit_without_calls", 1),
    ("grpc.http2.max_pings_without_data", 0),
    ("grpc.http2.min_ping_interval_without_data_ms", 5_000),
]

def _pending(it: ipb.CommitItem) -> PendingImage:
    return PendingImage(
        image_id=it.image_id,
        vector=vector_of(it.vector),
        add_to_index=it.add_to_index,
        threshold=it.threshold or None,
        top_k=it.top_k,
        pixels=it.pixels,
        sha256=it.sha256,
        views=[vector_of(v) for v in it.views],
        inset=it.inset_views and len(it.views) > 0,
        namespace=it.namespace or DEFAULT_NAMESPACE,
        mode=MatchMode(it.match_mode or MatchMode.DUPLICATES),
        more_coming=it.more_coming,
        exact_checked=it.exact_checked,
    )


def _result(seq: int, r: CheckResult) -> ipb.CommitResult:
    return ipb.CommitResult(
        seq=seq,
        matches=[match_pb(m) for m in r.matches],
        stored=r.stored,
        cluster_id=r.cluster_id,
        threshold=r.threshold,
        exact_duplicate=r.exact,
    )


def _exact(found) -> ipb.ExactImage:
    if isinstance(found, BaseException):
        return ipb.ExactImage(error=to_status(found))
    if found is None:
        return ipb.ExactImage()
    vector, views, inset = found
    return ipb.ExactImage(found=True, vector=vector_bytes(vector), views=[vector_bytes(v) for v in views], inset_views=inset)


def _internal(method):
    """Data-plane errors become statuses with details, which the front passes on unchanged."""

    @functools.wraps(method)
    async def wrapper(self, request, context):
        try:
            return await method(self, request, context)
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            await abort(context, exc)

    return wrapper


class _Flow:
    """One front's stream, as the index queues know it: an object, not a tuple, so that a
    RemoteIndex (the parent of `--workers` fronts following another replica's writer) can key it
    weakly, and it is gone once nothing of the stream is queued."""

    __slots__ = ("__weakref__",)


class IndexWriterServicer(ipb_grpc.IndexWriterServiceServicer):
    def __init__(self, index: IndexBackend):
        self.index = index
        # (front, its flow number) -> _Flow, while items of it are queued (their done callbacks
        # hold it): a reconnected front's next items queue behind what the broken call left.
        self._flows: weakref.WeakValueDictionary = weakref.WeakValueDictionary()

    def _flow(self, front, number: int) -> _Flow | None:
        if not number:
            return None
        flow = self._flows.get((front, number))
        if flow is None:
            flow = self._flows[(front, number)] = _Flow()
        return flow

    async def Commit(self, request_iterator: AsyncIterator[ipb.CommitRequest], context) -> AsyncIterator[ipb.CommitResponse]:
        results: asyncio.Queue[ipb.CommitResult] = asyncio.Queue()
        outstanding = 0
        done_reading = asyncio.Event()
        # This front's flows are its own; keyed by its id, not by this call, so that after a
        # reconnect its stream's next items queue behind the ones the broken call left queued.
        front = dict(context.invocation_metadata() or ()).get(FRONT_ID_KEY) or object()

        def finished(seq: int, flow: _Flow | None, future: asyncio.Future) -> None:
            try:
                if future.cancelled():
                    result = ipb.CommitResult(seq=seq, error=to_status(asyncio.CancelledError()))
                elif (exc := future.exception()) is not None:
                    result = ipb.CommitResult(seq=seq, error=to_status(exc))
                else:
                    result = _result(seq, future.result())
            except Exception as exc:  # every item gets its answer
                result = ipb.CommitResult(seq=seq, error=to_status(exc))
            results.put_nowait(result)

        async def reader() -> None:
            nonlocal outstanding
            try:
                async for request in request_iterator:
                    for it in request.items:
                        outstanding += 1
                        flow = self._flow(front, it.flow)
                        try:
                            future = self.index.enqueue(_pending(it), PRIORITY_FROM_PB.get(it.priority, Priority.LOW), flow)
                        except Exception as exc:  # Overloaded: this item only
                            results.put_nowait(ipb.CommitResult(seq=it.seq, error=to_status(exc)))
                            continue
                        future.add_done_callback(functools.partial(finished, it.seq, flow))
            except Exception as exc:  # the front went away; queued writes still complete
                log.info("a front's commit stream ended: %s", exc)
            finally:
                done_reading.set()
                results.put_nowait(None)  # wakes the writer loop below

        read_task = asyncio.create_task(reader())
        try:
            while not (done_reading.is_set() and outstanding == 0):
                first = await results.get()
                batch = [first] if first is not None else []
                while not results.empty():
                    r = results.get_nowait()
                    if r is not None:
                        batch.append(r)
                if batch:
                    outstanding -= len(batch)
                    yield ipb.CommitResponse(results=batch)
        finally:
            read_task.cancel()
            await asyncio.gather(read_task, return_exceptions=True)

    @_internal
    async def FindExact(self, request, context):
        spaces = list(request.namespaces) or [DEFAULT_NAMESPACE] * len(request.sha256)
        found = await asyncio.gather(*(self.index.find_exact(n or DEFAULT_NAMESPACE, d) for n, d in zip(spaces, request.sha256)), return_exceptions=True)
        return ipb.FindExactResponse(images=[_exact(f) for f in found])

    async def WatchDigests(self, request, context) -> AsyncIterator[ipb.WatchDigestsResponse]:
        keys = self.index.watch_digests()
        if keys is None:
            await context.abort(grpc.StatusCode.UNIMPLEMENTED, "this writer keeps no hash set of stored bytes (digest_cache is off, or it is a front)")
        first = True
        async for batch in keys:
            if first:  # the whole set, in messages of at most 64k keys (512 KiB)
                for at in range(0, len(batch), DIGEST_CHUNK):
                    yield ipb.WatchDigestsResponse(keys=batch[at:at + DIGEST_CHUNK].astype("<u8").tobytes())
                yield ipb.WatchDigestsResponse(loaded=True)
                first = False
            else:
                yield ipb.WatchDigestsResponse(keys=batch.astype("<u8").tobytes())

    @_internal
    async def ShareRates(self, request, context):
        return allotments_pb(await self.index.share_rates(request.process, dict(request.demand)))

    @_internal
    async def DeleteImages(self, request, context):
        deleted, not_found = await self.index.delete(request.namespace or DEFAULT_NAMESPACE, list(request.image_ids))
        return pb.DeleteImagesResponse(deleted_ids=deleted, not_found_ids=not_found)

    @_internal
    async def ListClusters(self, request, context):
        views, token, total = await self.index.list_clusters(request.namespace or DEFAULT_NAMESPACE, request.page_size, request.page_token, request.min_size)
        return pb.ListClustersResponse(clusters=[cluster_pb(v) for v in views], next_page_token=token, total_size=total)

    @_internal
    async def GetCluster(self, request, context):
        return cluster_pb(await self.index.get_cluster(request.namespace or DEFAULT_NAMESPACE, request.cluster_id))

    @_internal
    async def GetIndexInfo(self, request, context):
        images, clusters = await self.index.counts(request.namespace or DEFAULT_NAMESPACE)
        return ipb.GetIndexInfoResponse(milvus_backend=self.index.backend, indexed_images=images, clusters=clusters)

    @_internal
    async def ListNamespaces(self, request, context):
        return namespaces_pb(await self.index.namespaces())

    @_internal
    async def DeleteNamespace(self, request, context):
        return pb.DeleteNamespaceResponse(deleted_images=await self.index.delete_namespace(request.namespace or DEFAULT_NAMESPACE))
