"""What the engine needs of an index: the interface between the front half of a check
(decode, embed: core/engine.py) and the half that searches and writes.

Two implementations:
- core/local_index.py, LocalIndex: this process opens Milvus and is the collection's one writer;
- transport/remote_index.py, RemoteIndex: the writer is another process (`dedup serve
  --workers N`'s parent, or a replica started with writer_listen), reached over gRPC.
Both give the same answers; docs/scale-out.md says why there is one writer per collection.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from typing import Hashable, Protocol

import numpy as np

from imgdedup.core.index import CheckResult, PendingImage
from imgdedup.core.priority import Priority


@dataclass(slots=True)
class ClusterView:
    cluster_id: str
    size: int
    representative_id: str
    members: list[tuple[str, float]]  # (image_id, similarity to the representative)


class IndexBackend(Protocol):
    backend: str  # what stores the vectors, for GetInfo ("milvus-lite", "milvus-server", ...)

    def might_hold(self, sha256: str) -> bool | None:
        """Could an image with exactly these bytes be stored? False: certainly not; True: quite
        likely (skip decoding until find_exact says no); None: cannot tell cheaply."""

    async def find_exact(self, sha256: str) -> tuple[np.ndarray, list[np.ndarray]] | None:
        """The embedding and extra views of a stored image with exactly these bytes, if any."""

    def enqueue(self, item: PendingImage, priority: Priority, flow: Hashable) -> asyncio.Future[CheckResult]:
        """Queue a check (and store); returns at once. The items of one flow are written in the
        order they were enqueued. Raises Overloaded when the queue is full."""

    async def delete(self, image_ids: list[str]) -> tuple[list[str], list[str]]: ...

    async def list_clusters(self, page_size: int, page_token: str, min_size: int) -> tuple[list[ClusterView], str, int]: ...

    async def get_cluster(self, cluster_id: str) -> ClusterView: ...

    async def counts(self) -> tuple[int, int]:
        """(stored images, clusters of two or more)."""

    async def healthy(self) -> bool:
        """Whether writes can go through now (tries to recover when not)."""

    async def close(self) -> None: ...
