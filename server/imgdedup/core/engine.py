"""DedupEngine: the data plane that every transport (unary, streaming, CLI) goes through.

check = validate -> decode + preprocess (thread pool) -> batched embedding -> the index
(core/backends.py: batched writes by the collection's one writer, in this process or another).
The engine knows nothing about gRPC.

Each check carries a Priority (core/priority.py): every one of the three queues (decode, model,
index writes) serves interactive work before bulk work and lets concurrent streams take turns.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import time
import uuid
from dataclasses import dataclass
from typing import Awaitable, Callable, Hashable

from imgdedup import metrics
from imgdedup.config import Settings
from imgdedup.core.backends import ClusterView, IndexBackend
from imgdedup.core.batcher import EmbedBatcher
from imgdedup.core import namespaces, quotas
from imgdedup.core.errors import FailedPrecondition, InvalidArgument, NotReady, QuotaExceeded
from imgdedup.core.decoding import Decoder, make_decoder
from imgdedup.core.images import ImageError, ImageFacts
from imgdedup.core.index import CheckResult, PendingImage
from imgdedup.core.match_modes import MatchKind, MatchMode, MatchModes
from imgdedup.core.model_inputs import InputMaker, ModelInputs
from imgdedup.core.operating_point import OperatingPoint
from imgdedup.core.priority import Priority
from imgdedup.core.quotas import RateLimits
from imgdedup.core.rate_shares import RateReporter
from imgdedup.core.threads import PriorityThreadPool, thread_pool
from imgdedup.runtime import Embedder, ModelSpec
from imgdedup.tracing import tracer
from imgdedup.storage.milvus import MAX_ID_BYTES, Hit

log = logging.getLogger(__name__)

MAX_PAGE_SIZE = 1000
DEFAULT_PAGE_SIZE = 50


@dataclass(slots=True)
class CheckRequest:
    image_id: str
    image: bytes
    add_to_index: bool = False
    threshold: float | None = None
    top_k: int | None = None
    # Interactive (the unary default) goes ahead of bulk (the stream default) at every queue.
    priority: Priority = Priority.HIGH
    # As the request names it ("" for default); checked by validate (core/namespaces.py).
    namespace: str = ""
    match_mode: MatchMode = MatchMode.DUPLICATES  # core/match_modes.py


@dataclass(slots=True)
class CheckOutcome:
    image_id: str
    is_duplicate: bool
    matches: list[Hit]
    kinds: list[MatchKind | None]  # of each match (None: the model has no calibration of kinds)
    stored: bool
    cluster_id: str
    threshold: float
    width: int
    height: int
    format: str
    exact_duplicate: bool
    decode_ms: float
    embed_ms: float
    index_ms: float
    total_ms: float


class EngineSlot:
    """Where a transport finds the engine. The port opens before the engine is built (health
    NOT_SERVING while the model loads and the index opens), and the engine leaves the slot
    before it closes: calls in between get NOT_READY."""

    def __init__(self, settings: Settings):
        self.settings = settings
        self._engine: DedupEngine | None = None

    @property
    def engine(self) -> "DedupEngine":
        if self._engine is None:
            raise NotReady("the server is starting or stopping; retry shortly")
        return self._engine

    def fill(self, engine: "DedupEngine") -> None:
        self._engine = engine

    def take(self) -> "DedupEngine | None":
        engine, self._engine = self._engine, None
        return engine


class StreamOrder:
    """Makes the index writes of one stream happen in request order, so that within a stream
    an item is checked against every earlier item (decoding and embedding still overlap).

    It is also the stream's identity in the queues (a flow, core/priority.py): the items of one
    stream queue FIFO, and streams take turns. FIFO holds within a priority level only, so all
    items of a stream have the stream's priority (check() refuses others)."""

    def __init__(self, priority: Priority = Priority.LOW) -> None:
        self.priority = priority
        self._last: asyncio.Event | None = None
        self.unsubmitted = 0  # items with a ticket that have not reached the write queue yet

    def ticket(self) -> Ticket:
        """This item's place in the write order; taken in request order."""
        previous, mine = self._last, asyncio.Event()
        self._last = mine
        self.unsubmitted += 1
        return Ticket(self, previous, mine)

    @staticmethod
    def pass_on(previous: asyncio.Event | None, mine: asyncio.Event) -> None:
        """Set `mine` once `previous` is set, without blocking the caller."""
        if previous is None or previous.is_set():
            mine.set()
        else:
            task = asyncio.get_running_loop().create_task(previous.wait())
            task.add_done_callback(lambda _: mine.set())


