"""Priority levels, and the fair queue that the decode pool, the model and the index writer share.

Low-latency callers share the server with long bulk imports. Each queue serves higher levels
first (strict priority, as Triton's dynamic batcher does with priority levels): an interactive
check never waits behind a backlog of bulk work, only behind work already running. Within a
level, *flows* take turns (round-robin, one item each): a flow is one BulkCheck stream, while
all unary calls of a level share one flow, so several concurrent streams get equal shares
whatever their windows. Within a flow the order is FIFO, which is what keeps a stream's index
writes in request order (engine.StreamOrder). A stream therefore has one priority (servicer).
"""

from __future__ import annotations

import asyncio
from collections import deque
from enum import IntEnum
from typing import Generic, Hashable, TypeVar

T = TypeVar("T")


class Priority(IntEnum):
    """Lower values are served first."""

    HIGH = 0  # interactive: the default of unary calls
    LOW = 1  # bulk: the default of BulkCheck streams

    @property
    def label(self) -> str:
        """For metrics labels and logs: "high", "low"."""
        return self.name.lower()


class FairQueue(Generic[T]):
    """Strict priority between levels, round-robin between the flows of a level, FIFO within a
    flow. Not thread-safe: the asyncio queue below and threads.PriorityThreadPool wrap it."""

    def __init__(self) -> None:
        self._flows: dict[tuple[Priority, Hashable], deque[T]] = {}
        # Per level, the flows holding items, in turn order.
        self._turns: dict[Priority, deque[Hashable]] = {p: deque() for p in Priority}
        self._counts = dict.fromkeys(Priority, 0)

    def __len__(self) -> int:
        return sum(self._counts.values())

    def count(self, priority: Priority) -> int:
        """Items queued at this level."""
        return self._counts[priority]

    def next_level(self) -> Priority | None:
        """The level the next pop() serves, or None when empty."""
        return next((p for p in Priority if self._counts[p]), None)

    def push(self, item: T, priority: Priority, flow: Hashable = None) -> None:
        items = self._flows.get((priority, flow))
        if items is None:
            items = self._flows[priority, flow] = deque()
            self._turns[priority].append(flow)
        items.append(item)
        self._counts[priority] += 1

    def pop(self, priority: Priority | None = None) -> T:
        """The next item of the highest level holding any (or of `priority`). IndexError if none."""
        level = self.next_level() if priority is None else priority
        if level is None or not self._counts[level]:
            raise IndexError("pop from an empty FairQueue")
        turns = self._turns[level]
        flow = turns.popleft()
        items = self._flows[level, flow]
        item = items.popleft()
        if items:
            turns.append(flow)  # its next item waits for every other flow's turn
        else:
            del self._flows[level, flow]
        self._counts[level] -= 1
        return item


class AsyncFairQueue(Generic[T]):
    """A FairQueue for one event loop, bounded like asyncio.Queue (QueueFull past `maxsize`),
    per level: bulk work filling the queue does not shed interactive work."""

    def __init__(self, maxsize: int) -> None:
        self.maxsize = maxsize
        self._queue: FairQueue[T] = FairQueue()
        self._put = asyncio.Event()  # set by each put, then replaced: waiters re-check

    def qsize(self) -> int:
        return len(self._queue)

    def empty(self) -> bool:
        return not len(self._queue)

    def count(self, priority: Priority) -> int:
        return self._queue.count(priority)

    def next_level(self) -> Priority | None:
        return self._queue.next_level()

    def put_nowait(self, item: T, priority: Priority, flow: Hashable = None) -> None:
        if self._queue.count(priority) >= self.maxsize:
            raise asyncio.QueueFull
        self._queue.push(item, priority, flow)
        self._put.set()
        self._put = asyncio.Event()

    def get_nowait(self, priority: Priority | None = None) -> T:
        try:
            return self._queue.pop(priority)
        except IndexError:
            raise asyncio.QueueEmpty from None

    async def wait(self, priority: Priority | None = None) -> None:
        """Until an item (of `priority`, if given) is queued; takes nothing."""
        while not (len(self._queue) if priority is None else self._queue.count(priority)):
            await self._put.wait()

    async def get(self, priority: Priority | None = None) -> T:
        """The next item (of `priority`, if given), waiting for one. Cancel-safe: an item is
        only taken by a get that returns it."""
        await self.wait(priority)
        return self._queue.pop(priority)
