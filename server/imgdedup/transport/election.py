"""ElectedIndex: the IndexBackend of a replica that takes part in the writer election.

Every replica started with writer_election runs this. The one that holds the writer lease
(transport/lease.py, in etcd) opens Milvus as the collection's one writer (a LocalIndex) and
serves it on writer_listen; the others are fronts of it (a RemoteIndex to the address the lease
names). When the writer stops renewing its lease (it died, hung, or lost etcd), the lease
expires after writer_lease_ttl_s; the fronts see the key gone, one of them takes it, rebuilds the
cluster rows if the last writer did not stop cleanly, and serves; the others follow it. A writer
that stops cleanly gives the lease up at once, so another takes over without waiting.

Fencing: a writer writes only while its lease is certainly still its own: renewals every third
of the TTL, and no write starts later than (the last renewal's send time + the TTL it was given
- a margin), by this host's boot-time clock. A writer paused longer than that (a stopped process,
a long GC pause, a partition from etcd) refuses to write when it wakes, steps down, and follows
the new writer. Milvus cannot check an epoch itself, so a write already under way when the pause
began may still land; docs/scale-out.md says what that can do.
"""

from __future__ import annotations

import asyncio
import logging
import sys
import time
from typing import Callable, Hashable

from imgdedup.config import Settings
from imgdedup.core.errors import StorageUnavailable
from imgdedup.core.index import PendingImage
from imgdedup.core.local_index import LocalIndex
from imgdedup.core.priority import Priority
from imgdedup.runtime import ModelSpec
from imgdedup.transport.lease import EtcdLease, LeaseStoreError, Won
from imgdedup.transport.remote_index import RemoteIndex

log = logging.getLogger(__name__)

# The fence's clock: on Linux one that also runs while the host is suspended (a VM paused).
_CLOCK = time.CLOCK_BOOTTIME if sys.platform == "linux" else time.CLOCK_MONOTONIC


def _now() -> float:
    return time.clock_gettime(_CLOCK)


async def _no_keys():
    return
    yield  # an async generator that ends at once


def _no_writer() -> StorageUnavailable:
    return StorageUnavailable("no index writer yet: the replicas are electing one; retry", reason="NO_WRITER")


