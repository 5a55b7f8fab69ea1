"""LocalIndex: this process opens Milvus and is its collections' one writer.

Checks reach it through a fair queue (core/priority.py: interactive first, streams in turns,
each stream FIFO) that a committer task drains into IndexWriter.commit batches on one writer
thread; reads (clusters, counts, the exact-duplicate lookup) run on their own threads. The
in-memory hash sets (core/digests.py) live here, beside the writer that keeps them true.

Crash safety: a marker file is present while a write is in progress; a start that finds it, or
a reconnect after a write failed part-way, rebuilds the derived cluster rows from the image rows.
A writer chosen by a lease (transport/election.py) is given `may_write`: no write starts once
it says no (the lease may have passed to another replica); what was queued fails NOT_THE_WRITER.
"""

from __future__ import annotations

import asyncio
import base64
import json
import logging
import threading
import time
from dataclasses import dataclass
from typing import AsyncIterator, Callable, Hashable

import numpy as np

from imgdedup import metrics
from imgdedup.config import Settings
from imgdedup.core.backends import ClusterView
from imgdedup.core.digests import DigestSet, StoredImages
from imgdedup.core.errors import InvalidArgument, NotFound, Overloaded, StorageUnavailable
from imgdedup.core.index import CheckResult, IndexWriter, PendingImage, image_similarity
from imgdedup.core.linking import LinkRule
from imgdedup.core.match_modes import ClusterModes, MatchModes
from imgdedup.core.operating_point import OperatingPoint
from imgdedup.core.priority import AsyncFairQueue, Priority
from imgdedup.core.rate_shares import Allotment, RateShares
from imgdedup.core.threads import thread_pool
from imgdedup.runtime import ModelSpec
from imgdedup.storage.milvus import ImageViews, MilvusStore, StorageError, digest_key
from imgdedup.storage.redo import FLUSH_AFTER_ROWS

log = logging.getLogger(__name__)


@dataclass(slots=True)
class _Commit:
    item: PendingImage
    future: asyncio.Future
    priority: Priority


def open_store(settings: Settings, spec: ModelSpec) -> MilvusStore:
    s = settings
    return MilvusStore(
        s.resolved_milvus_uri(),
        dim=spec.output.dim,
        model_name=spec.name,
        token=s.milvus_token.get_secret_value() if s.milvus_token else "",
        prefix=s.collection_prefix,
        timeout_s=s.milvus_timeout_s,
        index_type=s.index_type,
        nlist=s.index_nlist,
        nprobe=s.search_nprobe,
        hnsw_m=s.hnsw_m,
        ef_construction=s.hnsw_ef_construction,
        ef=s.search_ef,
    )


def build_writer(settings: Settings, spec: ModelSpec, store: MilvusStore, stored: StoredImages | None,
                 cluster_modes: ClusterModes | None = None) -> IndexWriter:
    """The collection's IndexWriter as the settings configure it (benchmarks/writer.py builds
    the same one)."""
    point = OperatingPoint.of(settings, spec)
    return IndexWriter(store, modes=MatchModes.of(point, spec), rule=LinkRule(point.base, support=settings.link_support), stored=stored,
                       quotas=settings.quotas, cluster_modes=ClusterModes.from_settings(settings, spec) if cluster_modes is None else cluster_modes)


