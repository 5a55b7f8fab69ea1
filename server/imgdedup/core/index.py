"""The index writer: search, store and cluster, for a batch of embedded images at a time.

Every write goes through one IndexWriter on one thread, so a check sees every image stored
before it: images of the same batch are compared with each other in numpy, in arrival order,
as well as with Milvus. Clusters are the connected groups of the duplicate relation at the
server's cluster threshold: a new image joins its matches' cluster, an image matching two
clusters merges them, and deleting an image re-splits its cluster if it was the only link.
"""

from __future__ import annotations

import os
import time
from dataclasses import dataclass, field

import numpy as np

from imgdedup.storage.milvus import ClusterRow, Hit, ImageRow, MilvusStore

# Extra neighbours fetched beyond top_k, so that joining clusters sees enough of them and a
# re-sent image's own row does not crowd out a real match.
SEARCH_SLACK = 8


def new_cluster_id() -> str:
    """'c' + 12 hex digits of milliseconds + 8 random hex: sortable by creation, hex-splittable."""
    return f"c{int(time.time() * 1000):012x}{os.urandom(4).hex()}"


@dataclass(slots=True)
class PendingImage:
    image_id: str
    vector: np.ndarray
    add_to_index: bool
    threshold: float
    top_k: int
    pixels: int
    sha256: str


@dataclass(slots=True)
class CheckResult:
    matches: list[Hit]
    stored: bool
    cluster_id: str = ""


@dataclass
class _ClusterBook:
    """Cluster rows touched by one write batch, flushed to Milvus at its end."""

    store: MilvusStore
    rows: dict[str, ClusterRow] = field(default_factory=dict)
    merged_into: dict[str, str] = field(default_factory=dict)
    dirty: set[str] = field(default_factory=set)

    def resolve(self, cluster_id: str) -> str:
        while cluster_id in self.merged_into:
            cluster_id = self.merged_into[cluster_id]
        return cluster_id

    def load(self, cluster_ids: set[str]) -> None:
        missing = {c for c in cluster_ids if c not in self.rows and c not in self.merged_into}
        self.rows.update(self.store.get_clusters(missing))

    def add_image(self, image: ImageRow, linked: set[str]) -> str:
        """Put a new image into a cluster: its own, the one it matches, or a merge of several."""
        linked = {self.resolve(c) for c in linked}
        self.load(linked)
        linked = {c for c in linked if c in self.rows}
        if not linked:
            cid = new_cluster_id()
            self.rows[cid] = ClusterRow(cid, 0, image.image_id, image.pixels, image.inserted_at_ms)
        else:
            # The largest cluster survives, so the fewest member rows are rewritten.
            cid = max(linked, key=lambda c: (self.rows[c].size, c))
            for other in linked - {cid}:
                self._merge(other, cid)
        row = self.rows[cid]
        row.size += 1
        if _better_representative(image.pixels, image.inserted_at_ms, row):
            row.representative_id, row.rep_pixels, row.rep_inserted_at_ms = image.image_id, image.pixels, image.inserted_at_ms
        self.dirty.add(cid)
        return cid

    def _merge(self, source: str, target: str) -> None:
        src, dst = self.rows.pop(source), self.rows[target]
        dst.size += src.size
        if _better_representative(src.rep_pixels, src.rep_inserted_at_ms, dst):
            dst.representative_id, dst.rep_pixels, dst.rep_inserted_at_ms = src.representative_id, src.rep_pixels, src.rep_inserted_at_ms
        self.merged_into[source] = target
        self.dirty.discard(source)
        self.dirty.add(target)

    def flush(self, new_images: list[ImageRow]) -> None:
        """Write new images, re-home members of merged clusters, then the cluster rows.

        Image rows are the truth and go first; cluster rows are derived from them, so a crash
        part-way leaves nothing that IndexWriter.rebuild_clusters cannot put right."""
        for img in new_images:
            img.cluster_id = self.resolve(img.cluster_id)
        self.store.insert_images(new_images)
        _fault_point("after-image-insert")
        merged = [c for c in self.merged_into if c not in self.rows]
        if merged:
            moved = self.store.images_in_clusters(merged, with_vectors=True)
            for img in moved:
                img.cluster_id = self.resolve(img.cluster_id)
            self.store.rewrite_images(moved)
        self.store.upsert_clusters([self.rows[c] for c in sorted(self.dirty)])
        self.store.delete_clusters(merged)


def _fault_point(name: str) -> None:
    """FAULT INJECTION FOR TESTS ONLY: DEDUP_TEST_CRASH_AT=<name> kills the process right here,
    to test recovery from a crash between two writes (a moment kill -9 cannot aim at)."""
    if os.environ.get("DEDUP_TEST_CRASH_AT") == name:
        os._exit(137)


def _better_representative(pixels: int, inserted_at_ms: int, current: ClusterRow) -> bool:
    """The copy a user would keep: most pixels, then the earliest stored."""
    return (pixels, -inserted_at_ms) > (current.rep_pixels, -current.rep_inserted_at_ms)


