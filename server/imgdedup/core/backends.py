"""What the engine needs of an index: the interface between the front half of a check
(decode, embed: core/engine.py) and the half that searches and writes.

Two implementations:
- core/local_index.py, LocalIndex: this process opens Milvus and is the collection's one writer;
- transport/remote_index.py, RemoteIndex: the writer is another process (`dedup serve
  --workers N`'s parent, or a replica started with writer_listen), reached over gRPC;
and transport/election.py, ElectedIndex, which is one or the other as the writer lease says.
Both give the same answers; docs/scale-out.md says why there is one writer per collection.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from typing import AsyncIterator, Hashable, Protocol

import numpy as np

from imgdedup.core.index import CheckResult, PendingImage
from imgdedup.core.priority import Priority
from imgdedup.core.rate_shares import Allotment


@dataclass(slots=True)
class ClusterView:
    cluster_id: str
    size: int
    representative_id: str
    members: list[tuple[str, float]]  # (image_id, similarity to the representative)


class IndexBackend(Protocol):
    backend: str  # what stores the vectors, for GetInfo ("milvus-lite", "milvus-server", ...)

    def might_hold(self, namespace: str, sha256: str) -> bool | None:
        """Could an image with exactly these bytes be stored in the namespace? False: certainly
        not; True: quite likely (skip decoding until find_exact says no); None: cannot tell
        cheaply."""

    async def find_exact(self, namespace: str, sha256: str) -> tuple[np.ndarray, list[np.ndarray], bool] | None:
        """The embedding and extra views of an image of the namespace with exactly these bytes,
        and whether those views are inset views."""

    def watch_digests(self) -> AsyncIterator[np.ndarray] | None:
        """For a copy of the hash set behind might_hold (core/digests.py: DigestSet.watch): every
        64-bit key held, then the keys added as they are; None when this index keeps no set of
        its own (a RemoteIndex, or digest_cache off)."""

    def enqueue(self, item: PendingImage, priority: Priority, flow: Hashable) -> asyncio.Future[CheckResult]:
        """Queue a check (and store) in item.namespace; returns at once. The items of one flow
        are written in the order they were enqueued. Raises Overloaded when the queue is full."""

    async def delete(self, namespace: str, image_ids: list[str]) -> tuple[list[str], list[str]]: ...

    async def list_clusters(self, namespace: str, page_size: int, page_token: str, min_size: int) -> tuple[list[ClusterView], str, int]: ...

    async def get_cluster(self, namespace: str, cluster_id: str) -> ClusterView: ...

    async def counts(self, namespace: str) -> tuple[int, int]:
        """(stored images, clusters of two or more) of a namespace."""

    async def namespaces(self) -> list[tuple[str, int, int]]:
        """(name, stored images, clusters of two or more) of every namespace that may hold images."""

    async def delete_namespace(self, namespace: str) -> int:
        """Delete every image and cluster of a namespace; returns how many images it held."""

    async def share_rates(self, process: str, demand: dict[str, float]) -> dict[str, Allotment] | None:
        """This process's part of each namespace's images-per-second quota, from the writer,
        which hears every process that checks through it (core/rate_shares.py); `demand`: checks
        per second since the last call, by namespace. None: no answer (keep the last parts)."""

    async def healthy(self) -> bool:
        """Whether writes can go through now (tries to recover when not)."""

    async def close(self) -> None: ...
