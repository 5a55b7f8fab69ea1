"""ViewMirror: the index writer's in-memory copy of a namespace's extra views (core/views.py).

Few images have an extra view (0.7 % of the dev set's photos; screenshots and padded copies),
yet every write searched the views collection beside the images collection: one more Milvus
call per write batch, the slower of the two on Milvus Lite. With the near-free stand-in model
(benchmarks/pipeline.py, 2-core Intel Xeon VM, 2026-12-04) this copy took unary CheckDuplicate
at concurrency 1 from p50 7.2 to 6.0-6.2 ms and one BulkCheck stream from 276-281 to 294-308
img/s (alternating the two builds later on a slower VM: 7.8-8.1 -> 6.9-7.6 ms, 247-255 -> 264-268
img/s; the README's "Storage" has the figures). So the writer keeps the views of a namespace
in memory and searches them exactly (one matrix product; Milvus's IVF or HNSW index may miss a
view, this does not), and asks Milvus only for namespaces with more than MAX_VIEWS views, or
when all copies together would pass MAX_TOTAL_VIEWS (the least recently searched copies are
dropped, to be read again when needed).

The writer is the only process that writes views (docs/scale-out.md), and every write of views
goes through this object on its thread, so a copy stays equal to the collection:
- a namespace is read whole (Strong) the first time the writer searches it, so views written
  by an earlier writer (a previous term, a previous process) are in it;
- a write updates the copy after Milvus took it; a write that fails may have landed in part,
  so the namespace is dropped and read again when next searched; so is every namespace after
  the writer reconnects to Milvus (forget_all);
- a namespace that grows past MAX_VIEWS is dropped and searched in Milvus from then on.
The limit is the one the hash sets share (docs/scale-out.md, elections): a write of the previous
writer that was already in flight when this one took over, landing after this copy was read.
"""

from __future__ import annotations

from collections import OrderedDict
from contextlib import contextmanager
from typing import Container, Iterable, Iterator

import numpy as np

from imgdedup.storage.milvus import ImageViews, MilvusStore, is_inset_key, view_key

# Views of one namespace searched in memory: 8,192 x 512 floats, 16 MiB; a write batch of 32
# images searches them in ~1-2 ms on one core.
MAX_VIEWS = 8192
# Views of all copies together (~4 KiB each at 512-d while a namespace is written: the vectors
# and, between writes, their matrix).
MAX_TOTAL_VIEWS = 32768


class _Copy:
    """One namespace's views, {image_id: {view_key: vector}}, and, made when searched, one
    matrix of them with their norms (cosine, as Milvus's COSINE metric), their images and
    whether each is an inset view."""

    def __init__(self, views: dict[str, dict[str, np.ndarray]], dim: int, namespace: str):
        self.views = views
        self.dim = dim
        # Keys of the inset views, told once from the keys read (is_inset_key hashes), then
        # kept by the writes: a search's matrix, remade after each write, only looks them up.
        self.inset_keys = {k for image_id, keyed in views.items() for k in keyed if is_inset_key(k, image_id, namespace)}
        self._search: tuple[np.ndarray, np.ndarray, list[str], list[bool]] | None = None

    def __len__(self) -> int:
        return sum(len(v) for v in self.views.values())

    def matrix(self) -> tuple[np.ndarray, np.ndarray, list[str], list[bool]]:
        if self._search is None:
            keys = [(image_id, k) for image_id, keyed in self.views.items() for k in keyed]
            m = np.empty((len(keys), self.dim), np.float32)
            for n, (image_id, k) in enumerate(keys):
                m[n] = self.views[image_id][k]
                self.views[image_id][k] = m[n]  # the dict's vectors share the matrix's memory
            norms = np.linalg.norm(m, axis=1)
            insets = [k in self.inset_keys for _, k in keys]
            self._search = (m, np.where(norms > 0, norms, 1.0), [image_id for image_id, _ in keys], insets)
        return self._search

    def is_inset(self, image_id: str) -> bool:
        return any(k in self.inset_keys for k in self.views.get(image_id, ()))

    def changed(self) -> None:
        self._search = None


