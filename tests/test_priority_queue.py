"""The priority primitives on their own (no server): FairQueue, AsyncFairQueue, the priority
thread pool, and the batcher's lanes with a stand-in embedder."""

from __future__ import annotations

import asyncio
import os
import threading
import time

import numpy as np
import pytest

from imgdedup.core.batcher import EmbedBatcher
from imgdedup.core.priority import AsyncFairQueue, FairQueue, Priority
from imgdedup.core.threads import PriorityThreadPool

HIGH, LOW = Priority.HIGH, Priority.LOW


def drain(q: FairQueue) -> list:
    return [q.pop() for _ in range(len(q))]


def test_higher_levels_first_fifo_within_a_flow_flows_take_turns():
    q: FairQueue = FairQueue()
    for i in range(3):
        q.push(f"a{i}", LOW, "stream-a")
    q.push("b0", LOW, "stream-b")
    q.push("u0", HIGH)
    q.push("b1", LOW, "stream-b")
    q.push("u1", HIGH)
    assert q.count(HIGH) == 2 and q.count(LOW) == 5 and q.next_level() == HIGH
    assert drain(q) == ["u0", "u1", "a0", "b0", "a1", "b1", "a2"]
    assert len(q) == 0 and q.next_level() is None
    with pytest.raises(IndexError):
        q.pop()


def test_a_flow_that_comes_back_waits_for_its_turn_and_pop_by_level():
    q: FairQueue = FairQueue()
    q.push("a0", LOW, "a")
    q.push("b0", LOW, "b")
    assert q.pop() == "a0"
    q.push("a1", LOW, "a")  # a's new item goes behind b
    q.push("h", HIGH)
    assert q.pop(LOW) == "b0"
    assert q.pop(LOW) == "a1"
    with pytest.raises(IndexError):
        q.pop(LOW)
    assert q.pop() == "h"


def test_async_queue_is_bounded_waits_by_level_and_is_cancel_safe():
    async def scenario():
        q: AsyncFairQueue = AsyncFairQueue(3)
        waiter = asyncio.create_task(q.get(HIGH))
        q.put_nowait("low", LOW)
        await asyncio.sleep(0)
        assert not waiter.done()  # a low item does not satisfy a wait for high ones
        q.put_nowait("high", HIGH)
        assert await waiter == "high"
        q.put_nowait("low2", LOW, "s")
        q.put_nowait("low3", LOW, "s")
        with pytest.raises(asyncio.QueueFull):
            q.put_nowait("one too many", LOW)
        with pytest.raises(TimeoutError):
            await asyncio.wait_for(q.get(HIGH), 0.01)
        assert q.qsize() == 3  # the timed-out get took nothing
        q.put_nowait("high2", HIGH)  # each level has its own bound: bulk cannot shed interactive work
        assert [await q.get() for _ in range(4)] == ["high2", "low", "low2", "low3"]
        with pytest.raises(asyncio.QueueEmpty):
            q.get_nowait()

    asyncio.run(scenario())


def _whoami(tag: str) -> tuple[str, str, int]:
    nice = os.getpriority(os.PRIO_PROCESS, threading.get_native_id()) if hasattr(os, "getpriority") else 0
    return tag, threading.current_thread().name, nice


def test_priority_pool_serves_high_at_once_beside_busy_bulk_threads_and_streams_in_turns():
    pool = PriorityThreadPool(1, "decode", low_nice=3)
    try:
        gate, ran = threading.Event(), []
        busy = pool.submit(gate.wait, priority=LOW)  # the one bulk thread is taken
        bulk = [pool.submit(lambda t=f"{s}{i}": ran.append(_whoami(t)), priority=LOW, flow=s) for s in "ab" for i in range(2)]
        skipped = pool.submit(ran.append, "cancelled", priority=LOW)
        assert skipped.cancel()
        high = pool.submit(_whoami, "high", priority=HIGH).result(10)  # not behind the bulk backlog
        with pytest.raises(ZeroDivisionError):
            pool.submit(lambda: 1 / 0, priority=HIGH).result(10)
        assert not ran
        gate.set()
        for f in [busy, *bulk]:
            f.result(10)
        assert [t for t, _, _ in ran] == ["a0", "b0", "a1", "b1"]  # streams take turns
        assert high[1] == "decode_0" and {name for _, name, _ in ran} == {"decode-low_0"}
        if hasattr(os, "getpriority"):
            assert all(nice > high[2] for _, _, nice in ran)
    finally:
        pool.shutdown()
    with pytest.raises(RuntimeError):
        pool.submit(print, priority=HIGH)


class _SlowEmbedder:
    """Stands in for the model: each inference takes `seconds`; records what ran where."""

    def __init__(self, seconds: float):
        self.seconds = seconds
        self.runs: list[tuple[str, int, int, bool]] = []  # (thread, batch size, niceness, alone)
        self.lock = threading.Lock()

    def embed(self, images: np.ndarray, *, alone: bool = False) -> np.ndarray:
        nice = os.getpriority(os.PRIO_PROCESS, threading.get_native_id()) if hasattr(os, "getpriority") else 0
        with self.lock:
            self.runs.append((threading.current_thread().name, len(images), nice, alone))
        time.sleep(self.seconds)
        return np.ones((len(images), 4), np.float32)


def test_an_interactive_image_runs_at_once_beside_a_bulk_backlog_on_its_own():
    embedder = _SlowEmbedder(0.05)

    async def scenario():
        batcher = EmbedBatcher(embedder, max_batch_size=4, max_queue_delay_s=0.001, max_queue_size=100, workers=2, low_priority_nice=5)
        batcher.start()
        try:
            tensor = np.zeros((2, 2, 3), np.uint8)
            bulk = [asyncio.create_task(batcher.embed(tensor, LOW, "stream")) for _ in range(40)]
            await asyncio.sleep(0.02)  # both workers now run bulk batches
            await batcher.embed(tensor, HIGH)
            done_meanwhile = sum(t.done() for t in bulk)
            await asyncio.gather(*bulk)
            return done_meanwhile
        finally:
            await batcher.stop()

    done_meanwhile = asyncio.run(scenario())
    high = [r for r in embedder.runs if not r[0].startswith("embed-low")]
    low = [r for r in embedder.runs if r[0].startswith("embed-low")]
    assert len(high) == 1 and high[0][1] == 1  # a batch of its own, no bulk company
    assert sum(r[1] for r in low) == 40 and max(r[1] for r in low) == 4
    # It did not wait for the ten bulk batches queued ahead of it: at most the two that ran.
    assert done_meanwhile <= 8
    if hasattr(os, "getpriority"):
        assert min(r[2] for r in low) > high[0][2]  # bulk inferences run on niced threads
    assert high[0][3]  # nothing else interactive: it may take every core