class ElectedIndex:
    """Built whole by `open()`, once this replica is the writer or follows one."""

    def __init__(self, settings: Settings, spec: ModelSpec, lease: EtcdLease, make_writer_server: Callable):
        self.settings = settings
        self.spec = spec
        self.lease = lease
        self.address = settings.writer_advertise or settings.writer_listen or ""
        self._make_writer_server = make_writer_server
        self._delegate: LocalIndex | RemoteIndex | None = None
        self._backend = "unknown"
        self._won: Won | None = None
        self._writer_server = None
        self._ok_until = 0.0  # _now() before which our lease is certainly ours
        self._margin = min(2.0, lease.ttl * 0.2)
        self._lock = asyncio.Lock()  # one change of role at a time
        self._placed = asyncio.Event()  # a delegate was put in place once
        self._keeper: asyncio.Task | None = None
        self._said = ""
        self._task = asyncio.get_running_loop().create_task(self._run(), name="writer-election")

    @classmethod
    async def open(cls, settings: Settings, spec: ModelSpec, make_writer_server: Callable) -> "ElectedIndex":
        """`make_writer_server(index)` builds the writer's gRPC server on writer_listen."""
        assert settings.writer_election
        lease = EtcdLease(settings.writer_election, settings.collection_prefix, settings.writer_lease_ttl_s)
        index = cls(settings, spec, lease, make_writer_server)
        waiting = asyncio.ensure_future(index._placed.wait())
        try:
            await asyncio.wait({waiting, index._task}, return_when=asyncio.FIRST_COMPLETED)
            if index._task.done():  # it ended (a setting refused): say why
                index._task.result()
        except BaseException:  # given up on (the server stops while starting): leave nothing behind
            waiting.cancel()
            await index.close()
            raise
        return index

    @property
    def backend(self) -> str:
        return self._backend

    @property
    def writer_server(self):
        """The writer's gRPC server while this replica is the writer (its health follows ours)."""
        return self._writer_server

    def _may_write(self) -> bool:
        return self._won is not None and _now() < self._ok_until

    # -- the election ------------------------------------------------------------------------
    async def _run(self) -> None:
        while True:
            try:
                if self._won is None:
                    await self._follow_or_take()
            except LeaseStoreError as exc:
                self._say(f"the writer lease store is not answering: {exc}")
            except SystemExit:
                raise
            except Exception:  # noqa: BLE001 - the election goes on
                log.exception("writer election step failed")
            await asyncio.sleep(min(1.0, self.lease.ttl / 4))

    def _say(self, what: str) -> None:
        if what != self._said:
            log.warning("%s", what)
            self._said = what

    async def _follow_or_take(self) -> None:
        holder = await self.lease.holder()
        if holder is None:
            sent = _now()
            won = await self.lease.try_acquire(self.address)
            if won is not None:
                await self._become_writer(won, sent)
                return
            holder = await self.lease.holder()
            if holder is None:
                return
        if holder.address == self.address:
            # An earlier run of this replica (killed) holds it still, or another replica
            # advertises the same address: wait for that lease to expire.
            self._say(f"the writer lease names this replica's address {self.address} but not this run; waiting for it to expire")
            await self._drop_delegate()
            return
        current = self._delegate
        if isinstance(current, RemoteIndex) and current.address == holder.address:
            return
        await self._follow(holder.address, holder.epoch)

    async def _drop_delegate(self) -> None:
        old, self._delegate = self._delegate, None
        if isinstance(old, RemoteIndex):
            await old.close(grace_s=0, why="the index writer changed: retry")

    async def _follow(self, address: str, epoch: int) -> None:
        async with self._lock:
            await self._drop_delegate()
            self._say(f"following the index writer at {address} (epoch {epoch})")
            settings = self.settings.model_copy(update={"writer_address": address})
            try:
                remote = await asyncio.wait_for(RemoteIndex.open(settings), timeout=self.lease.ttl)
            except TimeoutError:
                return  # not answering yet (starting, or dead with its lease not expired): look again
            self._delegate, self._backend = remote, remote.backend
            self._placed.set()

    async def _become_writer(self, won: Won, sent: float) -> None:
        async with self._lock:
            self._won, self._ok_until = won, sent + self.lease.ttl - self._margin
            self._keeper = asyncio.get_running_loop().create_task(self._keep(won), name="writer-lease")
            server = None
            try:
                await self._drop_delegate()
                log.warning("this replica holds the writer lease (epoch %d); opening the index%s", won.epoch, "" if won.clean else " (the last writer did not stop cleanly)")
                index = await LocalIndex.open(self.settings, self.spec, rebuild=not won.clean, may_write=self._may_write)
                try:
                    server = self._make_writer_server(index)
                    await server.start()
                except BaseException:
                    if server is not None:
                        await server.stop(0)
                    await index.close()
                    raise
            except BaseException:
                await asyncio.shield(self._end_term(won, clean=False))
                raise
            if not self._may_write():  # the lease may have run out while the index opened
                await server.stop(0)
                await index.close()
                await self._end_term(won, clean=False)
                log.error("the writer lease ran out while the index opened; not writing")
                return
            self._writer_server, self._delegate, self._backend = server, index, index.backend
            self._said = ""
            self._placed.set()

    async def _keep(self, won: Won) -> None:
        """Renew the lease every third of its TTL; step down once it may have run out."""
        while True:
            await asyncio.sleep(self.lease.ttl / 3)
            sent = _now()
            try:
                left = await self.lease.keep_alive(won.lease_id)
            except Exception as exc:  # noqa: BLE001 - the keeper must not die: it is what steps down
                log.error("renewing the writer lease failed: %s", exc)
                left = None
            if left:
                self._ok_until = max(self._ok_until, sent + left - self._margin)
                continue
            if left == 0 or _now() >= self._ok_until:
                try:
                    await self._step_down(won, "its writer lease expired" if left == 0 else "it could not renew its writer lease in time")
                except Exception:  # noqa: BLE001 - stepped down regardless: _won is cleared first
                    log.exception("stepping down as the writer failed part-way")
                return

    async def _step_down(self, won: Won, why: str) -> None:
        self._ok_until = 0.0  # no write starts from now on
        async with self._lock:
            if self._won is not won:
                return
            self._won = None
            log.error("this replica stops writing the collection: %s", why)
            index, self._delegate = self._delegate, None
            server, self._writer_server = self._writer_server, None
            try:
                if server is not None:
                    await server.stop(0)
                if isinstance(index, LocalIndex):
                    await index.close()  # what is queued fails (NOT_THE_WRITER): nothing more is written
            finally:
                await self._end_term(won, clean=False)

    async def close(self) -> None:
        self._task.cancel()
        await asyncio.gather(self._task, return_exceptions=True)
        async with self._lock:
            won, index, server = self._won, self._delegate, self._writer_server
            self._delegate = None
            if won is not None and not isinstance(index, LocalIndex):  # won, not serving yet
                await self._end_term(won, clean=False)
            elif isinstance(index, LocalIndex) and won is not None:
                # Other replicas' fronts keep their Commit streams open: answer what is queued.
                await index.drained(self.settings.grace_period_s)
                if server is not None:
                    await server.stop(0.5)
                await index.close()
                await self._end_term(won, clean=not index.dirty)
            elif index is not None:
                await index.close()

    async def _end_term(self, won: Won, *, clean: bool) -> None:
        """This replica's term as the writer is over: stop renewing, and give the lease up at once
        (saying whether its last write finished) rather than after its TTL."""
        self._won = None
        if self._keeper is not None and self._keeper is not asyncio.current_task():
            self._keeper.cancel()
        try:
            await self.lease.release(won, clean=clean)
        except LeaseStoreError as exc:
            log.warning("giving the writer lease up failed (it expires on its own): %s", exc)

    # -- IndexBackend: the current writer's, or its front's -----------------------------------
    def _current(self) -> LocalIndex | RemoteIndex:
        if self._delegate is None:
            raise _no_writer()
        return self._delegate

    async def healthy(self) -> bool:
        index = self._delegate
        if index is None or (isinstance(index, LocalIndex) and not self._may_write()):
            return False
        return await index.healthy()

    def might_hold(self, namespace: str, sha256: str) -> bool | None:
        return self._delegate.might_hold(namespace, sha256) if self._delegate is not None else None

    async def find_exact(self, namespace: str, sha256: str):
        return await self._current().find_exact(namespace, sha256)

    def watch_digests(self):
        # Only while this process writes; the watch ends when its LocalIndex closes (the term
        # ends). While it follows or waits, an empty watch: the fronts try again soon.
        if isinstance(self._delegate, LocalIndex):
            return self._delegate.watch_digests()
        return _no_keys() if self.settings.digest_cache else None

    async def share_rates(self, process: str, demand: dict[str, float]):
        index = self._delegate
        return await index.share_rates(process, demand) if index is not None else None

    def enqueue(self, item: PendingImage, priority: Priority, flow: Hashable):
        return self._current().enqueue(item, priority, flow)

    async def delete(self, namespace: str, image_ids: list[str]):
        return await self._current().delete(namespace, image_ids)

    async def list_clusters(self, namespace: str, page_size: int, page_token: str, min_size: int):
        return await self._current().list_clusters(namespace, page_size, page_token, min_size)

    async def get_cluster(self, namespace: str, cluster_id: str):
        return await self._current().get_cluster(namespace, cluster_id)

    async def counts(self, namespace: str):
        return await self._current().counts(namespace)

    async def namespaces(self):
        return await self._current().namespaces()

    async def delete_namespace(self, namespace: str):
        return await self._current().delete_namespace(namespace)
