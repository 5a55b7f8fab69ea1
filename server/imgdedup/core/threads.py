"""Thread pools whose threads carry their names into the OS.

`top -H`, py-spy and /proc/<pid>/task/*/comm then show which stage burns the CPU (decode_0,
index-writer_0, embed_1, ...); benchmarks/throughput.py reads them to split CPU time by stage.
Threads a pool thread starts inherit its OS name, which is how onnxruntime's own threads get one.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import threading
from concurrent.futures import ThreadPoolExecutor

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


def thread_pool(workers: int, name: str) -> ThreadPoolExecutor:
    """A ThreadPoolExecutor whose threads are named name_0, name_1, ... in Python and the OS."""
    return ThreadPoolExecutor(workers, thread_name_prefix=name, initializer=name_os_thread)