class _DigestFeed:
    """Keys a DigestSet adds on the writer thread, handed to the event loop: one wake-up for
    all the keys added before the loop gets to them (a write batch's, typically)."""

    def __init__(self, loop: asyncio.AbstractEventLoop):
        self._loop = loop
        self._lock = threading.Lock()
        self._keys: list[int] = []
        self._woken = False
        self._ready = asyncio.Event()
        self.closed = False

    def deliver(self, key: int) -> None:  # any thread
        with self._lock:
            if self.closed:
                return
            self._keys.append(key)
            if self._woken:
                return
            self._woken = True
        try:
            self._loop.call_soon_threadsafe(self._ready.set)
        except RuntimeError:  # the loop is closed (the process is stopping): nobody waits
            pass

    def close(self) -> None:  # the loop's thread
        with self._lock:
            self.closed = True
            self._keys.clear()
        self._ready.set()

    async def take(self) -> np.ndarray:
        """The keys added since the last take (waits for one); empty once closed."""
        await self._ready.wait()
        self._ready.clear()
        with self._lock:
            keys, self._keys, self._woken = self._keys, [], False
        return np.array(keys, dtype=np.uint64) if not self.closed else np.empty(0, dtype=np.uint64)


class LocalIndex:
    """Built whole by `open()`: connected, repaired, its committer running."""

    def __init__(self, settings: Settings, store: MilvusStore, writer: IndexWriter, stored: StoredImages | None, write_pool, read_pool, may_write: Callable[[], bool] | None = None):
        self.settings = settings
        # Raises NotTheWriter once may_write says no: called on the writer thread before every
        # write (a batch, a delete, each step of a rebuild).
        self._check_writer = _guard(may_write)
        self.store = store
        self.backend = store.backend
        self._writer = writer
        self._stored = stored
        # One writer thread: the single-writer rule that makes checks see every earlier image.
        self._write_pool = write_pool
        self._read_pool = read_pool
        # Present while a write is in progress (see the module's docstring).
        self._write_marker = settings.data_dir / "index-write-in-progress"
        self._write_failed = False
        self._replay_pending = False  # a reconnect has not made the unflushed writes again yet
        self._commits: AsyncFairQueue[_Commit] = AsyncFairQueue(settings.max_queue_size)
        metrics.QUEUE_DEPTH.labels("index").set_function(self._commits.qsize)
        metrics.UNFLUSHED_ROWS.set_function(lambda: store.unflushed_rows)
        self._next_count = 0.0
        self._next_flush = time.monotonic() + settings.flush_interval_s
        self._flushing: asyncio.Task | None = None
        loop = asyncio.get_running_loop()
        self._in_hand: list[_Commit] = []  # taken from the queue, not all answered yet
        self._closing = False
        self._commit_task = loop.create_task(self._commit_loop(), name="index-committer")
        self._digest_task = loop.create_task(self._load_digests(), name="digest-loader") if stored is not None else None
        self._feeds: set[_DigestFeed] = set()  # watch_digests' listeners
        # The processes checking through this writer share each namespace's rate quota.
        self._rate_shares = RateShares(settings.quotas)

    @classmethod
    async def open(cls, settings: Settings, spec: ModelSpec, *, rebuild: bool = False, may_write: Callable[[], bool] | None = None) -> "LocalIndex":
        """Connect to Milvus (blocking, on the writer thread) and finish an interrupted write
        (`rebuild`: as if one had been: the last writer may have stopped in the middle of one)."""
        cluster_modes = ClusterModes.from_settings(settings, spec)  # refused before connecting
        settings.data_dir.mkdir(parents=True, exist_ok=True)
        store = open_store(settings, spec)
        write_pool, read_pool = thread_pool(1, "index-writer"), thread_pool(2, "index-reader")
        loop = asyncio.get_running_loop()
        try:
            await loop.run_in_executor(write_pool, store.connect)
        except BaseException:
            write_pool.shutdown(wait=False)
            read_pool.shutdown(wait=False)
            raise
        # What this server stored, in memory (core/digests.py): the bytes' SHA-256, for the
        # exact-duplicate path, and the ids' primary keys, so new ids skip the "already
        # stored?" query. The index writer records what it writes.
        stored = StoredImages() if settings.digest_cache else None
        writer = build_writer(settings, spec, store, stored, cluster_modes)
        marker = settings.data_dir / "index-write-in-progress"
        if marker.exists() or rebuild:
            log.warning("the last writer stopped in the middle of an index write%s; rebuilding clusters from the images", "" if marker.exists() else " (or may have)")
            job = loop.run_in_executor(write_pool, writer.rebuild_clusters, _guard(may_write))
            try:
                # Shielded: a start given up on returns only once the rebuild has stopped writing.
                written, stale = await asyncio.shield(job)
            except BaseException:
                await asyncio.wait({job})
                await loop.run_in_executor(write_pool, store.close)
                write_pool.shutdown(wait=False)
                read_pool.shutdown(wait=False)
                writer.close()
                raise
            log.warning("clusters rebuilt: %d written, %d stale removed", written, stale)
            marker.unlink(missing_ok=True)
        return cls(settings, store, writer, stored, write_pool, read_pool, may_write)

    @property
    def dirty(self) -> bool:
        """A write failed part-way and its repair has not run yet, or Milvus may hold less than
        was written (a reconnect that has not made the unflushed writes again)."""
        return self._write_failed or self._replay_pending

    async def drained(self, timeout_s: float) -> None:
        """Until the commit queue is empty (or timeout_s passed)."""
        deadline = time.monotonic() + timeout_s
        while (not self._commits.empty() or self._in_hand) and time.monotonic() < deadline:
            await asyncio.sleep(0.01)

    async def close(self) -> None:
        if self._digest_task:
            self._digest_task.cancel()
        for feed in list(self._feeds):  # their watchers end (and fronts ask again, of whoever writes next)
            if self._stored is not None:
                self._stored.digests.unwatch(feed.deliver)
            feed.close()
        # Let queued writes finish, and the one in progress: an acknowledged image must be
        # stored. (A bulk write waiting for company stops waiting and goes.)
        self._closing = True
        while not self._commits.empty() or self._in_hand:
            await asyncio.sleep(0.01)
        self._commit_task.cancel()
        await asyncio.gather(self._commit_task, *([self._flushing] if self._flushing else []), return_exceptions=True)
        await asyncio.get_running_loop().run_in_executor(self._write_pool, self.store.close)
        for pool in (self._write_pool, self._read_pool):
            pool.shutdown(wait=True)
        self._writer.close()

    async def _load_digests(self) -> None:
        """Fill the hash sets from Milvus in the background; checks query Milvus until then."""
        assert self._stored is not None
        delay = 1.0
        while True:
            started = time.perf_counter()
            try:
                stored = await asyncio.get_running_loop().run_in_executor(self._read_pool, self.store.all_keys_and_digests)
            except Exception as exc:  # Milvus away: keep asking it per image, try again later
                log.warning("loading stored image digests failed (%s); retrying in %.0f s", exc, delay)
                await asyncio.sleep(delay)
                delay = min(delay * 2, 60.0)
                continue
            self._stored.load(stored)
            log.info("hashes of stored images loaded: %d images in %.1f s", len(stored), time.perf_counter() - started)
            return

    # -- health ----------------------------------------------------------------------------
    async def healthy(self) -> bool:
        """Ping Milvus; when it fails, try to reconnect (on the writer thread, between writes).

        Returns whether Milvus answered; after a successful reconnect the next call says so."""
        loop = asyncio.get_running_loop()
        try:
            await loop.run_in_executor(self._read_pool, self.store.ping)
        except StorageError as exc:
            log.error("Milvus is not answering (%s); reconnecting", exc)
        else:
            if time.monotonic() >= self._next_count:  # the stored-images gauge, now and then
                self._next_count = time.monotonic() + 15.0
                try:
                    metrics.STORED_IMAGES.set(await loop.run_in_executor(self._read_pool, self.store.count_images, None))
                except StorageError as exc:  # a slow count says nothing of health
                    log.warning("counting stored images failed: %s", exc)
            self._maybe_flush()
            return True
        try:
            replayed = await loop.run_in_executor(self._write_pool, self._reconnect)
            log.warning("reconnected to Milvus at %s; made again the %d writes it had not persisted", self.store.uri, replayed)
        except Exception as exc:
            log.error("reconnecting to Milvus failed: %s", exc)
            return False
        if self._write_failed:
            await self._repair()
        return False

    def _maybe_flush(self) -> None:
        """Start a flush when one is due (storage/redo.py): the writes it covers need no longer
        be kept. In the background, on a reader thread; writes go on."""
        rows = self.store.unflushed_rows
        due = time.monotonic() >= self._next_flush or rows >= FLUSH_AFTER_ROWS
        if not rows or not due or self._closing or (self._flushing is not None and not self._flushing.done()):
            return

        async def flush() -> None:
            started = time.perf_counter()
            try:
                gone = await asyncio.get_running_loop().run_in_executor(self._read_pool, self.store.flush)
            except Exception as exc:  # Milvus away: the writes stay kept; the next flush covers them
                log.warning("flushing Milvus failed: %s", exc)
            else:
                log.debug("Milvus flushed %d writes in %.2f s", gone, time.perf_counter() - started)
            self._next_flush = time.monotonic() + self.settings.flush_interval_s

        self._flushing = asyncio.get_running_loop().create_task(flush(), name="milvus-flush")

    async def _repair(self) -> None:
        """After a write that failed part-way (Milvus went away in the middle of it), rebuild the
        derived cluster rows from the image rows, as a restart would, without one."""
        def rebuild() -> tuple[int, int]:
            # On the writer thread, flag and marker included: a write queued behind the rebuild
            # may fail (and set the flag again) as soon as it returns.
            result = self._writer.rebuild_clusters(self._check_writer)
            self._write_failed = False
            self._unmark_if_clean()
            return result

        try:
            written, stale = await asyncio.get_running_loop().run_in_executor(self._write_pool, rebuild)
        except Exception as exc:  # Milvus failing again: the marker stays, the next reconnect retries
            log.error("rebuilding clusters after a failed write failed: %s", exc)
            return
        log.warning("clusters rebuilt after a failed write: %d written, %d stale removed", written, stale)

    # -- rate quotas, shared by the processes that check through this writer ------------------
    async def share_rates(self, process: str, demand: dict[str, float]) -> dict[str, Allotment]:
        return self._rate_shares.allot(process, demand)

    # -- exact duplicates ------------------------------------------------------------------
    def might_hold(self, namespace: str, sha256: str) -> bool | None:
        digests = self._stored.digests if self._stored is not None else None
        if digests is None or not digests.loaded:
            return None
        return digests.might_contain(digest_key(sha256, namespace))

    def watch_digests(self) -> AsyncIterator[np.ndarray] | None:
        """For a copy of the hash set of stored bytes (a front's): None when this index keeps
        none; else an iterator whose first item is every key held (once the set is loaded) and
        each later one the keys added since. It ends when this index closes."""
        if self._stored is None:
            return None
        return self._watch(self._stored.digests)

    async def _watch(self, digests: DigestSet) -> AsyncIterator[np.ndarray]:
        while not digests.loaded and not self._closing:
            await asyncio.sleep(0.1)
        if self._closing:
            return  # an empty watch: the front tries again, and finds who writes next
        feed = _DigestFeed(asyncio.get_running_loop())
        self._feeds.add(feed)
        try:
            yield digests.watch(feed.deliver)
            while not feed.closed and not self._closing:
                keys = await feed.take()
                if len(keys):
                    yield keys
        finally:
            digests.unwatch(feed.deliver)
            self._feeds.discard(feed)

    async def find_exact(self, namespace: str, sha256: str) -> tuple[np.ndarray, list[np.ndarray], bool] | None:
        if self.might_hold(namespace, sha256) is False:
            return None
        return await self._run(self._read_pool, self._find_exact, namespace, sha256)

    def _find_exact(self, namespace: str, sha256: str) -> tuple[np.ndarray, list[np.ndarray], bool] | None:
        row = self.store.find_by_sha256(namespace, sha256)
        if row is None or row.vector is None:
            return None
        views = self.store.views_of(namespace, [row.image_id]).get(row.image_id, ImageViews())
        return row.vector, views, views.inset

    # -- writes ----------------------------------------------------------------------------
    def enqueue(self, item: PendingImage, priority: Priority, flow: Hashable) -> asyncio.Future[CheckResult]:
        """Queue a write. Interactive writes go first; a flow's (a stream's) are FIFO."""
        future = asyncio.get_running_loop().create_future()
        try:
            self._commits.put_nowait(_Commit(item, future, priority), priority, flow)
        except asyncio.QueueFull:
            metrics.SHED.labels("index").inc()
            raise Overloaded("index write queue is full") from None
        return future

    async def _commit_loop(self) -> None:
        """Drain whatever is queued into one IndexWriter.commit on the writer thread, by
        priority and in turns (FairQueue order): IndexWriter.commit checks the items of a batch
        in list order, so each stream item still sees every earlier item of its stream."""
        while True:
            batch = self._in_hand = [await self._commits.get()]
            try:
                # Items of one inference batch reach this queue over a few loop turns (a
                # stream's items pass their order tickets one turn each): let them all arrive, so
                # one write (about five Milvus calls, each ~1 ms of CPU) serves the whole batch.
                for _ in range(self.settings.max_commit_batch):
                    waiting = self._commits.qsize()
                    await asyncio.sleep(0)
                    if self._commits.qsize() == waiting:
                        break
                while len(batch) < self.settings.max_commit_batch and not self._commits.empty():
                    batch.append(self._commits.get_nowait())
                await self._fill_bulk_write(batch)
                await self._write(batch)
            except asyncio.CancelledError:  # stopped before this batch was written
                for c in batch:
                    if not c.future.done():
                        c.future.set_exception(StorageUnavailable("the index writer stopped; this image was not stored: re-send it"))
                raise
            finally:
                self._in_hand = []

    async def _write(self, batch: list[_Commit]) -> None:
        """One batch on the writer thread, and its answers."""
        loop = asyncio.get_running_loop()
        for commits in self._retry_plan(batch):
            started = time.perf_counter()
            try:
                results = await loop.run_in_executor(self._write_pool, self._guarded, self._writer.commit, [c.item for c in commits])
                metrics.WRITE_SECONDS.observe(time.perf_counter() - started)
                metrics.WRITE_BATCH_SIZE.observe(len(commits))
            except asyncio.CancelledError:  # closing with a batch on the writer thread: it may land
                for c in batch:
                    if not c.future.done():
                        c.future.set_exception(StorageUnavailable("the index writer stopped during this write; it may be stored: re-send it (idempotent)"))
                raise
            except Exception as exc:
                lost = isinstance(exc, NotTheWriter)
                if len(commits) > 1 and not lost:
                    # Retry one by one so that only the image that breaks the write fails.
                    # Safe: commit skips ids already stored with the same bytes.
                    log.warning("index write of %d images failed (%s); retrying one by one", len(commits), exc)
                    continue
                if not lost:
                    log.exception("index write failed for %r", commits[0].item.image_id)
                err = StorageUnavailable(f"vector database write failed: {exc}") if isinstance(exc, StorageError) else exc
                # The lease lost in the middle of one-by-one retries: nothing more of the batch
                # will be written here.
                for c in batch if lost else commits:
                    if not c.future.done():
                        c.future.set_exception(err)
                if lost:
                    break
                continue
            for c, r in zip(commits, results):
                if c.future.done():
                    continue
                if r.error is not None:
                    c.future.set_exception(r.error)
                else:
                    c.future.set_result(r)
            if len(commits) == len(batch):
                break

    async def _fill_bulk_write(self, batch: list[_Commit]) -> None:
        """Let a write of bulk images only wait up to bulk_write_delay_ms for more, while the
        images say more of their streams are on their way: a write's Milvus calls cost less per
        image the more images share them (the model hands a stream's images over a few at a
        time). An interactive image joins at once and ends the wait; a stream that sends one
        image at a time never waits. (An image behind that fails before it reaches the index,
        e.g. one that does not decode, leaves the write waiting out the delay.)"""
        delay = self.settings.bulk_write_delay_ms / 1000
        limit = self.settings.max_commit_batch
        if not delay or not all(c.priority is Priority.LOW and c.item.more_coming for c in batch):
            return
        loop = asyncio.get_running_loop()
        deadline = loop.time() + delay
        while len(batch) < limit:
            if self._commits.empty():
                remaining = deadline - loop.time()
                if remaining <= 0 or self._closing:
                    return
                try:  # in slices, so that close() need not wait out a long delay
                    await asyncio.wait_for(self._commits.wait(), min(remaining, 0.05))
                except TimeoutError:
                    continue
            commit = self._commits.get_nowait()  # the highest level first
            batch.append(commit)
            if commit.priority is not Priority.LOW or not commit.item.more_coming:
                return

    @staticmethod
    def _retry_plan(batch: list[_Commit]):
        """The whole batch first; if that fails, each commit alone (the caller breaks early)."""
        yield batch
        if len(batch) > 1:
            for c in batch:
                yield [c]

    async def delete(self, namespace: str, image_ids: list[str]) -> tuple[list[str], list[str]]:
        return await self._run(self._write_pool, self._guarded, self._writer.delete, namespace, image_ids)

    async def delete_namespace(self, namespace: str) -> int:
        """Every image and cluster of a namespace, on the writer thread (between writes)."""
        return await self._run(self._write_pool, self._guarded, self._writer.drop_namespace, namespace)

    async def namespaces(self) -> list[tuple[str, int, int]]:
        """(name, stored images, clusters of two or more) of every registered namespace."""
        def read() -> list[tuple[str, int, int]]:
            return [(n, *self._counts(n)) for n in self.store.namespace_names()]

        return await self._run(self._read_pool, read)

    def _reconnect(self) -> int:
        """Reconnect, and make again the writes Milvus may have lost, as writes: the writer guard
        before each, the in-progress marker on disk while some wait (for a crash meanwhile). A
        replay that fails part-way needs no repair: the store stays unconnected, and the next
        reconnect replays all of them again, in order. Until one has, the index is dirty."""
        pending = self.store.unflushed_rows > 0
        if pending:
            self._replay_pending = True
            self._write_marker.touch()
        replayed = self.store.reconnect(self._check_writer)
        self._writer.views.forget_all()  # before the next write: Milvus may not hold what the copies hold
        self._replay_pending = False
        self._unmark_if_clean()
        return replayed

    def _unmark_if_clean(self) -> None:
        """Remove the in-progress marker unless the index is dirty (on the writer thread)."""
        if not self.dirty:
            self._write_marker.unlink(missing_ok=True)

    def _guarded(self, write, *args):
        """Run a write with the in-progress marker on disk (no fsync: it guards against process
        crashes, whose page cache survives)."""
        if self._check_writer is not None:
            self._check_writer()  # last, on the writer thread, just before writing
        self._write_marker.touch()
        try:
            result = write(*args)
        except BaseException:
            self._write_failed = True  # possibly half-written: keep the marker for the next start
            raise
        self._unmark_if_clean()
        return result

    # -- reads -----------------------------------------------------------------------------
    async def list_clusters(self, namespace: str, page_size: int, page_token: str, min_size: int) -> tuple[list[ClusterView], str, int]:
        cursor = _decode_token(page_token, namespace, min_size) if page_token else None
        sizes = await self._run(self._read_pool, self.store.cluster_sizes, namespace, min_size)
        ordered = sorted(sizes, key=lambda cs: (-cs[1], cs[0]))
        if cursor is not None:
            last_size, last_id = cursor
            ordered = [cs for cs in ordered if (-cs[1], cs[0]) > (-last_size, last_id)]
        page = ordered[:page_size]
        views = await self._run(self._read_pool, self._cluster_views, namespace, [c for c, _ in page])
        next_token = _encode_token(page[-1][1], page[-1][0], namespace, min_size) if len(ordered) > page_size else ""
        return views, next_token, len(sizes)

    async def get_cluster(self, namespace: str, cluster_id: str) -> ClusterView:
        views = await self._run(self._read_pool, self._cluster_views, namespace, [cluster_id])
        if not views:
            raise NotFound("cluster", cluster_id)
        return views[0]

    def _cluster_views(self, namespace: str, cluster_ids: list[str]) -> list[ClusterView]:
        rows = self.store.get_clusters(namespace, cluster_ids)
        members = self.store.images_in_clusters(namespace, [c for c in cluster_ids if c in rows], with_vectors=True)
        extra = self.store.views_of(namespace, [m.image_id for m in members]) if members else {}
        insets = {i for i, views in extra.items() if views.inset}
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
            scored = [
                (m.image_id, 1.0 if m is rep else image_similarity(of[m.image_id], of[rep.image_id], a_inset=m.image_id in insets, b_inset=rep.image_id in insets) if rep is not None else 0.0)
                for m in mem
            ]
            scored.sort(key=lambda x: (x[0] != row.representative_id, -x[1], x[0]))
            views.append(ClusterView(cid, row.size, row.representative_id, scored))
        return views

    async def counts(self, namespace: str) -> tuple[int, int]:
        return await self._run(self._read_pool, self._counts, namespace)

    def _counts(self, namespace: str) -> tuple[int, int]:
        """(stored images, clusters of two or more) of a namespace."""
        return self.store.count_images(namespace), self.store.count_clusters(namespace, 2)

    async def _run(self, pool, fn, *args):
        try:
            return await asyncio.get_running_loop().run_in_executor(pool, fn, *args)
        except StorageError as exc:
            raise StorageUnavailable(f"vector database unavailable: {exc}") from None


