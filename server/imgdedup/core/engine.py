"""DedupEngine: the data plane that every transport (unary, streaming, CLI) goes through.

check = validate -> decode + preprocess (thread pool) -> batched embedding -> batched index
write (one writer thread). The engine knows nothing about gRPC.

Each check carries a Priority (core/priority.py): every one of the three queues (decode, model,
index writes) serves interactive work before bulk work and lets concurrent streams take turns.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import json
import logging
import time
import uuid
from dataclasses import dataclass
from typing import Callable, Hashable

import numpy as np

from imgdedup import metrics
from imgdedup.config import Settings
from imgdedup.core.batcher import EmbedBatcher
from imgdedup.core.digests import StoredImages
from imgdedup.core.errors import InvalidArgument, NotFound, NotReady, Overloaded, StorageUnavailable
from imgdedup.core.images import ImageError, ImageFacts, decode_image, preprocess, probe_image
from imgdedup.core.index import CheckResult, IndexWriter, PendingImage, image_similarity
from imgdedup.core.priority import AsyncFairQueue, Priority
from imgdedup.core.threads import PriorityThreadPool, thread_pool
from imgdedup.core.views import content_view
from imgdedup.runtime import Embedder, ModelSpec
from imgdedup.storage.milvus import MAX_ID_BYTES, Hit, MilvusStore, StorageError

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


@dataclass(slots=True)
class CheckOutcome:
    image_id: str
    is_duplicate: bool
    matches: list[Hit]
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


@dataclass(slots=True)
class ClusterView:
    cluster_id: str
    size: int
    representative_id: str
    members: list[tuple[str, float]]  # (image_id, similarity to the representative)


class StreamOrder:
    """Makes the index writes of one stream happen in request order, so that within a stream
    an item is checked against every earlier item (decoding and embedding still overlap).

    It is also the stream's identity in the queues (a flow, core/priority.py): the items of one
    stream queue FIFO, and streams take turns. FIFO holds within a priority level only, so all
    items of a stream have the stream's priority (check() refuses others)."""

    def __init__(self, priority: Priority = Priority.LOW) -> None:
        self.priority = priority
        self._last: asyncio.Event | None = None

    def ticket(self) -> Ticket:
        """This item's place in the write order; taken in request order."""
        previous, mine = self._last, asyncio.Event()
        self._last = mine
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


@dataclass(slots=True)
class _Commit:
    item: PendingImage
    future: asyncio.Future