class IndexWriter:
    def __init__(self, store: MilvusStore, *, cluster_threshold: float):
        self.store = store
        self.cluster_threshold = cluster_threshold

    # -- check (and store) -------------------------------------------------------------------
    def commit(self, items: list[PendingImage]) -> list[CheckResult]:
        now_ms = int(time.time() * 1000)
        existing = self.store.get_images([i.image_id for i in items if i.add_to_index])
        # A re-sent id with different content replaces the old image: remove it first, so the
        # search below never sees the stale row and its cluster is repaired.
        replaced = [i.image_id for i in items if i.add_to_index and i.image_id in existing and existing[i.image_id].sha256 != i.sha256]
        if replaced:
            self.delete(replaced)
            for image_id in replaced:
                existing.pop(image_id)

        vectors = np.stack([i.vector for i in items])
        limit = max(i.top_k for i in items) + SEARCH_SLACK
        all_hits = self.store.search(vectors, limit)
        book = _ClusterBook(self.store)
        batch_rows: list[ImageRow] = []  # stored earlier in this batch, in order
        results: list[CheckResult] = []
        for item, hits in zip(items, all_hits):
            candidates = [Hit(h.image_id, h.similarity, book.resolve(h.cluster_id)) for h in hits if h.image_id != item.image_id]
            if batch_rows:
                sims = np.stack([r.vector for r in batch_rows]) @ item.vector
                candidates += [
                    Hit(r.image_id, float(s), book.resolve(r.cluster_id))
                    for r, s in zip(batch_rows, sims)
                    if r.image_id != item.image_id
                ]
            candidates.sort(key=lambda h: -h.similarity)
            matches = [h for h in candidates if h.similarity >= item.threshold][: item.top_k]
            if not item.add_to_index:
                results.append(CheckResult(matches, stored=False))
                continue
            previous = existing.get(item.image_id) or next((r for r in batch_rows if r.image_id == item.image_id), None)
            if previous is not None:  # the same id and content again: idempotent, nothing written
                results.append(CheckResult(matches, stored=True, cluster_id=book.resolve(previous.cluster_id)))
                continue
            linked = {h.cluster_id for h in candidates if h.similarity >= self.cluster_threshold}
            row = ImageRow(item.image_id, "", item.pixels, now_ms, item.sha256, item.vector)
            row.cluster_id = book.add_image(row, linked)
            batch_rows.append(row)
            results.append(CheckResult(matches, stored=True, cluster_id=row.cluster_id))
        if batch_rows or book.dirty:
            book.flush(batch_rows)
        for r in results:
            r.cluster_id = book.resolve(r.cluster_id) if r.cluster_id else ""
            r.matches = [Hit(h.image_id, h.similarity, book.resolve(h.cluster_id)) for h in r.matches]
        return results

    # -- repair ------------------------------------------------------------------------------
    def rebuild_clusters(self) -> tuple[int, int]:
        """Recompute every cluster row from the image rows (after an interrupted write).

        Returns (clusters written, stale cluster rows deleted)."""
        images = self.store.all_images()
        groups: dict[str, list[ImageRow]] = {}
        for img in images:
            groups.setdefault(img.cluster_id, []).append(img)
        rows = []
        for cid, members in groups.items():
            rep = max(members, key=lambda m: (m.pixels, -m.inserted_at_ms))
            rows.append(ClusterRow(cid, len(members), rep.image_id, rep.pixels, rep.inserted_at_ms))
        stale = [cid for cid, _ in self.store.cluster_sizes(1) if cid not in groups]
        self.store.upsert_clusters(rows)
        self.store.delete_clusters(stale)
        return len(rows), len(stale)

    # -- delete ------------------------------------------------------------------------------
    def delete(self, image_ids: list[str]) -> tuple[list[str], list[str]]:
        """Delete images; recompute the clusters they were in. Returns (deleted, not_found)."""
        found = self.store.get_images(image_ids)
        deleted = [i for i in dict.fromkeys(image_ids) if i in found]
        not_found = [i for i in dict.fromkeys(image_ids) if i not in found]
        if not deleted:
            return deleted, not_found
        self.store.delete_images(deleted)
        affected = sorted({found[i].cluster_id for i in deleted})
        members = self.store.images_in_clusters(affected, with_vectors=True)
        by_cluster: dict[str, list[ImageRow]] = {c: [] for c in affected}
        for m in members:
            by_cluster.setdefault(m.cluster_id, []).append(m)
        rewrite: list[ImageRow] = []
        cluster_rows: list[ClusterRow] = []
        emptied: list[str] = []
        for cid, rows in by_cluster.items():
            if not rows:
                emptied.append(cid)
                continue
            components = _components(rows, self.cluster_threshold)
            components.sort(key=len, reverse=True)
            for n, component in enumerate(components):
                new_cid = cid if n == 0 else new_cluster_id()
                for m in component:
                    if m.cluster_id != new_cid:
                        m.cluster_id = new_cid
                        rewrite.append(m)
                rep = max(component, key=lambda m: (m.pixels, -m.inserted_at_ms))
                cluster_rows.append(ClusterRow(new_cid, len(component), rep.image_id, rep.pixels, rep.inserted_at_ms))
        self.store.rewrite_images(rewrite)
        self.store.upsert_clusters(cluster_rows)
        self.store.delete_clusters(emptied)
        return deleted, not_found


def _components(rows: list[ImageRow], threshold: float) -> list[list[ImageRow]]:
    """Connected components of the graph 'cosine similarity >= threshold'."""
    vecs = np.stack([r.vector for r in rows])
    adjacent = (vecs @ vecs.T) >= threshold
    parent = list(range(len(rows)))

    def find(i: int) -> int:
        while parent[i] != i:
            parent[i] = parent[parent[i]]
            i = parent[i]
        return i

    for i, j in zip(*np.nonzero(np.triu(adjacent, 1))):
        parent[find(int(i))] = find(int(j))
    groups: dict[int, list[ImageRow]] = {}
    for i, row in enumerate(rows):
        groups.setdefault(find(i), []).append(row)
    return list(groups.values())
