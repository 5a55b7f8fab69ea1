"""The writes a Milvus server acknowledged but has not persisted yet, kept to be made again.

A Milvus server acknowledges a write once it is in its message log (rocksmq on a standalone
2.3), and replays that log after a crash. It does not always: in one CI run (2026-12-05, the
PyPI `milvus` 2.3.5 standalone, kill -9 in the middle of a stream, tests/test_milvus_server.py)
ten image rows acknowledged seconds before the kill were gone after the restart, while later
ones were there; Milvus's tracker has reports of the same kind ("data loss after restarting
querynode and datanode" without a flush). What a completed flush covers is in Milvus's segment
files and its metadata, not in that log.

So the store keeps, in order, every write (insert, upsert, delete) it made since the last flush
it saw complete, and after it reconnects makes them all again (an insert as an upsert), on the
writer thread before any new write. Replayed in order on top of whatever Milvus kept, they leave
every row they touch as this process last wrote it, and rows they do not touch were persisted
by that flush. A flush runs every `flush_interval_s` (sooner past FLUSH_AFTER_ROWS rows); it
lets nothing go if there was trouble (a failed attempt of any Milvus call, a reconnect) since the
connection was last whole (docs/scale-out.md).

What this does not cover: a crash of the writer process itself together with Milvus (the log is
in memory), and a writer that took over from another (it has only its own writes). Milvus Lite
runs the same code; it has not been seen to lose a write (tests kill it with -9).
"""

from __future__ import annotations

import logging
import threading
from dataclasses import dataclass
from typing import Any

log = logging.getLogger(__name__)

# Ask for a flush once this many rows wait, whatever the interval says.
FLUSH_AFTER_ROWS = 20_000
# Past this many rows (flushes failing for a long while) the oldest writes are let go.
MAX_ROWS = 200_000


@dataclass(frozen=True)
class Write:
    seq: int
    method: str  # "upsert" or "delete"
    collection: str
    kwargs: dict[str, Any]  # upsert: data; delete: filter
    rows: int


class RedoLog:
    """Writes in the order they were acknowledged; thread-safe (the writer thread records, a
    flush on another thread forgets)."""

    def __init__(self, max_rows: int = MAX_ROWS) -> None:
        self._lock = threading.Lock()
        self._writes: list[Write] = []
        self._seq = 0
        self._rows = 0
        self._max_rows = max_rows
        self.dropped = 0  # writes let go unflushed (see MAX_ROWS)
        # Bumped whenever Milvus may have lost writes (a call failed, a reconnect began): a flush
        # that saw such a moment does not let go of anything (forget_until).
        self._epoch = 0

    def record(self, method: str, collection: str, what: list[dict[str, Any]] | str) -> None:
        """A write Milvus acknowledged: `insert` or `upsert` of rows, or `delete` by a filter."""
        delete = method == "delete"
        kwargs, rows = ({"filter": what}, 1) if delete else ({"data": what}, len(what))
        with self._lock:
            self._seq += 1
            self._writes.append(Write(self._seq, "delete" if delete else "upsert", collection, kwargs, rows))
            self._rows += rows
            while self._rows > self._max_rows and len(self._writes) > 1:
                old = self._writes.pop(0)
                self._rows -= old.rows
                self.dropped += 1
                if self.dropped == 1:
                    log.warning("more than %d rows written since Milvus last completed a flush: the oldest are no longer kept to be written again", self._max_rows)

    def trouble(self) -> None:
        """Milvus failed a call or is being reconnected to: it may have lost what it acknowledged."""
        with self._lock:
            self._epoch += 1

    @property
    def epoch(self) -> int:
        return self._epoch

    def mark(self) -> tuple[int, int]:
        """The last write recorded: a flush that starts now covers it and every one before."""
        with self._lock:
            return self._seq, self._epoch

    def forget_until(self, mark: tuple[int, int]) -> int:
        """Let go of the writes up to a mark (a flush that started then completed). Returns how
        many: none when there was trouble since the mark, for the flush may have run on a Milvus
        that had already lost some of them (a restart between two calls of the flush)."""
        seq, epoch = mark
        with self._lock:
            if epoch != self._epoch:
                return 0
            keep = [w for w in self._writes if w.seq > seq]
            gone = len(self._writes) - len(keep)
            self._writes = keep
            self._rows = sum(w.rows for w in keep)
            return gone

    def writes(self) -> list[Write]:
        with self._lock:
            return list(self._writes)

    @property
    def rows(self) -> int:
        return self._rows