class DedupEngine:
    def __init__(self, settings: Settings, spec: ModelSpec):
        self.settings = settings
        self.spec = spec
        self.default_threshold = settings.threshold or spec.search.default_threshold
        self.embedder: Embedder | None = None
        self.store: MilvusStore | None = None
        self._batcher: EmbedBatcher | None = None
        self._writer: IndexWriter | None = None
        # Decoding by priority, bulk decoding on niced threads (see PriorityThreadPool).
        self._decode_pool = PriorityThreadPool(settings.decode_workers, "decode", low_nice=settings.low_priority_nice)
        # One writer thread: the single-writer rule that makes checks see every earlier image.
        self._write_pool = thread_pool(1, "index-writer")
        self._read_pool = thread_pool(2, "index-reader")
        self._commits: AsyncFairQueue[_Commit] | None = None
        # Present while a write is in progress: if the process dies then, the next start finds
        # it and rebuilds the (derived) cluster rows from the image rows.
        self._write_marker = settings.data_dir / "index-write-in-progress"
        self._write_failed = False
        self._commit_task: asyncio.Task | None = None
        # What this server stored, in memory (see core/digests.py): the bytes' SHA-256, for the
        # exact-duplicate path, and the ids' primary keys, so new ids skip the "already stored?"
        # query. The index writer records what it writes.
        self._stored = StoredImages() if settings.digest_cache else None
        self._digest_task: asyncio.Task | None = None
        self.ready = False

    # -- lifecycle -------------------------------------------------------------------------
    async def start(self, embedder_factory) -> None:
        """Load the model and connect to Milvus (both blocking, off the event loop)."""
        loop = asyncio.get_running_loop()
        s = self.settings
        self.store = MilvusStore(
            s.resolved_milvus_uri(),
            dim=self.spec.output.dim,
            model_name=self.spec.name,
            token=s.milvus_token.get_secret_value() if s.milvus_token else "",
            prefix=s.collection_prefix,
            timeout_s=s.milvus_timeout_s,
            index_type=s.index_type,
            nlist=s.index_nlist,
            nprobe=s.search_nprobe,
        )
        s.data_dir.mkdir(parents=True, exist_ok=True)
        # Loaded on a thread named "onnxruntime": the runtime's own threads inherit the name.
        loader = thread_pool(1, "onnxruntime")
        try:
            model_load = loop.run_in_executor(loader, embedder_factory, self.spec)
            await loop.run_in_executor(self._write_pool, self.store.connect)
            self.embedder = await model_load
        finally:
            loader.shutdown(wait=False)
        self._writer = IndexWriter(self.store, cluster_threshold=self.default_threshold, stored=self._stored)
        if self._write_marker.exists():
            log.warning("the last run stopped in the middle of an index write; rebuilding clusters from the images")
            written, stale = await loop.run_in_executor(self._write_pool, self._writer.rebuild_clusters)
            log.warning("clusters rebuilt: %d written, %d stale removed", written, stale)
            self._write_marker.unlink()
        self._batcher = EmbedBatcher(
            self.embedder,
            max_batch_size=s.max_batch_size,
            max_queue_delay_s=s.max_queue_delay_ms / 1000.0,
            max_queue_size=s.max_queue_size,
            workers=s.inference_workers,
            low_priority_nice=s.low_priority_nice,
        )
        self._batcher.start()
        self._commits = AsyncFairQueue(s.max_queue_size)
        self._commit_task = loop.create_task(self._commit_loop(), name="index-committer")
        if self._stored is not None:
            self._digest_task = loop.create_task(self._load_digests(), name="digest-loader")
        self.ready = True
        log.info("engine ready: model=%s providers=%s milvus=%s (%s)", self.spec.name, self.embedder.providers, self.store.uri, self.store.backend)

    async def _load_digests(self) -> None:
        """Fill the hash sets from Milvus in the background; checks query Milvus until then."""
        assert self._stored is not None and self.store is not None
        loop = asyncio.get_running_loop()
        delay = 1.0
        while True:
            started = time.perf_counter()
            try:
                stored = await loop.run_in_executor(self._read_pool, self.store.all_keys_and_digests)
            except Exception as exc:  # Milvus away: keep asking it per image, try again later
                log.warning("loading stored image digests failed (%s); retrying in %.0f s", exc, delay)
                await asyncio.sleep(delay)
                delay = min(delay * 2, 60.0)
                continue
            self._stored.load(stored)
            log.info("hashes of stored images loaded: %d images in %.1f s", len(stored), time.perf_counter() - started)
            return

    async def stop(self) -> None:
        self.ready = False
        if self._digest_task:
            self._digest_task.cancel()
        if self._batcher:
            await self._batcher.stop()
        if self._commit_task:
            # Let queued writes finish: an acknowledged image must be stored.
            while self._commits is not None and not self._commits.empty():
                await asyncio.sleep(0.01)
            self._commit_task.cancel()
            await asyncio.gather(self._commit_task, return_exceptions=True)
        if self.store:
            await asyncio.get_running_loop().run_in_executor(self._write_pool, self.store.close)
        for pool in (self._decode_pool, self._write_pool, self._read_pool):
            pool.shutdown(wait=True)
        if self._writer:
            self._writer.close()

    async def storage_healthy(self) -> bool:
        """Ping Milvus; when it fails, try to reconnect (on the writer thread, between writes).

        Returns whether Milvus answered; after a successful reconnect the next call says so."""
        assert self.store is not None
        loop = asyncio.get_running_loop()
        try:
            await loop.run_in_executor(self._read_pool, self.store.ping)
            return True
        except StorageError as exc:
            log.error("Milvus is not answering (%s); reconnecting", exc)
        try:
            await loop.run_in_executor(self._write_pool, self.store.reconnect)
            log.warning("reconnected to Milvus at %s", self.store.uri)
        except Exception as exc:
            log.error("reconnecting to Milvus failed: %s", exc)
            return False
        if self._write_failed:
            await self._repair()
        return False

    async def _repair(self) -> None:
        """After a write that failed part-way (Milvus went away in the middle of it), rebuild the
        derived cluster rows from the image rows, as a restart would, without one."""
        assert self._writer is not None
        try:
            written, stale = await asyncio.get_running_loop().run_in_executor(self._write_pool, self._writer.rebuild_clusters)
        except Exception as exc:  # Milvus failing again: the marker stays, the next reconnect retries
            log.error("rebuilding clusters after a failed write failed: %s", exc)
            return
        self._write_failed = False
        self._write_marker.unlink(missing_ok=True)
        log.warning("clusters rebuilt after a failed write: %d written, %d stale removed", written, stale)

    def _require_ready(self) -> None:
        if not self.ready:
            raise NotReady("the server is starting or stopping; retry shortly")

    # -- check -----------------------------------------------------------------------------
    def validate(self, req: CheckRequest) -> CheckRequest:
        s = self.settings
        if req.image_id:
            raw = req.image_id.encode("utf-8", "surrogatepass")
            if len(raw) > MAX_ID_BYTES:
                raise InvalidArgument("image_id", f"image_id is {len(raw)} bytes; at most {MAX_ID_BYTES}")
            if any(ord(ch) < 32 or ord(ch) == 127 for ch in req.image_id):
                raise InvalidArgument("image_id", "image_id must not contain control characters")
        if req.threshold is not None and not (0.0 < req.threshold <= 1.0):
            raise InvalidArgument("threshold", f"threshold must be in (0, 1], got {req.threshold}")
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
            if ticket is not None and not ticket.submitted.is_set():
                # Failed before reaching the write queue: later items may go once every earlier
                # item has gone (not at once: they could then overtake those earlier items).
                StreamOrder.pass_on(ticket.previous, ticket.submitted)

    async def _check(self, req: CheckRequest, ticket: Ticket | None) -> CheckOutcome:
        self._require_ready()
        t0 = time.perf_counter()
        self.validate(req)
        if ticket is not None and req.priority != ticket.stream.priority:
            raise InvalidArgument("priority", f"the items of a stream share one priority: this stream's is {ticket.stream.priority.label}, not {req.priority.label}")
        image_id = req.image_id or uuid.uuid4().hex
        assert self.store is not None and self._batcher is not None
        priority, flow = req.priority, (ticket.stream if ticket is not None else None)
        try:
            with self._batcher.announce(priority):  # another image of this level is on its way
                facts, digest, maybe_stored, tensors = await self._decoding(priority, flow, self._prepare, req.image)
                # Exact-duplicate fast path: identical bytes reuse the stored embeddings. Only
                # bytes the digest set cannot rule out are looked up (see core/digests.py).
                same = await self._run(self._read_pool, self._find_exact, digest) if maybe_stored else None
                if same is None and tensors is None:
                    tensors = await self._decoding(priority, flow, self._decode, req.image, facts)
        except ImageError as exc:
            raise InvalidArgument("image", str(exc), reason=exc.reason) from None
        t1 = time.perf_counter()
        if same is not None:
            metrics.EXACT_DUPLICATES.inc()
            vector, views = same
        else:
            # The whole image and its extra views (core/views.py) batch together.
            vector, *views = await asyncio.gather(*(self._batcher.embed(t, priority, flow) for t in tensors))
            if views:
                metrics.EXTRA_VIEWS.inc(len(views))
        t2 = time.perf_counter()
        threshold = req.threshold if req.threshold is not None else self.default_threshold
        pending = PendingImage(
            image_id=image_id,
            vector=vector,
            add_to_index=req.add_to_index,
            threshold=threshold,
            top_k=req.top_k or self.settings.default_top_k,
            pixels=facts.pixels,
            sha256=digest,
            views=views,
        )
        if ticket is not None and ticket.previous is not None:
            await ticket.previous.wait()
        result = await self._submit(pending, priority, flow, ticket.submitted if ticket is not None else None)
        t3 = time.perf_counter()
        return CheckOutcome(
            image_id=image_id,
            is_duplicate=bool(result.matches),
            matches=result.matches,
            stored=result.stored,
            cluster_id=result.cluster_id,
            threshold=threshold,
            width=facts.width,
            height=facts.height,
            format=facts.format,
            exact_duplicate=same is not None,
            decode_ms=(t1 - t0) * 1000,
            embed_ms=(t2 - t1) * 1000,
            index_ms=(t3 - t2) * 1000,
            total_ms=(t3 - t0) * 1000,
        )

    def _decoding(self, priority: Priority, flow: Hashable, fn: Callable, *args) -> asyncio.Future:
        """Run fn(*args) on the decode pool, in its turn."""
        return asyncio.wrap_future(self._decode_pool.submit(fn, *args, priority=priority, flow=flow))

    def _prepare(self, data: bytes) -> tuple[ImageFacts, str, bool, list[np.ndarray] | None]:
        """Vet, hash and (unless the bytes are probably stored) decode, in one thread hop.

        Returns (facts, digest, whether the bytes may be stored, model inputs or None)."""
        facts = probe_image(data, max_pixels=self.settings.max_pixels)
        digest = hashlib.sha256(data).hexdigest()
        digests = self._stored.digests if self._stored is not None else None
        maybe_stored = digests is None or digests.might_contain(digest)
        if maybe_stored and digests is not None and digests.loaded:
            return facts, digest, True, None  # probably an exact duplicate: decode only if it is not
        return facts, digest, maybe_stored, self._decode(data, facts)

    def _decode(self, data: bytes, facts: ImageFacts) -> list[np.ndarray]:
        """Model inputs: the whole image, then its extra views (if any)."""
        decoded = decode_image(data, max_pixels=self.settings.max_pixels, target_size=self.spec.input_size, facts=facts)
        resize = self.spec.input.resize
        tensors = [preprocess(decoded, resize)]
        if self.settings.content_views and (view := content_view(decoded)) is not None:
            tensors.append(preprocess(view, resize))
        return tensors

    def _find_exact(self, digest: str) -> tuple[np.ndarray, list[np.ndarray]] | None:
        """The embedding and extra views of a stored image with exactly these bytes, if any."""
        assert self.store is not None
        row = self.store.find_by_sha256(digest)
        if row is None or row.vector is None:
            return None
        return row.vector, self.store.views_of([row.image_id]).get(row.image_id, [])

    async def _submit(self, item: PendingImage, priority: Priority, flow: Hashable, submitted: asyncio.Event | None = None) -> CheckResult:
        """Queue a write. Interactive writes go first; a stream's are FIFO (one flow), so the
        next item of the stream may queue as soon as this one has."""
        assert self._commits is not None
        future = asyncio.get_running_loop().create_future()
        try:
            self._commits.put_nowait(_Commit(item, future), priority, flow)
        except asyncio.QueueFull:
            metrics.SHED.labels("index").inc()
            raise Overloaded("index write queue is full") from None
        if submitted is not None:
            submitted.set()
        return await future

    async def _commit_loop(self) -> None:
        """Drain whatever is queued into one IndexWriter.commit on the writer thread, by
        priority and in turns (FairQueue order): IndexWriter.commit checks the items of a batch
        in list order, so each stream item still sees every earlier item of its stream."""
        assert self._commits is not None and self._writer is not None
        loop = asyncio.get_running_loop()
        while True:
            batch = [await self._commits.get()]
            # Items of one inference batch reach this queue over a few loop turns (a stream's
            # items pass their order tickets one turn each): let them all arrive, so one write
            # (about five Milvus calls, each ~1 ms of CPU) serves the whole batch.
            for _ in range(self.settings.max_commit_batch):
                waiting = self._commits.qsize()
                await asyncio.sleep(0)
                if self._commits.qsize() == waiting:
                    break
            while len(batch) < self.settings.max_commit_batch and not self._commits.empty():
                batch.append(self._commits.get_nowait())
            for commits in self._retry_plan(batch):
                started = time.perf_counter()
                try:
                    results = await loop.run_in_executor(self._write_pool, self._guarded, self._writer.commit, [c.item for c in commits])
                    metrics.WRITE_SECONDS.observe(time.perf_counter() - started)
                    metrics.WRITE_BATCH_SIZE.observe(len(commits))
                except Exception as exc:
                    if len(commits) > 1:
                        # Retry one by one so that only the image that breaks the write fails.
                        # Safe: commit skips ids already stored with the same bytes.
                        log.warning("index write of %d images failed (%s); retrying one by one", len(commits), exc)
                        continue
                    log.exception("index write failed for %r", commits[0].item.image_id)
                    err = StorageUnavailable(f"vector database write failed: {exc}") if isinstance(exc, StorageError) else exc
                    if not commits[0].future.done():
                        commits[0].future.set_exception(err)
                    continue
                for c, r in zip(commits, results):
                    if not c.future.done():
                        c.future.set_result(r)
                if len(commits) == len(batch):
                    break

    @staticmethod
    def _retry_plan(batch: list[_Commit]):
        """The whole batch first; if that fails, each commit alone (the caller breaks early)."""
        yield batch
        if len(batch) > 1:
            for c in batch:
                yield [c]

    # -- delete ----------------------------------------------------------------------------
    async def delete(self, image_ids: list[str]) -> tuple[list[str], list[str]]:
        self._require_ready()
        if not image_ids:
            raise InvalidArgument("image_ids", "give at least one image id")
        if len(image_ids) > 1000:
            raise InvalidArgument("image_ids", f"at most 1000 ids per call, got {len(image_ids)}")
        for i in image_ids:
            if not i or len(i.encode()) > MAX_ID_BYTES:
                raise InvalidArgument("image_ids", f"invalid image id {i[:40]!r}")
        assert self._writer is not None
        return await self._run(self._write_pool, self._guarded, self._writer.delete, image_ids)

    def _guarded(self, write, *args):
        """Run a write with the in-progress marker on disk (no fsync: it guards against process
        crashes, whose page cache survives)."""
        self._write_marker.touch()
        try:
            result = write(*args)
        except BaseException:
            self._write_failed = True  # possibly half-written: keep the marker for the next start
            raise
        if not self._write_failed:
            self._write_marker.unlink()
        return result

    # -- clusters --------------------------------------------------------------------------
    async def list_clusters(self, *, page_size: int, page_token: str, min_size: int | None) -> tuple[list[ClusterView], str, int]:
        self._require_ready()
        min_size = 2 if min_size is None else min_size
        if min_size < 1:
            raise InvalidArgument("min_size", "min_size must be at least 1")
        if page_size < 0 or page_size > MAX_PAGE_SIZE:
            raise InvalidArgument("page_size", f"page_size must be in 0..{MAX_PAGE_SIZE}")
        page_size = page_size or DEFAULT_PAGE_SIZE
        cursor = _decode_token(page_token, min_size) if page_token else None
        assert self.store is not None
        sizes = await self._run(self._read_pool, self.store.cluster_sizes, min_size)
        ordered = sorted(sizes, key=lambda cs: (-cs[1], cs[0]))
        if cursor is not None:
            last_size, last_id = cursor
            ordered = [cs for cs in ordered if (-cs[1], cs[0]) > (-last_size, last_id)]
        page = ordered[:page_size]
        views = await self._run(self._read_pool, self._cluster_views, [c for c, _ in page])
        next_token = _encode_token(page[-1][1], page[-1][0], min_size) if len(ordered) > page_size else ""
        return views, next_token, len(sizes)

    async def get_cluster(self, cluster_id: str) -> ClusterView:
        self._require_ready()
        if not cluster_id:
            raise InvalidArgument("cluster_id", "cluster_id is required")
        views = await self._run(self._read_pool, self._cluster_views, [cluster_id])
        if not views:
            raise NotFound("cluster", cluster_id)
        return views[0]

    def _cluster_views(self, cluster_ids: list[str]) -> list[ClusterView]:
        assert self.store is not None
        rows = self.store.get_clusters(cluster_ids)
        members = self.store.images_in_clusters([c for c in cluster_ids if c in rows], with_vectors=True)
        extra = self.store.views_of([m.image_id for m in members]) if members else {}
        by_cluster: dict[str, list] = {}
        for m in members:
            by_cluster.setdefault(m.cluster_id, []).append(m)
        views = []
        for cid in cluster_ids:
            if cid not in rows:
                continue
            row, mem = rows[cid], by_cluster.get(cid, [])
            rep = next((m for m in mem if m.image_id == row.representative_id), None)
            of = {m.image_id: [m.vector, *extra.get(m.image_id, [])] for m in mem}
            scored = [(m.image_id, 1.0 if m is rep else image_similarity(of[m.image_id], of[rep.image_id]) if rep is not None else 0.0) for m in mem]
            scored.sort(key=lambda x: (x[0] != row.representative_id, -x[1], x[0]))
            views.append(ClusterView(cid, row.size, row.representative_id, scored))
        return views

    # -- info ------------------------------------------------------------------------------
    async def info(self) -> dict:
        self._require_ready()
        assert self.store is not None and self.embedder is not None
        images = await self._run(self._read_pool, self.store.count_images)
        clusters = await self._run(self._read_pool, self.store.count_clusters, 2)
        return {
            "model_name": self.spec.name,
            "input_size": self.spec.input_size,
            "embedding_dim": self.spec.output.dim,
            "execution_providers": self.embedder.providers,
            "default_threshold": self.default_threshold,
            "milvus_backend": self.store.backend,
            "indexed_images": images,
            "clusters": clusters,
        }

    async def _run(self, pool, fn, *args):
        try:
            return await asyncio.get_running_loop().run_in_executor(pool, fn, *args)
        except StorageError as exc:
            raise StorageUnavailable(f"vector database unavailable: {exc}") from None


# AIP-158 page tokens: opaque to clients, tied to the query that made them.
def _encode_token(last_size: int, last_id: str, min_size: int) -> str:
    raw = json.dumps({"v": 1, "s": last_size, "c": last_id, "m": min_size}, separators=(",", ":")).encode()
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def _decode_token(token: str, min_size: int) -> tuple[int, str]:
    try:
        data = json.loads(base64.urlsafe_b64decode(token + "=" * (-len(token) % 4)))
        size, cid, m = int(data["s"]), str(data["c"]), int(data["m"])
        assert data.get("v") == 1
    except Exception:
        raise InvalidArgument("page_token", "page_token is not valid: pass next_page_token from a previous response unchanged", reason="INVALID_PAGE_TOKEN") from None
    if m != min_size:
        raise InvalidArgument("page_token", "page_token was made for another min_size; keep the other fields unchanged while paging", reason="INVALID_PAGE_TOKEN")
    return size, cid