def _guard(may_write: Callable[[], bool] | None) -> Callable[[], None] | None:
    """What a long write (a cluster rebuild) calls before each of its steps."""
    if may_write is None:
        return None

    def guard() -> None:
        if not may_write():
            raise NotTheWriter()

    return guard


class NotTheWriter(StorageUnavailable):
    """This process may no longer write the collection: its writer lease ran out."""

    reason = "NOT_THE_WRITER"

    def __init__(self) -> None:
        super().__init__("this server is no longer the collection's index writer (its lease ran out); retry: another replica writes now")


# AIP-158 page tokens: opaque to clients, tied to the query that made them (its namespace too).
def _encode_token(last_size: int, last_id: str, namespace: str, min_size: int) -> str:
    raw = json.dumps({"v": 2, "s": last_size, "c": last_id, "n": namespace, "m": min_size}, separators=(",", ":")).encode()
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def _decode_token(token: str, namespace: str, min_size: int) -> tuple[int, str]:
    try:
        data = json.loads(base64.urlsafe_b64decode(token + "=" * (-len(token) % 4)))
        size, cid, ns, m = int(data["s"]), str(data["c"]), str(data["n"]), int(data["m"])
        assert data.get("v") == 2
    except Exception:
        raise InvalidArgument("page_token", "page_token is not valid: pass next_page_token from a previous response unchanged", reason="INVALID_PAGE_TOKEN") from None
    if ns != namespace:
        raise InvalidArgument("page_token", "page_token was made for another namespace; page within the namespace that gave it", reason="INVALID_PAGE_TOKEN")
    if m != min_size:
        raise InvalidArgument("page_token", "page_token was made for another min_size; keep the other fields unchanged while paging", reason="INVALID_PAGE_TOKEN")
    return size, cid
