"""DedupService over gRPC: a thin translation between protobuf messages and the engine."""

from __future__ import annotations

import asyncio
import functools
import logging
from collections import deque
from typing import AsyncIterator

import grpc

import time

from imgdedup import __version__, logs, metrics
from imgdedup._proto.dedup.v1 import dedup_pb2 as pb
from imgdedup._proto.dedup.v1 import dedup_pb2_grpc as pb_grpc
from imgdedup.core.engine import CheckOutcome, CheckRequest, EngineSlot, StreamOrder
from imgdedup.core.errors import InvalidArgument, Overloaded
from imgdedup.core.match_modes import MatchMode
from imgdedup.core.priority import Priority
from imgdedup.transport.errors import abort, to_status
from imgdedup.transport.messages import PRIORITY_FROM_PB, cluster_pb, match_pb, namespaces_pb

log = logging.getLogger(__name__)


_CODE_NAMES = {code.value[0]: code.name for code in grpc.StatusCode}


def _observe(method: str, started: float, code: int) -> None:
    name = _CODE_NAMES.get(code, str(code))
    elapsed = time.perf_counter() - started
    metrics.REQUESTS.labels(method, name).inc()
    metrics.REQUEST_SECONDS.labels(method).observe(elapsed)
    log.debug("%s %s in %.1f ms", method, name, elapsed * 1000)


def _request_id(context) -> tuple[tuple[str, str]]:
    """The RPC's request id (the caller's x-request-id, or a new one), set for every log line of
    this RPC; returned as the metadata that carries it back."""
    rid = logs.request_id(context.invocation_metadata())
    logs.REQUEST_ID.set(rid)
    return ((logs.REQUEST_ID_KEY, rid),)


def _unary(method):
    """Turn data-plane errors into gRPC statuses with details; count and time every call. The
    request id goes back in the trailing metadata: headers sent early would commit the call, and
    a client could no longer retry an UNAVAILABLE answer (gRFC A6)."""

    @functools.wraps(method)
    async def wrapper(self, request, context):
        started = time.perf_counter()
        rid = _request_id(context)
        try:
            response = await method(self, request, context)
        except asyncio.CancelledError:
            _observe(method.__name__, started, grpc.StatusCode.CANCELLED.value[0])
            raise
        except Exception as exc:
            status = to_status(exc)
            _observe(method.__name__, started, status.code)
            await abort(context, exc, rid)
        _observe(method.__name__, started, 0)
        context.set_trailing_metadata(rid)
        return response

    return wrapper


_PRIORITIES = PRIORITY_FROM_PB


def _priority(value: int, default: Priority) -> Priority:
    """The proto's priority (an open enum: any int may arrive), `default` when unspecified."""
    if value == pb.PRIORITY_UNSPECIFIED:
        return default
    try:
        return _PRIORITIES[value]
    except KeyError:
        raise InvalidArgument("priority", f"unknown priority {value}; use PRIORITY_HIGH or PRIORITY_LOW, or leave it unset") from None


def _match_mode(value: int) -> MatchMode:
    """The proto's match mode (an open enum), DUPLICATES when unspecified."""
    if value == pb.MATCH_MODE_UNSPECIFIED:
        return MatchMode.DUPLICATES
    try:
        return MatchMode(value)
    except ValueError:
        raise InvalidArgument("match_mode", f"unknown match_mode {value}; use MATCH_MODE_DUPLICATES, MATCH_MODE_COPIES or MATCH_MODE_NEAR_DUPLICATES, or leave it unset") from None


def _check_request(msg: pb.CheckDuplicateRequest | pb.BulkCheckRequest, priority: Priority) -> CheckRequest:
    return CheckRequest(
        image_id=msg.image_id,
        image=msg.image,
        add_to_index=msg.add_to_index,
        threshold=msg.threshold if msg.HasField("threshold") else None,
        top_k=msg.top_k if msg.HasField("top_k") else None,
        priority=priority,
        namespace=msg.namespace,
        match_mode=_match_mode(msg.match_mode),
    )


def _check_response(o: CheckOutcome) -> pb.CheckDuplicateResponse:
    return pb.CheckDuplicateResponse(
        image_id=o.image_id,
        is_duplicate=o.is_duplicate,
        matches=[match_pb(m, k) for m, k in zip(o.matches, o.kinds)],
        stored=o.stored,
        cluster_id=o.cluster_id,
        threshold=o.threshold,
        width=o.width,
        height=o.height,
        format=o.format,
        exact_duplicate=o.exact_duplicate,
        timings=pb.Timings(decode_ms=o.decode_ms, embed_ms=o.embed_ms, index_ms=o.index_ms, total_ms=o.total_ms),
    )


