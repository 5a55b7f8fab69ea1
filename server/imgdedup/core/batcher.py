"""Dynamic micro-batching in front of the embedder, shared by every call, by priority.

Requests wait at most `max_queue_delay` for company, up to `max_batch_size` per inference (the
Triton scheme). While one batch runs on the model thread the next one gathers, so on a busy
server batches fill without any waiting. The queue is bounded: past it callers get Overloaded.
Requests whose caller has gone (cancelled future) are dropped before they reach the model.

The wait is adaptive: callers announce images that are still being decoded (`announce`); when
none are, nobody else can join the batch, so it runs at once instead of idling for the delay.

Priorities (core/priority.py): each level gathers its own batches, so a batch never mixes
levels (an interactive image would otherwise wait for seven bulk ones to be embedded with it).
An inference cannot be interrupted, and a bulk stream keeps every worker busy, so two more rules
keep a running bulk batch from holding interactive work up:
- lanes: `workers` inferences run at once, plus one more that only high-priority batches may
  take (on the embedder's session on every core, when it has one): an interactive batch
  starts at once, next to the bulk batches;
- bulk inferences run on threads of lower OS priority (PriorityThreadPool,
  `low_priority_nice`), as bulk decoding does: the kernel gives the cores to the interactive
  inference, and to the index writer, whenever they want them, so a stream does not hold the
  model even while its batches run.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
import time
from dataclasses import dataclass, field
from typing import Hashable, Iterator

import numpy as np

from imgdedup import metrics
from imgdedup.core.errors import InferenceUnavailable, Overloaded
from imgdedup.core.priority import AsyncFairQueue, Priority
from imgdedup.core.threads import PriorityThreadPool
from imgdedup.runtime import Embedder, InferenceError

log = logging.getLogger(__name__)


@dataclass(slots=True)
class _Pending:
    tensor: np.ndarray
    future: asyncio.Future
    enqueued: float = field(default_factory=time.perf_counter)


class _Lanes:
    """How many inferences of each level run, and which may start: while fewer than `workers`
    run in all, any; past that, one more high-priority one (never more than `workers` of one
    level), so that bulk work holding every worker cannot hold interactive work up, while
    interactive work alone runs as before (at most `workers` at once)."""

    def __init__(self, workers: int) -> None:
        self.workers = workers
        self.running = dict.fromkeys(Priority, 0)
        self._changed = asyncio.Event()

    def may_start(self, level: Priority) -> bool:
        total = sum(self.running.values())
        if total < self.workers:
            return True
        return level != Priority.LOW and self.running[level] < self.workers and total == self.workers

    async def acquire(self, level: Priority) -> None:
        while not self.may_start(level):
            self._changed.clear()
            await self._changed.wait()
        self.running[level] += 1

    def release(self, level: Priority) -> None:
        self.running[level] -= 1
        self._changed.set()


class EmbedBatcher:
    def __init__(self, embedder: Embedder, *, max_batch_size: int = 8, max_queue_delay_s: float = 0.002, max_queue_size: int = 1024, workers: int = 1, low_priority_nice: int = 10):
        self.embedder = embedder
        self.max_batch_size = max_batch_size
        self.max_queue_delay_s = max_queue_delay_s
        self._queue: AsyncFairQueue[_Pending] = AsyncFairQueue(max_queue_size)
        for level in Priority:
            metrics.QUEUE_DEPTH.labels(f"embed_{level.label}").set_function(lambda level=level: self._queue.count(level))
        # At most `workers` inferences of a level run at once, each on a session of its own
        # (see OnnxEmbedder: one per worker, plus one on every core for an inference that runs
        # alone), on threads of their level: bulk ones on niced threads.
        self._threads = PriorityThreadPool(workers, "embed", low_nice=low_priority_nice)
        self._lanes = _Lanes(workers)
        self._running: set[asyncio.Task] = set()
        self._gatherers: list[asyncio.Task] = []
        # Images being decoded that will call embed() soon, per level (see announce()).
        self._incoming = dict.fromkeys(Priority, 0)

    def start(self) -> None:
        loop = asyncio.get_running_loop()
        self._gatherers = [loop.create_task(self._run(level), name=f"embed-batcher-{level.label}") for level in Priority]

    async def stop(self) -> None:
        for gatherer in self._gatherers:
            gatherer.cancel()
        await asyncio.gather(*self._gatherers, *self._running, return_exceptions=True)
        while not self._queue.empty():
            pending = self._queue.get_nowait()
            if not pending.future.done():
                pending.future.set_exception(asyncio.CancelledError())
        self._threads.shutdown(wait=True)

    @contextlib.contextmanager
    def announce(self, priority: Priority) -> Iterator[None]:
        """Around the decoding of an image that will call embed(): lets batches of its level
        wait for it, and only for it (see the adaptive wait above)."""
        self._incoming[priority] += 1
        try:
            yield
        finally:
            self._incoming[priority] -= 1

    async def embed(self, tensor: np.ndarray, priority: Priority = Priority.HIGH, flow: Hashable = None) -> np.ndarray:
        """One preprocessed image (H, W, 3) uint8 -> its embedding (dim,) float32. `flow`: the
        stream it belongs to (None: a unary call), for round-robin between streams."""
        future = asyncio.get_running_loop().create_future()
        try:
            self._queue.put_nowait(_Pending(tensor, future), priority, flow)
        except asyncio.QueueFull:
            metrics.SHED.labels("embed").inc()
            raise Overloaded(f"embedding queue is full ({self._queue.maxsize} images waiting)") from None
        return await future

    async def _run(self, level: Priority) -> None:
        """Gather and start the batches of one level, one after another."""
        loop = asyncio.get_running_loop()
        while True:
            # Wait for work, then for a free lane, so a batch is gathered at the moment it can
            # run and takes everything that queued up meanwhile (this task alone takes items
            # of its level: the one that came is still there).
            await self._queue.wait(level)
            await self._lanes.acquire(level)
            batch = [self._queue.get_nowait(level)]
            deadline = loop.time() + self.max_queue_delay_s
            while len(batch) < self.max_batch_size:
                if self._queue.count(level):
                    batch.append(self._queue.get_nowait(level))
                    continue
                remaining = deadline - loop.time()
                if remaining <= 0 or self._incoming[level] == 0:
                    break
                try:
                    batch.append(await asyncio.wait_for(self._queue.get(level), remaining))
                except TimeoutError:
                    break
            live = [p for p in batch if not p.future.done()]
            metrics.EMBED_DROPPED.inc(len(batch) - len(live))
            # Only same-shaped images stack into one tensor (always true for square resizing).
            by_shape: dict[tuple[int, ...], list[_Pending]] = {}
            for p in live:
                by_shape.setdefault(p.tensor.shape, []).append(p)
            if not by_shape:
                self._lanes.release(level)
            alone = self._alone(level, len(by_shape))
            for n, group in enumerate(by_shape.values()):
                if n > 0:
                    await self._lanes.acquire(level)
                task = loop.create_task(self._infer(level, group, alone))
                self._running.add(task)
                task.add_done_callback(functools.partial(self._finished, level))

    def _alone(self, level: Priority, groups: int) -> bool:
        """Whether this inference may take every core: nothing of its level or above runs,
        waits or is on its way (lower levels run on threads that yield the cores to it)."""
        return groups == 1 and all(
            self._lanes.running[p] == int(p == level) and not self._queue.count(p) and not self._incoming[p]
            for p in Priority if p <= level
        )

    def _finished(self, level: Priority, task: asyncio.Task) -> None:
        self._running.discard(task)
        self._lanes.release(level)

    async def _infer(self, level: Priority, group: list[_Pending], alone: bool) -> None:
        started = time.perf_counter()
        queued = metrics.EMBED_QUEUE_SECONDS.labels(level.label)
        for p in group:
            queued.observe(started - p.enqueued)
        metrics.EMBED_BATCH_SIZE.observe(len(group))
        try:
            # Stacked on the model's thread: a batch is megabytes, and the event loop is the
            # one thread every image passes through.
            tensors = [p.tensor for p in group]
            vectors = await asyncio.wrap_future(self._threads.submit(self._embed, tensors, alone, priority=level))
            metrics.INFERENCE_SECONDS.observe(time.perf_counter() - started)
        except Exception as exc:  # a model failure fails this batch, not the server
            if isinstance(exc, InferenceError) and exc.kind != "failed":
                log.warning("inference failed for a batch of %d: %s", len(group), exc)
            else:
                log.exception("inference failed for a batch of %d", len(group))
            exc = _as_dedup_error(exc)
            for p in group:
                if not p.future.done():
                    p.future.set_exception(exc)
            return
        for p, vec in zip(group, vectors):
            if not p.future.done():
                p.future.set_result(vec)

    def _embed(self, tensors: list[np.ndarray], alone: bool) -> np.ndarray:
        return self.embedder.embed(np.stack(tensors), alone=alone)


def _as_dedup_error(exc: Exception) -> Exception:
    """What the caller of a failed batch is told: a backend that is down or shedding load says
    retry (UNAVAILABLE, RESOURCE_EXHAUSTED, with RetryInfo); anything else stays INTERNAL."""
    if isinstance(exc, InferenceError) and exc.kind == "unavailable":
        return InferenceUnavailable(str(exc))
    if isinstance(exc, InferenceError) and exc.kind == "overloaded":
        return Overloaded(str(exc), retry_after_s=0.5)
    return exc
