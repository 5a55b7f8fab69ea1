"""Dynamic micro-batching in front of the embedder, shared by every call.

Requests wait at most `max_queue_delay` for company, up to `max_batch_size` per inference (the
Triton scheme). While one batch runs on the model thread the next one gathers, so on a busy
server batches fill without any waiting. The queue is bounded: past it callers get Overloaded.
Requests whose caller has gone (cancelled future) are dropped before they reach the model.

The wait is adaptive: callers announce images that are still being decoded (`incoming`); when
none are, nobody else can join the batch, so it runs at once instead of idling for the delay.
"""

from __future__ import annotations

import asyncio
import functools
import logging
import time
from dataclasses import dataclass, field

import numpy as np

from imgdedup import metrics
from imgdedup.core.errors import Overloaded
from imgdedup.core.threads import thread_pool
from imgdedup.runtime import Embedder

log = logging.getLogger(__name__)


@dataclass(slots=True)
class _Pending:
    tensor: np.ndarray
    future: asyncio.Future
    enqueued: float = field(default_factory=time.perf_counter)


class EmbedBatcher:
    def __init__(self, embedder: Embedder, *, max_batch_size: int = 8, max_queue_delay_s: float = 0.002, max_queue_size: int = 1024, workers: int = 1):
        self.embedder = embedder
        self.max_batch_size = max_batch_size
        self.max_queue_delay_s = max_queue_delay_s
        self._queue: asyncio.Queue[_Pending] = asyncio.Queue(max_queue_size)
        # `workers` inferences may run at once; the embedder has a session for each (see
        # OnnxEmbedder: one per worker, plus one on every core for an inference that runs alone).
        self._executor = thread_pool(workers, "embed")
        self._slots = asyncio.Semaphore(workers)
        self._running: set[asyncio.Task] = set()
        self._worker: asyncio.Task | None = None
        # Images being decoded that will call embed() soon (kept by the caller, see engine).
        self.incoming = 0

    def start(self) -> None:
        self._worker = asyncio.get_running_loop().create_task(self._run(), name="embed-batcher")

    async def stop(self) -> None:
        if self._worker:
            self._worker.cancel()
            await asyncio.gather(self._worker, *self._running, return_exceptions=True)
        while not self._queue.empty():
            pending = self._queue.get_nowait()
            if not pending.future.done():
                pending.future.set_exception(asyncio.CancelledError())
        self._executor.shutdown(wait=True)

    async def embed(self, tensor: np.ndarray) -> np.ndarray:
        """One preprocessed image (H, W, 3) uint8 -> its embedding (dim,) float32."""
        future = asyncio.get_running_loop().create_future()
        try:
            self._queue.put_nowait(_Pending(tensor, future))
        except asyncio.QueueFull:
            metrics.SHED.labels("embed").inc()
            raise Overloaded(f"embedding queue is full ({self._queue.maxsize} images waiting)") from None
        return await future

    async def _run(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            # Wait for a free worker first, so a batch is gathered at the moment it can run and
            # takes everything that queued up meanwhile.
            await self._slots.acquire()
            batch = [await self._queue.get()]
            deadline = loop.time() + self.max_queue_delay_s
            while len(batch) < self.max_batch_size:
                if not self._queue.empty():
                    batch.append(self._queue.get_nowait())
                    continue
                remaining = deadline - loop.time()
                if remaining <= 0 or self.incoming == 0:
                    break
                try:
                    batch.append(await asyncio.wait_for(self._queue.get(), remaining))
                except TimeoutError:
                    break
            live = [p for p in batch if not p.future.done()]
            metrics.EMBED_DROPPED.inc(len(batch) - len(live))
            # Only same-shaped images stack into one tensor (always true for square resizing).
            by_shape: dict[tuple[int, ...], list[_Pending]] = {}
            for p in live:
                by_shape.setdefault(p.tensor.shape, []).append(p)
            if not by_shape:
                self._slots.release()
            # Nothing else running, queued or on its way: this inference may take every core.
            alone = not self._running and len(by_shape) == 1 and self._queue.empty() and self.incoming == 0
            for n, group in enumerate(by_shape.values()):
                if n > 0:
                    await self._slots.acquire()
                task = loop.create_task(self._infer(loop, group, alone))
                self._running.add(task)
                task.add_done_callback(self._finished)

    def _finished(self, task: asyncio.Task) -> None:
        self._running.discard(task)
        self._slots.release()

    async def _infer(self, loop: asyncio.AbstractEventLoop, group: list[_Pending], alone: bool) -> None:
        stacked = np.stack([p.tensor for p in group])
        started = time.perf_counter()
        for p in group:
            metrics.EMBED_QUEUE_SECONDS.observe(started - p.enqueued)
        metrics.EMBED_BATCH_SIZE.observe(len(group))
        try:
            vectors = await loop.run_in_executor(self._executor, functools.partial(self.embedder.embed, stacked, alone=alone))
            metrics.INFERENCE_SECONDS.observe(time.perf_counter() - started)
        except Exception as exc:  # a model failure fails this batch, not the server
            log.exception("inference failed for a batch of %d", len(group))
            for p in group:
                if not p.future.done():
                    p.future.set_exception(exc)
            return
        for p, vec in zip(group, vectors):
            if not p.future.done():
                p.future.set_result(vec)
