"""ViewMirror: the index writer's in-memory copy of a namespace's extra views (core/views.py).

Few images have an extra view (0.7 % of the dev set's photos; screenshots and padded copies),
yet every write searched the views collection beside the images collection: one more Milvus
call per write batch, the slower of the two on Milvus Lite. Measured with the near-free stand-in
model (benchmarks/pipeline.py, 2-core Intel Xeon VM, 2026-12-04), skipping that search took
unary CheckDuplicate at concurrency 1 from p50 7.2 to 5.0 ms and one BulkCheck stream from
~278 to ~305 img/s. So the writer keeps the views of a namespace in memory, searches them
exactly with one matrix product, and asks Milvus only for namespaces with more views than
MAX_VIEWS (there the product would cost more than the call).

The writer is the only process that writes views (docs/scale-out.md), and every write of views
goes through this object on its thread, so the copy stays equal to the collection:
- a namespace is read whole (Strong) the first time the writer searches it, so views written
  by an earlier writer (a previous term, a previous process) are in it;
- a write updates the copy after Milvus took it; a write that fails may have landed in part,
  so the namespace is forgotten and read again when next searched;
- a namespace that grows past MAX_VIEWS is forgotten and searched in Milvus from then on.
"""

from __future__ import annotations

from contextlib import contextmanager
from typing import Iterable, Iterator

import numpy as np

from imgdedup.storage.milvus import MilvusStore, view_key

# Views a namespace may have and still be searched in memory: 8,192 x 512 floats is 16 MiB, and
# a write batch of 32 images searches them in ~1-2 ms on one core.
MAX_VIEWS = 8192


class _Copy:
    """One namespace's views, {image_id: {view_key: vector}}, and, made when searched, one
    matrix of them (L2-normalised, as COSINE search sees them)."""

    def __init__(self, views: dict[str, dict[str, np.ndarray]], dim: int):
        self.views = views
        self.dim = dim
        self._matrix: np.ndarray | None = None
        self._owners: list[str] = []

    def __len__(self) -> int:
        return sum(len(v) for v in self.views.values())

    def matrix(self) -> tuple[np.ndarray, list[str]]:
        if self._matrix is None:
            rows = [(image_id, v) for image_id, keyed in self.views.items() for v in keyed.values()]
            m = np.asarray([v for _, v in rows], dtype=np.float32).reshape(len(rows), self.dim)
            norms = np.linalg.norm(m, axis=1, keepdims=True)
            self._matrix = m / np.where(norms > 0, norms, 1.0)
            self._owners = [image_id for image_id, _ in rows]
        return self._matrix, self._owners

    def changed(self) -> None:
        self._matrix = None


class ViewMirror:
    """The views API of MilvusStore (search_views, views_of, insert_views, delete_views) for
    the index writer's thread, answered from memory where a namespace is small enough."""

    def __init__(self, store: MilvusStore, max_views: int = MAX_VIEWS):
        self.store = store
        self.max_views = max_views
        self._copies: dict[str, _Copy] = {}
        self._too_large: set[str] = set()

    def _copy(self, namespace: str) -> _Copy | None:
        """The namespace's copy, read from Milvus the first time; None where it is too large."""
        if namespace in self._too_large:
            return None
        copy = self._copies.get(namespace)
        if copy is None:
            if self.store.count_views(namespace) > self.max_views:
                self._too_large.add(namespace)
                return None
            copy = self._copies[namespace] = _Copy(self.store.all_views(namespace), self.store.dim)
        return copy

    def in_memory(self, namespace: str) -> bool:
        """Whether this namespace's views are searched in memory (read now if never read)."""
        return self._copy(namespace) is not None

    def search_views(self, namespace: str, vectors: np.ndarray, limit: int) -> list[list[tuple[str, float]]]:
        """(image_id, similarity) of the nearest extra views, per query vector, most similar
        first: exact, where Milvus's index may be approximate."""
        copy = self._copy(namespace)
        if copy is None:
            return self.store.search_views(namespace, vectors, limit)
        matrix, owners = copy.matrix()
        if not owners:
            return [[] for _ in vectors]
        q = np.asarray(vectors, dtype=np.float32)
        q = q / np.maximum(np.linalg.norm(q, axis=1, keepdims=True), 1e-12)
        sims = q @ matrix.T
        k = min(limit, len(owners))
        top = np.argpartition(-sims, k - 1, axis=1)[:, :k] if k < len(owners) else np.tile(np.arange(len(owners)), (len(q), 1))
        out = []
        for row, cols in zip(sims, top):
            cols = cols[np.argsort(-row[cols], kind="stable")]
            out.append([(owners[c], float(row[c])) for c in cols])
        return out

    def views_of(self, namespace: str, image_ids: Iterable[str]) -> dict[str, list[np.ndarray]]:
        """The stored extra views of these images (images without any are left out)."""
        copy = self._copy(namespace)
        if copy is None:
            return self.store.views_of(namespace, image_ids)
        # In view-key order, as MilvusStore.views_of gives them.
        return {i: [v for _, v in sorted(copy.views[i].items())] for i in dict.fromkeys(image_ids) if i in copy.views}

    def insert_views(self, namespace: str, views: dict[str, list[np.ndarray]]) -> None:
        if not views:
            return
        with self._forgetting_on_failure(namespace):
            self.store.insert_views(namespace, views)
        copy = self._copies.get(namespace)
        if copy is not None:
            for image_id, vectors in views.items():  # an upsert by view key, as in Milvus
                keyed = copy.views.setdefault(image_id, {})
                for n, v in enumerate(vectors, 1):
                    keyed[view_key(image_id, n, namespace)] = np.asarray(v, dtype=np.float32)
            copy.changed()
            if len(copy) > self.max_views:
                self.forget(namespace)
                self._too_large.add(namespace)

    def delete_views(self, namespace: str, image_ids: list[str]) -> None:
        with self._forgetting_on_failure(namespace):
            self.store.delete_views(namespace, image_ids)
        copy = self._copies.get(namespace)
        if copy is not None and [i for i in image_ids if copy.views.pop(i, None) is not None]:
            copy.changed()

    def forget(self, namespace: str) -> None:
        """Drop the copy: the next search reads the namespace again (e.g. after it was
        deleted, or after a write that may have landed in part)."""
        self._copies.pop(namespace, None)
        self._too_large.discard(namespace)

    @contextmanager
    def _forgetting_on_failure(self, namespace: str) -> Iterator[None]:
        try:
            yield
        except BaseException:
            self.forget(namespace)
            raise