class ViewMirror:
    """The views API of MilvusStore (search_views, views_of, insert_views, delete_views) for
    the index writer's thread, answered from memory where a namespace is small enough."""

    def __init__(self, store: MilvusStore, max_views: int = MAX_VIEWS, max_total: int = MAX_TOTAL_VIEWS):
        self.store = store
        self.max_views = max_views
        self.max_total = max_total
        self._copies: OrderedDict[str, _Copy] = OrderedDict()  # least recently searched first
        self._too_large: set[str] = set()

    def _copy(self, namespace: str) -> _Copy | None:
        """The namespace's copy, read from Milvus the first time; None where Milvus is asked."""
        copy = self._copies.get(namespace)
        if copy is not None:
            self._copies.move_to_end(namespace)
            return copy
        if namespace in self._too_large:
            return None
        if not self.store.holds(namespace):
            return _Copy({}, self.store.dim, namespace)  # nothing stored: nothing to read or keep
        views = self.store.all_views(namespace, at_most=self.max_views)
        if views is None:
            self._too_large.add(namespace)
            return None
        copy = self._copies[namespace] = _Copy(views, self.store.dim, namespace)
        self._fit()
        return copy

    def _fit(self) -> None:
        """Drop the least recently searched copies while all of them hold too many views."""
        while len(self._copies) > 1 and sum(len(c) for c in self._copies.values()) > self.max_total:
            self._copies.popitem(last=False)

    def in_memory(self, namespace: str) -> bool:
        """Whether this namespace's views are searched in memory (read now if never read)."""
        return self._copy(namespace) is not None

    def search_views(self, namespace: str, vectors: np.ndarray, limit: int) -> list[list[tuple[str, float, bool]]]:
        """(image_id, similarity, whether it is an inset view) of the nearest extra views, per
        query vector, most similar first."""
        copy = self._copy(namespace)
        if copy is None:
            return self.store.search_views(namespace, vectors, limit)
        matrix, norms, owners, insets = copy.matrix()
        if not owners:
            return [[] for _ in vectors]
        q = np.asarray(vectors, dtype=np.float32)
        q = q / np.maximum(np.linalg.norm(q, axis=1, keepdims=True), 1e-12)
        sims = (q @ matrix.T) / norms
        k = min(limit, len(owners))
        out = []
        for row in sims:
            cols = np.argpartition(-row, k - 1)[:k] if k < len(owners) else np.arange(len(owners))
            cols = cols[np.argsort(-row[cols], kind="stable")]
            out.append([(owners[c], float(row[c]), insets[c]) for c in cols])
        return out

    def views_of(self, namespace: str, image_ids: Iterable[str]) -> dict[str, ImageViews]:
        """The stored extra views of these images, with their kind (images without any are left
        out)."""
        copy = self._copy(namespace)
        if copy is None:
            return self.store.views_of(namespace, image_ids)
        # In view-key order, as MilvusStore.views_of gives them.
        return {
            i: ImageViews((v.copy() for _, v in sorted(copy.views[i].items())), inset=copy.is_inset(i))
            for i in dict.fromkeys(image_ids) if copy.views.get(i)
        }

    def having_views(self, namespace: str, image_ids: Iterable[str]) -> set[str]:
        """Those of these images that have an extra view."""
        copy = self._copy(namespace)
        if copy is None:
            return set(self.store.views_of(namespace, image_ids))
        return {i for i in image_ids if copy.views.get(i)}

    def insert_views(self, namespace: str, views: dict[str, list[np.ndarray]], insets: Container[str] = ()) -> None:
        views = {image_id: vectors for image_id, vectors in views.items() if vectors}
        if not views:
            return
        with self._forgetting_on_failure(namespace):
            self.store.insert_views(namespace, views, insets)
        copy = self._copies.get(namespace)
        if copy is not None:
            for image_id, vectors in views.items():  # an upsert by view key, as in Milvus
                keyed = copy.views.setdefault(image_id, {})
                for n, v in enumerate(vectors, 1):
                    key = view_key(image_id, n, namespace, inset=image_id in insets)
                    keyed[key] = np.array(v, dtype=np.float32)
                    if image_id in insets:
                        copy.inset_keys.add(key)
            copy.changed()
            if len(copy) > self.max_views:
                self.forget(namespace)
                self._too_large.add(namespace)
            else:
                self._fit()

    def delete_views(self, namespace: str, image_ids: list[str]) -> None:
        with self._forgetting_on_failure(namespace):
            self.store.delete_views(namespace, image_ids)
        copy = self._copies.get(namespace)
        if copy is not None:
            gone = [keyed for i in image_ids if (keyed := copy.views.pop(i, None)) is not None]
            if gone:
                copy.inset_keys.difference_update(k for keyed in gone for k in keyed)
                copy.changed()

    def forget(self, namespace: str) -> None:
        """Drop the copy: the next search reads the namespace again (e.g. after it was
        deleted, or after a write that may have landed in part)."""
        self._copies.pop(namespace, None)
        self._too_large.discard(namespace)

    def forget_all(self) -> None:
        """Drop every copy (after a reconnect: Milvus may not hold what they hold)."""
        self._copies.clear()
        self._too_large.clear()

    @contextmanager
    def _forgetting_on_failure(self, namespace: str) -> Iterator[None]:
        try:
            yield
        except BaseException:
            self.forget(namespace)
            raise
