"""Thread pools whose threads carry their names into the OS.

`top -H`, py-spy and /proc/<pid>/task/*/comm then show which stage burns the CPU (decode_0,
index-writer_0, embed_1, ...); benchmarks/throughput.py reads them to split CPU time by stage.
Threads a pool thread starts inherit its OS name, which is how onnxruntime's own threads get one.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import logging
import os
import threading
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Callable, Hashable

from imgdedup.core.priority import FairQueue, Priority

log = logging.getLogger(__name__)

_PR_SET_NAME = 15  # Linux prctl option; the kernel keeps 15 bytes of the name

try:
    _libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6", use_errno=True)
except OSError:  # not a glibc/musl system: names stay Python-only
    _libc = None


def name_os_thread() -> None:
    """Give the calling thread's OS thread its Python name; a no-op off Linux."""
    if _libc is None:
        return
    raw = threading.current_thread().name.encode("ascii", "replace")[:15]
    try:
        _libc.prctl(_PR_SET_NAME, ctypes.c_char_p(raw), 0, 0, 0)
    except (AttributeError, OSError):  # no prctl here
        pass


def lower_os_thread_priority(nice: int) -> None:
    """Add `nice` to the calling thread's niceness (on Linux niceness is per thread), so the
    kernel gives the cores to threads of normal priority first (at nice 10, a thread competing
    with one of them gets a tenth of the core). Raising niceness needs no privilege; lowering it
    again does, so only threads that stay low-priority call this."""
    if nice <= 0 or not hasattr(os, "setpriority"):
        return
    tid = threading.get_native_id()
    try:
        os.setpriority(os.PRIO_PROCESS, tid, min(19, os.getpriority(os.PRIO_PROCESS, tid) + nice))
    except OSError as exc:
        log.warning("could not lower the priority of thread %s: %s", threading.current_thread().name, exc)


def one_blas_thread() -> None:
    """Run numpy's matrix products (OpenBLAS) on the calling thread only, for the whole process.
    OpenBLAS spreads a product over every core and its threads then spin waiting for the next
    one: the index writer's one product per write (a few hundred vectors) cost 0.55 ms of a
    spinning thread's CPU per image. The server is parallel across requests already. (With
    pip's numpy, a pthreads OpenBLAS, the limit holds for every thread; an OpenMP build would
    limit only the calling thread.)"""
    from threadpoolctl import threadpool_limits

    threadpool_limits(limits=1, user_api="blas")


def thread_pool(workers: int, name: str) -> ThreadPoolExecutor:
    """A ThreadPoolExecutor whose threads are named name_0, name_1, ... in Python and the OS."""
    return ThreadPoolExecutor(workers, thread_name_prefix=name, initializer=name_os_thread)


class PriorityThreadPool:
    """Threads for each priority level (core/priority.py), each level's calls served by a
    FairQueue: round-robin between flows (streams), FIFO within one.

    Why threads per level: a call cannot be interrupted once it runs, so a high-priority call
    must find a thread that no bulk call holds (a FIFO pool would make an interactive decode
    wait behind every decode job the streams have queued); and a thread's OS priority cannot
    be raised again once lowered (without privileges), so low-priority calls run on threads of
    their own, niced by `low_nice`: the kernel gives the cores to everything else first.
    Threads: name_0.. for high, name-low_0.. for low, `workers` of each.

    submit() returns a concurrent Future (asyncio.wrap_future it); a call whose future was
    cancelled before it started is skipped. shutdown() lets queued calls finish first."""

    def __init__(self, workers: int, name: str, *, low_nice: int = 0) -> None:
        self._queue: FairQueue[tuple[Future, Callable, tuple]] = FairQueue()
        # One lock, a condition per level: a call wakes one thread that can take it, not
        # every thread of the pool (each needless wake-up is two context switches).
        self._lock = threading.Lock()
        self._ready = {level: threading.Condition(self._lock) for level in Priority}
        self._closing = False
        self._threads = [
            threading.Thread(target=self._serve, args=(level, nice), name=f"{prefix}_{n}", daemon=True)
            for level, prefix, nice in ((Priority.HIGH, name, 0), (Priority.LOW, f"{name}-{Priority.LOW.label}", low_nice))
            for n in range(workers)
        ]
        for thread in self._threads:
            thread.start()

    def submit(self, fn: Callable, *args, priority: Priority, flow: Hashable = None) -> Future:
        future: Future = Future()
        with self._lock:
            if self._closing:
                raise RuntimeError("submit after shutdown")
            self._queue.push((future, fn, args), priority, flow)
            self._ready[priority].notify()
        return future

    def _serve(self, level: Priority, nice: int) -> None:
        name_os_thread()
        lower_os_thread_priority(nice)
        while True:
            with self._lock:
                self._ready[level].wait_for(lambda: self._queue.count(level) or self._closing)
                if not self._queue.count(level):
                    return  # closing and drained
                future, fn, args = self._queue.pop(level)
            if future.set_running_or_notify_cancel():
                try:
                    result = fn(*args)
                except BaseException as exc:
                    future.set_exception(exc)
                else:
                    future.set_result(result)
            del future, fn, args  # keep no reference to the last call while idle

    def shutdown(self, wait: bool = True) -> None:
        with self._lock:
            self._closing = True
            for ready in self._ready.values():
                ready.notify_all()
        if wait:
            for thread in self._threads:
                thread.join()