@dataclass(slots=True)
class Ticket:
    stream: StreamOrder
    previous: asyncio.Event | None  # set once the previous item is in the write queue
    submitted: asyncio.Event  # set once this item is (or, failing, once the previous one is)
    counted: bool = True  # still in stream.unsubmitted

    def leave(self) -> None:
        """This item has reached the write queue, or never will."""
        if self.counted:
            self.counted = False
            self.stream.unsubmitted -= 1


def _close_when_loaded(load: asyncio.Future) -> None:
    if not load.cancelled() and load.exception() is None:
        load.result().close()


class DedupEngine:
    """The front half of a check (validate, decode, embed) over an IndexBackend that searches
    and writes: a LocalIndex in this process, or a RemoteIndex (another process is the writer).

    Built whole by `open()`: the model loaded, the index open, the batcher running."""

    def __init__(self, settings: Settings, spec: ModelSpec, embedder: Embedder, index: IndexBackend, decoder: Decoder):
        self.settings = settings
        self.spec = spec
        self.point = OperatingPoint.of(settings, spec)
        self.modes = MatchModes.of(self.point, spec)
        self.embedder = embedder
        self.index = index
        batch_size, batch_delay_s = settings.batching(embedder.on_gpu)
        self._batcher = EmbedBatcher(
            embedder,
            max_batch_size=batch_size,
            max_queue_delay_s=batch_delay_s,
            max_queue_size=settings.max_queue_size,
            workers=settings.inference_workers,
            low_priority_nice=settings.low_priority_nice,
        )
        self._batcher.start()
        # Decoding by priority, bulk decoding on niced threads (see PriorityThreadPool), there or
        # in processes of their own (core/decoding.py).
        self._decode_pool = PriorityThreadPool(settings.decode_workers, "decode", low_nice=settings.low_priority_nice)
        self._decoder = decoder
        # Namespaces' images-per-second quotas (core/quotas.py), taken before any work.
        self._rates = RateLimits(settings.quotas)
        # ... shared with the other processes that check through the same writer.
        self._rate_reporter = RateReporter(self._rates, index) if self._rates.limited else None
        metrics.MODEL_INFO.labels(spec.name, settings.embedder, ",".join(embedder.providers)).set(1)
        log.info("engine ready: model=%s providers=%s index=%s batches of up to %d, %.1f ms", spec.name, embedder.providers, index.backend, batch_size, batch_delay_s * 1000)

    # -- lifecycle -------------------------------------------------------------------------
    @classmethod
    async def open(cls, settings: Settings, spec: ModelSpec, embedder_factory: Callable[[ModelSpec], Embedder], index_factory: Callable[[], Awaitable[IndexBackend]]) -> "DedupEngine":
        """Load the model (blocking, off the event loop) while the index opens, and the
        decoding processes start if decode_processes is on (unset, the decoder is made once the
        model has said where it runs: Settings.decoding_in_processes)."""
        loop = asyncio.get_running_loop()
        make = InputMaker.of(settings, spec)
        # Loaded on a thread named "onnxruntime": the runtime's own threads inherit the name.
        loader = thread_pool(1, "onnxruntime")
        try:
            model_load = loop.run_in_executor(loader, embedder_factory, spec)
            # Decoding processes that were asked for start meanwhile; otherwise the decoder is
            # made once the model has said where it runs.
            decoder = make_decoder(settings, make, processes=True) if settings.decode_processes else None
            try:
                index = await index_factory()
                if decoder is not None:
                    await asyncio.to_thread(decoder.wait_ready)
            except BaseException:
                # The start fails now, not after the model has loaded (a Triton embedder may
                # wait minutes for its model): the embedder is closed whenever it is done.
                model_load.add_done_callback(_close_when_loaded)
                if decoder is not None:
                    decoder.close()
                raise
            embedder = None
            try:
                embedder = await model_load
                if decoder is None:
                    decoder = make_decoder(settings, make, processes=settings.decoding_in_processes(embedder.on_cpu))
                    await asyncio.to_thread(decoder.wait_ready)
            except BaseException:
                if decoder is not None:
                    decoder.close()
                if embedder is not None:
                    embedder.close()
                await index.close()
                raise
        finally:
            loader.shutdown(wait=False)
        return cls(settings, spec, embedder, index, decoder)

    async def close(self) -> None:
        if self._rate_reporter is not None:
            await self._rate_reporter.stop()
        await self._batcher.stop()
        await self.index.close()  # lets queued writes finish
        self.embedder.close()
        self._decode_pool.shutdown(wait=True)
        self._decoder.close()

    async def health_problem(self) -> str | None:
        """None when checks can run now; else what cannot: "index" (it cannot take writes; it
        tries to recover) or "model" (a remote model server is not ready)."""
        if not await self.index.healthy():
            return "index"
        if not await asyncio.to_thread(self.embedder.ready):
            return "model"
        return None

    # -- check -----------------------------------------------------------------------------
    def validate(self, req: CheckRequest) -> CheckRequest:
        s = self.settings
        req.namespace = namespaces.resolve(req.namespace)
        if req.image_id:
            raw = req.image_id.encode("utf-8", "surrogatepass")
            if len(raw) > MAX_ID_BYTES:
                raise InvalidArgument("image_id", f"image_id is {len(raw)} bytes; at most {MAX_ID_BYTES}")
            if any(ord(ch) < 32 or ord(ch) == 127 for ch in req.image_id):
                raise InvalidArgument("image_id", "image_id must not contain control characters")
        if req.threshold is not None and not (0.0 < req.threshold <= 1.0):
            raise InvalidArgument("threshold", f"threshold must be in (0, 1], got {req.threshold}")
        self.modes.check(req.match_mode)
        if req.top_k is not None and not (1 <= req.top_k <= s.max_top_k):
            raise InvalidArgument("top_k", f"top_k must be in 1..{s.max_top_k}, got {req.top_k}")
        if not req.image:
            raise InvalidArgument("image", "image is empty (0 bytes)", reason="EMPTY_IMAGE")
        if len(req.image) > s.max_image_bytes:
            raise InvalidArgument("image", f"image is {len(req.image)} bytes; at most {s.max_image_bytes}", reason="IMAGE_TOO_LARGE")
        return req

    async def check(self, req: CheckRequest, ticket: Ticket | None = None) -> CheckOutcome:
        """`ticket`: the item's place in its stream (StreamOrder); None for a unary call."""
        try:
            return await self._check(req, ticket)
        finally:
            if ticket is not None:
                ticket.leave()
                if not ticket.submitted.is_set():
                    # Failed before reaching the write queue: later items may go once every
                    # earlier item has gone (not at once: they could overtake those items).
                    StreamOrder.pass_on(ticket.previous, ticket.submitted)

    async def _check(self, req: CheckRequest, ticket: Ticket | None) -> CheckOutcome:
        t0 = time.perf_counter()
        self.validate(req)
        if ticket is not None and req.priority != ticket.stream.priority:
            raise InvalidArgument("priority", f"the items of a stream share one priority: this stream's is {ticket.stream.priority.label}, not {req.priority.label}")
        try:
            self._rates.take(req.namespace)
        except QuotaExceeded as refused:
            await quotas.hold(refused)  # a client that retries at once comes back less often
            raise
        image_id = req.image_id or uuid.uuid4().hex
        priority, flow = req.priority, (ticket.stream if ticket is not None else None)
        try:
            with self._batcher.announce(priority), tracer.start_as_current_span("decode"):  # another image of this level is on its way
                facts, digest, maybe_stored, inputs = await self._decoding(priority, flow, self._prepare, priority, req.namespace, req.image)
                # Exact-duplicate fast path: identical bytes reuse the stored embeddings. Only
                # bytes the digest set cannot rule out are looked up (see core/digests.py).
                same = await self.index.find_exact(req.namespace, digest) if maybe_stored else None
                if same is None and inputs is None:
                    _, inputs = await self._decoding(priority, flow, self._decoder, req.image, priority, facts)
        except ImageError as exc:
            raise InvalidArgument("image", str(exc), reason=exc.reason) from None
        t1 = time.perf_counter()
        metrics.STAGE_SECONDS.labels("decode").observe(t1 - t0)
        if same is not None:
            metrics.EXACT_DUPLICATES.inc()
            vector, views, inset = same
        else:
            tensors, inset = inputs
            # The whole image and its extra views (core/views.py) batch together.
            with tracer.start_as_current_span("embed") as span:
                span.set_attribute("dedup.views", len(tensors))
                vector, *views = await asyncio.gather(*(self._batcher.embed(t, priority, flow) for t in tensors))
            if views:
                metrics.EXTRA_VIEWS.inc(len(views))
            metrics.STAGE_SECONDS.labels("embed").observe(time.perf_counter() - t1)
        t2 = time.perf_counter()
        pending = PendingImage(
            image_id=image_id,
            vector=vector,
            add_to_index=req.add_to_index,
            threshold=req.threshold,  # None: the index resolves the namespace's operating point
            top_k=req.top_k or self.settings.default_top_k,
            pixels=facts.pixels,
            sha256=digest,
            views=views,
            inset=inset and bool(views),
            namespace=req.namespace,
            mode=req.match_mode,
            exact_checked=maybe_stored,
        )
        with tracer.start_as_current_span("index") as span:
            if ticket is not None and ticket.previous is not None:
                await ticket.previous.wait()
            result = await self._submit(pending, priority, flow, ticket)
            span.set_attribute("dedup.stored", result.stored)
            span.set_attribute("dedup.matches", len(result.matches))
        t3 = time.perf_counter()
        metrics.STAGE_SECONDS.labels("index").observe(t3 - t2)
        return CheckOutcome(
            image_id=image_id,
            is_duplicate=bool(result.matches),
            matches=result.matches,
            kinds=[self.modes.kind(m.similarity) for m in result.matches],
            stored=result.stored,
            cluster_id=result.cluster_id,
            threshold=result.threshold,
            width=facts.width,
            height=facts.height,
            format=facts.format,
            exact_duplicate=same is not None or result.exact,
            decode_ms=(t1 - t0) * 1000,
            embed_ms=(t2 - t1) * 1000,
            index_ms=(t3 - t2) * 1000,
            total_ms=(t3 - t0) * 1000,
        )

    def _decoding(self, priority: Priority, flow: Hashable, fn: Callable, *args) -> asyncio.Future:
        """Run fn(*args) on the decode pool, in its turn."""
        return asyncio.wrap_future(self._decode_pool.submit(fn, *args, priority=priority, flow=flow))

    def _prepare(self, priority: Priority, namespace: str, data: bytes) -> tuple[ImageFacts, str, bool, ModelInputs | None]:
        """Vet, hash and (unless the bytes are probably stored) decode, in one thread hop.

        Returns (facts, digest, whether the bytes may be stored, model inputs or None). The
        header is vetted where the image is decoded (in a decoding process, with
        decode_processes: its ~0.2 ms of Python leave this process too), after the hash."""
        digest = hashlib.sha256(data).hexdigest()
        hint = self.index.might_hold(namespace, digest)
        # probably an exact duplicate (hint True): vetted only, decoded later if it is not
        facts, inputs = self._decoder(data, priority, decode=hint is not True)
        return facts, digest, hint is not False, inputs

    async def _submit(self, item: PendingImage, priority: Priority, flow: Hashable, ticket: Ticket | None = None) -> CheckResult:
        """Queue a write. Interactive writes go first; a stream's are FIFO (one flow), so the
        next item of the stream may queue as soon as this one has."""
        if ticket is not None:
            ticket.leave()
            item.more_coming = ticket.stream.unsubmitted > 0  # a bulk write may wait for them
        future = self.index.enqueue(item, priority, flow)
        if ticket is not None:
            ticket.submitted.set()
        return await future

    # -- delete ----------------------------------------------------------------------------
    async def delete(self, namespace: str, image_ids: list[str]) -> tuple[list[str], list[str]]:
        namespace = namespaces.resolve(namespace)
        if not image_ids:
            raise InvalidArgument("image_ids", "give at least one image id")
        if len(image_ids) > 1000:
            raise InvalidArgument("image_ids", f"at most 1000 ids per call, got {len(image_ids)}")
        for i in image_ids:
            if not i or len(i.encode()) > MAX_ID_BYTES:
                raise InvalidArgument("image_ids", f"invalid image id {i[:40]!r}")
        return await self.index.delete(namespace, image_ids)

    # -- clusters --------------------------------------------------------------------------
    async def list_clusters(self, *, namespace: str = "", page_size: int, page_token: str, min_size: int | None) -> tuple[list[ClusterView], str, int]:
        namespace = namespaces.resolve(namespace)
        min_size = 2 if min_size is None else min_size
        if min_size < 1:
            raise InvalidArgument("min_size", "min_size must be at least 1")
        if page_size < 0 or page_size > MAX_PAGE_SIZE:
            raise InvalidArgument("page_size", f"page_size must be in 0..{MAX_PAGE_SIZE}")
        return await self.index.list_clusters(namespace, page_size or DEFAULT_PAGE_SIZE, page_token, min_size)

    async def get_cluster(self, cluster_id: str, namespace: str = "") -> ClusterView:
        namespace = namespaces.resolve(namespace)
        if not cluster_id:
            raise InvalidArgument("cluster_id", "cluster_id is required")
        return await self.index.get_cluster(namespace, cluster_id)

    # -- namespaces ------------------------------------------------------------------------
    async def list_namespaces(self) -> list[tuple[str, int, int]]:
        """(name, images, clusters of two or more) of the namespaces the caller may open."""
        found = await self.index.namespaces()
        open_ = set(namespaces.visible([n for n, _, _ in found]))
        return [row for row in found if row[0] in open_]

    async def delete_namespace(self, namespace: str, confirm: str) -> int:
        namespace = namespaces.resolve(namespace)
        if confirm != namespace:
            raise FailedPrecondition(f"to delete namespace {namespace!r} and all its images, repeat its name in `confirm`", subject="confirm", reason="CONFIRMATION_MISMATCH")
        deleted = await self.index.delete_namespace(namespace)
        log.warning("namespace %r deleted: %d images", namespace, deleted)
        return deleted

    # -- info ------------------------------------------------------------------------------
    async def info(self, namespace: str = "") -> dict:
        namespace = namespaces.resolve(namespace)
        images, clusters = await self.index.counts(namespace)
        return {
            "model_name": self.spec.name,
            "input_size": self.spec.input_size,
            "embedding_dim": self.spec.output.dim,
            "execution_providers": self.embedder.providers,
            "default_threshold": self.point.base,
            "threshold": self.point.threshold(images),
            "copy_similarity": self.modes.copy_similarity or 0.0,
            "near_duplicate_threshold": self.modes.near_duplicate_threshold or 0.0,
            "milvus_backend": self.index.backend,
            "indexed_images": images,
            "clusters": clusters,
            "namespace": namespace,
        }
