"""Stored images per namespace, as the index writer knows them (its own thread only).

Read from Milvus on first need, then kept up to date by the writer's own stores and deletes;
forgotten (read again on next need) after a write that failed part-way. The stored-images
quota (core/quotas.py) and the operating point (core/operating_point.py) read it.
"""

from __future__ import annotations

from typing import Callable


class StoredCounts:
    def __init__(self, count: Callable[[str], int]):
        self._count = count  # the namespace's stored images, as Milvus has them
        self._counts: dict[str, int] = {}

    def __getitem__(self, namespace: str) -> int:
        if namespace not in self._counts:
            self._counts[namespace] = self._count(namespace)
        return self._counts[namespace]

    def changed(self, namespace: str, delta: int) -> None:
        if namespace in self._counts:
            self._counts[namespace] += delta

    def forget(self, namespace: str) -> None:
        self._counts.pop(namespace, None)