class DedupServicer(pb_grpc.DedupServiceServicer):
    def __init__(self, slot: EngineSlot):
        self.slot = slot  # the engine, once the server has started (else NOT_READY)

    @_unary
    async def CheckDuplicate(self, request, context):
        return _check_response(await self.slot.engine.check(_check_request(request, _priority(request.priority, Priority.HIGH))))

    async def BulkCheck(self, request_iterator: AsyncIterator[pb.BulkCheckRequest], context) -> AsyncIterator[pb.BulkCheckResponse]:
        """Items run concurrently (decode, batched embedding, batched writes), at most
        bulk_max_in_flight at a time; responses go out in request order as they complete.

        The stream has one priority, its first request's (default low; see StreamOrder)."""
        # A stream's request id comes back at its start (its headers), for the whole stream.
        await context.send_initial_metadata(_request_id(context))
        metrics.BULK_STREAMS.inc()
        try:
            async for response in self._bulk(request_iterator):
                yield response
        finally:
            metrics.BULK_STREAMS.dec()

    async def _bulk(self, request_iterator: AsyncIterator[pb.BulkCheckRequest]) -> AsyncIterator[pb.BulkCheckResponse]:
        limit = self.slot.settings.bulk_max_in_flight
        in_flight: deque[asyncio.Task] = deque()
        slots = asyncio.Semaphore(limit)
        done_reading = asyncio.Event()
        read_error: list[BaseException] = []

        async def run_one(index: int, req: CheckRequest, ticket) -> pb.BulkCheckResponse:
            started = time.perf_counter()
            try:
                outcome = await self.slot.engine.check(req, ticket)
                _observe("BulkCheck", started, 0)
                return pb.BulkCheckResponse(image_id=outcome.image_id, index=index, result=_check_response(outcome))
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                status = to_status(exc)
                _observe("BulkCheck", started, status.code)
                return pb.BulkCheckResponse(image_id=req.image_id, index=index, error=status)
            finally:
                slots.release()

        max_items = self.slot.settings.bulk_max_items

        async def refuse(index: int, msg: pb.BulkCheckRequest, exc: Exception) -> pb.BulkCheckResponse:
            """An item refused before it takes a place in the write order."""
            slots.release()
            status = to_status(exc)
            _observe("BulkCheck", time.perf_counter(), status.code)
            return pb.BulkCheckResponse(image_id=msg.image_id, index=index, error=status)

        def item(index: int, msg: pb.BulkCheckRequest, order: StreamOrder) -> asyncio.Task:
            if index >= max_items:
                exc = Overloaded(f"a BulkCheck stream takes at most {max_items} images (bulk_max_items); open a new stream", retry_after_s=0)
                return asyncio.create_task(refuse(index, msg, exc))
            try:
                req = _check_request(msg, _priority(msg.priority, order.priority))
            except InvalidArgument as exc:
                return asyncio.create_task(refuse(index, msg, exc))
            return asyncio.create_task(run_one(index, req, order.ticket()))

        new_task = asyncio.Event()

        async def reader() -> None:
            try:
                index, order = 0, None
                async for msg in request_iterator:
                    if order is None:  # the stream's priority (an unknown value fails this item only)
                        order = StreamOrder(_PRIORITIES.get(msg.priority, Priority.LOW))
                    await slots.acquire()  # backpressure: stop reading while the window is full
                    in_flight.append(item(index, msg, order))
                    new_task.set()
                    index += 1
            except Exception as exc:  # the client broke the stream
                read_error.append(exc)
            finally:
                done_reading.set()
                new_task.set()

        read_task = asyncio.create_task(reader())
        try:
            while True:
                if in_flight:
                    yield await in_flight.popleft()
                    continue
                if done_reading.is_set():
                    break
                new_task.clear()
                await new_task.wait()
        finally:  # on cancellation stop all work of this stream at once
            read_task.cancel()
            for t in in_flight:
                t.cancel()
            await asyncio.gather(read_task, *in_flight, return_exceptions=True)
        if read_error and not isinstance(read_error[0], asyncio.CancelledError):
            log.warning("BulkCheck request stream failed: %s", read_error[0])

    @_unary
    async def ListClusters(self, request, context):
        views, token, total = await self.slot.engine.list_clusters(
            namespace=request.namespace,
            page_size=request.page_size,
            page_token=request.page_token,
            min_size=request.min_size if request.HasField("min_size") else None,
        )
        return pb.ListClustersResponse(clusters=[cluster_pb(v) for v in views], next_page_token=token, total_size=total)

    @_unary
    async def GetCluster(self, request, context):
        return cluster_pb(await self.slot.engine.get_cluster(request.cluster_id, request.namespace))

    @_unary
    async def DeleteImages(self, request, context):
        deleted, not_found = await self.slot.engine.delete(request.namespace, list(request.image_ids))
        return pb.DeleteImagesResponse(deleted_ids=deleted, not_found_ids=not_found)

    @_unary
    async def GetInfo(self, request, context):
        info = await self.slot.engine.info(request.namespace)
        return pb.GetInfoResponse(version=__version__, **info)

    @_unary
    async def ListNamespaces(self, request, context):
        return namespaces_pb(await self.slot.engine.list_namespaces())

    @_unary
    async def DeleteNamespace(self, request, context):
        return pb.DeleteNamespaceResponse(deleted_images=await self.slot.engine.delete_namespace(request.namespace, request.confirm))

