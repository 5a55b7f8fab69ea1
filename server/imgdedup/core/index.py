"""The index writer: search, store and cluster, for a batch of embedded images at a time.

Every write goes through one IndexWriter on one thread, so a check sees every image stored
before it: images of the same batch are compared with each other in numpy, in arrival order,
as well as with Milvus. A batch may mix namespaces: each namespace's items are checked and
written on their own (in their order), against their own namespace only, so no match and no
cluster spans two namespaces. Which clusters a new image joins is the cluster-link rule's
choice (core/linking.py): its match's cluster, or a merge of the clusters it matches and
resembles; deleting an image regroups its cluster's remaining members by the same rule.
"""

from __future__ import annotations

import logging
import os
import time
from dataclasses import dataclass, field, replace
from typing import Callable, Container, Mapping, Sequence

import numpy as np

from imgdedup import metrics

from imgdedup.config import NamespaceQuota
from imgdedup.core.counts import StoredCounts
from imgdedup.core.digests import StoredImages
from imgdedup.core.errors import DedupError
from imgdedup.core.linking import LinkRule
from imgdedup.core.match_modes import ClusterModes, MatchMode, MatchModes
from imgdedup.core.quotas import StoredLimits
from imgdedup.core.threads import thread_pool
from imgdedup.core.view_mirror import ViewMirror
from imgdedup.storage.milvus import DEFAULT_NAMESPACE, ClusterRow, Hit, ImageRow, MilvusStore, digest_key, image_key

log = logging.getLogger(__name__)

# Extra neighbours fetched beyond top_k, so that joining clusters sees enough of them and a
# re-sent image's own row does not crowd out a real match.
SEARCH_SLACK = 8


def new_cluster_id() -> str:
    """'c' + 12 hex digits of milliseconds + 8 random hex: sortable by creation, hex-splittable,
    and unique across namespaces (cluster rows are deleted by id alone)."""
    return f"c{int(time.time() * 1000):012x}{os.urandom(4).hex()}"


@dataclass(slots=True)
class PendingImage:
    image_id: str
    vector: np.ndarray
    add_to_index: bool
    threshold: float | None  # None: the namespace's operating point (core/operating_point.py)
    top_k: int
    pixels: int
    sha256: str
    views: list[np.ndarray] = field(default_factory=list)  # extra views (core/views.py)
    inset: bool = False  # its extra views are inset views (core/insets.py), not content views
    namespace: str = DEFAULT_NAMESPACE
    mode: MatchMode = MatchMode.DUPLICATES  # with threshold, decides the threshold (core/match_modes.py)
    # More images of its stream are on their way to the index behind it (a write of bulk
    # images may wait a little for them: LocalIndex, bulk_write_delay_ms).
    more_coming: bool = False
    # Whether the front looked these bytes up (find_exact). False when a copy of the digest set
    # ruled them out, a copy that may lag (a front's): the writer looks again (CheckResult.exact).
    exact_checked: bool = True

    @property
    def all_vectors(self) -> list[np.ndarray]:
        return [self.vector, *self.views]


@dataclass(slots=True)
class CheckResult:
    matches: list[Hit]
    stored: bool
    cluster_id: str = ""
    threshold: float = 0.0  # the threshold the matches were found at
    error: DedupError | None = None  # this item was refused (a namespace's stored-images quota)
    exact: bool = False  # not exact_checked, and the writer holds these very bytes


@dataclass
class _ClusterBook:
    """Cluster rows touched by one write batch, flushed to Milvus at its end."""

    store: MilvusStore
    views: ViewMirror  # the writer's: views are written through it
    namespace: str
    rows: dict[str, ClusterRow] = field(default_factory=dict)
    merged_into: dict[str, str] = field(default_factory=dict)
    dirty: set[str] = field(default_factory=set)
    moved: dict[str, str] = field(default_factory=dict)  # stored image -> the cluster it follows into

    def resolve(self, cluster_id: str) -> str:
        while cluster_id in self.merged_into:
            cluster_id = self.merged_into[cluster_id]
        return cluster_id

    def cluster_of(self, image_id: str, cluster_id: str) -> str:
        """The cluster a stored image is in now: `cluster_id`, as merged, or the one it followed."""
        return self.resolve(self.moved.get(image_id, cluster_id))

    def load(self, cluster_ids: set[str]) -> None:
        missing = {c for c in cluster_ids if c not in self.rows and c not in self.merged_into}
        self.rows.update(self.store.get_clusters(self.namespace, missing))

    def add_image(self, image: ImageRow, hits: list[Hit], rule: LinkRule, viewed: Container[str] = (),
                  own_view: dict[str, float] | None = None) -> str:
        """Put a new image into a cluster: its own, the one it matches, or a merge of several
        (the clusters `rule` chooses from its neighbours `hits`). `viewed`: the hits' images
        that have an extra view; `own_view`: for an image with an extra view, its similarity
        through that view to each hit's image (LinkRule.clusters_to_join says why)."""
        resolved = [(self.resolve(h.cluster_id), h.similarity, h.image_id) for h in hits]
        self.load({c for c, sim, _ in resolved if sim >= rule.threshold})
        resolved = [r for r in resolved if r[0] in self.rows]
        links = [(c, image_id) for c, sim, image_id in resolved if sim >= rule.threshold]
        plain = {c for c, image_id in links if image_id not in viewed}
        through_views = {c for c, _ in links} - plain
        by_view = None
        if own_view is not None:
            best: dict[str, float] = {}
            for c, _, image_id in resolved:
                sim = own_view.get(image_id, -1.0)
                if sim >= rule.threshold and sim > best.get(c, -2.0):
                    best[c] = sim
            by_view = sorted(best, key=lambda c: -best[c])
        linked = set(rule.clusters_to_join([(c, sim) for c, sim, _ in resolved], lambda c: self.rows[c].size,
                                           through_views=through_views, own_view=by_view))
        if not linked:
            cid = new_cluster_id()
            self.rows[cid] = ClusterRow(cid, 0, image.image_id, image.pixels, image.inserted_at_ms, self.namespace)
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

    def follow(self, image_id: str, cluster_id: str, into: str) -> bool:
        """A stored composite (an image with an inset view) in `cluster_id` leaves it for
        `into`, the cluster of a new image that matched the picture pasted into it
        (LinkRule.follows: docs/matching.md, "Composites"). Never empties a cluster."""
        src, dst = self.resolve(cluster_id), self.resolve(into)
        if src == dst or image_id in self.moved:
            return False
        self.load({src})
        if src not in self.rows or self.rows[src].size < 2:
            return False
        self.rows[src].size -= 1
        self.rows[dst].size += 1
        self.moved[image_id] = dst
        self.dirty |= {src, dst}
        return True

    def _merge(self, source: str, target: str) -> None:
        src, dst = self.rows.pop(source), self.rows[target]
        dst.size += src.size
        if _better_representative(src.rep_pixels, src.rep_inserted_at_ms, dst):
            dst.representative_id, dst.rep_pixels, dst.rep_inserted_at_ms = src.representative_id, src.rep_pixels, src.rep_inserted_at_ms
        self.merged_into[source] = target
        self.dirty.discard(source)
        self.dirty.add(target)

    def _followers(self) -> list[ImageRow]:
        """The rows of the composites that follow their pasted picture (follow), with the
        representatives of the clusters they leave and join put right (as rebuild_clusters
        would make them: most pixels, then the earliest stored)."""
        followers = list(self.store.get_images(self.namespace, self.moved, with_vectors=True).values())
        into = {img.image_id: self.resolve(self.moved[img.image_id]) for img in followers}
        # A cluster whose representative left is chosen again from all it holds now.
        left = {c for c in self.dirty if self.rows[c].representative_id in self.moved and into.get(self.rows[c].representative_id) != c}
        sources = [c for c in [*left, *self.merged_into] if self.resolve(c) in left]  # with what merged into them
        members = [m for m in self.store.images_in_clusters(self.namespace, sources) if m.image_id not in self.moved] if left else []
        for c in left:
            row = self.rows[c]
            row.representative_id, row.rep_pixels, row.rep_inserted_at_ms = "", -1, 0
        for img in [*members, *followers]:
            row = self.rows.get(self.cluster_of(img.image_id, img.cluster_id))
            if row is not None and (row.cluster_id in left or img.image_id in into) and _better_representative(img.pixels, img.inserted_at_ms, row):
                row.representative_id, row.rep_pixels, row.rep_inserted_at_ms = img.image_id, img.pixels, img.inserted_at_ms
        return followers

    def flush(self, new_images: list[ImageRow], new_views: dict[str, list[np.ndarray]], insets: Container[str] = ()) -> None:
        """Write new images (their extra views just before), re-home members of merged
        clusters, then the cluster rows.

        Image rows are the truth; views whose image row is missing are ignored, and cluster rows
        are derived from the images, so a crash part-way leaves nothing that
        IndexWriter.rebuild_clusters cannot put right."""
        for img in new_images:
            img.cluster_id = self.resolve(img.cluster_id)
        self.views.insert_views(self.namespace, new_views, insets)
        self.store.insert_images(new_images)
        _fault_point("after-image-insert")
        merged = [c for c in self.merged_into if c not in self.rows]
        rehomed = self.store.images_in_clusters(self.namespace, merged, with_vectors=True) if merged else []
        if self.moved:
            rehomed = [r for r in rehomed if r.image_id not in self.moved]
            rehomed += self._followers()
        if rehomed:
            for img in rehomed:
                img.cluster_id = self.cluster_of(img.image_id, img.cluster_id)
            self.store.rewrite_images(rehomed)
        # Deleted before the upsert: on a Milvus server a delete leaves reads of the collection
        # Strong (~200 ms) until a later write's timestamp covers it (storage/milvus.py), and a
        # merge always upserts its surviving cluster.
        self.store.delete_clusters(merged)
        self.store.upsert_clusters([self.rows[c] for c in sorted(self.dirty)])


def _fault_point(name: str) -> None:
    """FAULT INJECTION FOR TESTS ONLY: DEDUP_TEST_CRASH_AT=<name> kills the process right here,
    to test recovery from a crash between two writes (a moment kill -9 cannot aim at)."""
    if os.environ.get("DEDUP_TEST_CRASH_AT") == name:
        os._exit(137)


def _better_representative(pixels: int, inserted_at_ms: int, current: ClusterRow) -> bool:
    """The copy a user would keep: most pixels, then the earliest stored."""
    return (pixels, -inserted_at_ms) > (current.rep_pixels, -current.rep_inserted_at_ms)


# Two images whose extra views are both inset views (core/insets.py) match through that pair of
# views only from this similarity. The detector also fires where no photo was pasted (an emoji or
# sticker drawn on a photo, a caption's band, a thumbnail's frame), and two such crops of
# different photos look alike: on the hard set (benchmarks/make_hard.py; offline, 2026-12-05) 24
# of the 26 inset-inset pairs at >= 0.475 that no other pair of the two images' views reached
# were of different photos (same emoji, up to 0.604), the 2 of one photo scored 0.66 and 0.73;
# pairs with a content view were nearly all true (121 of 125). Through the API: docs/matching.md.
INSET_PAIR_MIN = 0.65


def image_similarity(a: list[np.ndarray], b: list[np.ndarray], *, a_inset: bool = False, b_inset: bool = False) -> float:
    """Similarity of two images given their views (whole image first, then extra views, inset
    views where `a_inset`/`b_inset`, else content views): the best pair, except that two images
    which both have a content view are compared by pairs involving one only (their whole images
    are mostly background: two screenshots of different photos in the same app look alike as
    wholes), and that two inset views count from INSET_PAIR_MIN."""
    sims = np.stack(a) @ np.stack(b).T
    if len(a) > 1 and len(b) > 1:
        if not (a_inset or b_inset):
            sims[0, 0] = -1.0
        elif a_inset and b_inset:
            views = sims[1:, 1:]
            views[views < INSET_PAIR_MIN] = -1.0
    return float(sims.max())


class IndexWriter:
    def __init__(self, store: MilvusStore, *, modes: MatchModes, rule: LinkRule, stored: StoredImages | None = None,
                 quotas: Mapping[str, NamespaceQuota] | None = None, cluster_modes: ClusterModes | None = None):
        self.store = store
        self.modes = modes
        self.point = modes.point
        self.rule = rule  # at the base threshold; each namespace's runs at its own (_rule)
        self.cluster_modes = cluster_modes or ClusterModes({})
        # Stored images per namespace, counted here as images are written: the operating point
        # and the namespaces' stored-images quotas (core/quotas.py) read them.
        self.counts = StoredCounts(store.count_images)
        limited = quotas is not None and any(q.max_images is not None for q in quotas.values())
        self.limits = StoredLimits(quotas, self.counts) if limited else None
        # Hashes of the images this server stored (kept up to date here): ids it rules out skip
        # the "already stored?" query (one of the five Milvus calls of a write).
        self.stored = stored
        # Extra views: searched in memory (core/view_mirror.py), or where a namespace has too
        # many, in Milvus alongside the images collection, not after it.
        self.views = ViewMirror(store)
        self._view_search = thread_pool(1, "view-search")

    def close(self) -> None:
        self._view_search.shutdown(wait=True)

    def _stored(self, namespace: str) -> int:
        """The namespace's stored images, as the operating point reads them (0, never counted,
        while the point is fixed)."""
        return self.counts[namespace] if self.point.adaptive else 0

    def threshold(self, namespace: str) -> float:
        """The namespace's default threshold now (its operating point)."""
        return self.point.threshold(self._stored(namespace))

    def _rules(self, namespace: str, vectors: list[np.ndarray], stored: int) -> tuple[list[LinkRule], list[float | None]]:
        """The link rule of each query (its vector) at the namespace's clustering threshold (its
        cluster mode's; with normalisation, the query's own: OperatingPoint.threshold), and
        the queries' normalisation terms (None each without it)."""
        terms = self.point.terms(vectors, stored)
        mode = self.cluster_modes(namespace)
        rules: dict[float, LinkRule] = {self.rule.threshold: self.rule}
        of_term: dict[float | None, LinkRule] = {}
        for term in terms:
            if term not in of_term:
                t = self.modes.threshold(mode, None, stored, term)
                of_term[term] = rules.setdefault(t, replace(self.rule, threshold=t))
        return [of_term[term] for term in terms], terms

    def _search(self, namespace: str, items: list[PendingImage], limit: int, floor: float) -> tuple[list[list[Hit]], list[dict[str, float]], list[dict[str, float]]]:
        """Nearest stored images of each item (all of `namespace`) by image_similarity, most
        similar first; candidates below `floor` may be left out. Also, per item, the best
        similarity of each candidate to the item's own extra views (empty for most items), and
        of the item's whole image to the inset views of candidates it matches better there
        than as wholes (a composite's pasted picture: LinkRule.follows)."""
        queries, owners, is_view = [], [], []
        for n, item in enumerate(items):
            for k, v in enumerate(item.all_vectors):
                queries.append(v)
                owners.append(n)
                is_view.append(k > 0)
        stacked = np.stack(queries)
        if self.views.in_memory(namespace):
            in_images = self.store.search(namespace, stacked, limit)
            view_hits = self.views.search_views(namespace, stacked, limit)
        else:
            in_views = self._view_search.submit(self.store.search_views, namespace, stacked, limit)
            try:
                in_images = self.store.search(namespace, stacked, limit)
            finally:
                view_hits = in_views.result()
        found: list[dict[str, float]] = [{} for _ in items]  # image_id -> best pair seen
        by_view: list[dict[str, float]] = [{} for _ in items]  # image_id -> best pair with the item's own views
        wholes: list[dict[str, float]] = [{} for _ in items]  # image_id -> the two whole images' similarity
        in_inset: list[dict[str, float]] = [{} for _ in items]  # image_id -> the item's whole against its inset view
        cluster_of: dict[str, str] = {}
        for n, view, hits in zip(owners, is_view, in_images):
            for h in hits:
                cluster_of[h.image_id] = h.cluster_id
                found[n][h.image_id] = max(found[n].get(h.image_id, -1.0), h.similarity)
                if view:
                    by_view[n][h.image_id] = max(by_view[n].get(h.image_id, -1.0), h.similarity)
                else:
                    wholes[n][h.image_id] = h.similarity
        for n, view, pairs in zip(owners, is_view, view_hits):
            for image_id, sim, inset in pairs:
                if view and inset and items[n].inset and sim < INSET_PAIR_MIN:
                    continue  # two inset views: image_similarity
                if inset and not view:
                    in_inset[n][image_id] = max(in_inset[n].get(image_id, -1.0), sim)
                found[n][image_id] = max(found[n].get(image_id, -1.0), sim)
                if view:
                    by_view[n][image_id] = max(by_view[n].get(image_id, -1.0), sim)
        # An item with an extra view is re-scored exactly against candidates that have one too
        # (image_similarity leaves their whole-image pair out between two content views, and
        # counts two inset views from INSET_PAIR_MIN). Rare: a few extra queries.
        rescore = {image_id for item, f in zip(items, found) if item.views for image_id, sim in f.items() if sim >= floor}
        their_views = self.views.views_of(namespace, rescore) if rescore else {}
        if their_views:
            rows = self.store.get_images(namespace, their_views, with_vectors=True)
            cluster_of.update({i: r.cluster_id for i, r in rows.items()})
            for item, f in zip(items, found):
                for image_id in f.keys() & rows.keys() if item.views else ():
                    f[image_id] = image_similarity(item.all_vectors, [rows[image_id].vector, *their_views[image_id]], a_inset=item.inset, b_inset=their_views[image_id].inset)
        # Hits found only through a view carry no cluster id: take their image's (and drop a
        # view whose image row is missing: left by a crash, it is ignored).
        missing = {image_id for f in found for image_id, sim in f.items() if sim >= floor and image_id not in cluster_of}
        if missing:
            cluster_of.update({i: r.cluster_id for i, r in self.store.get_images(namespace, missing).items()})
        hits = [
            sorted((Hit(i, sim, cluster_of[i]) for i, sim in f.items() if sim >= floor and i in cluster_of), key=lambda h: -h.similarity)
            for f in found
        ]
        # A stored image matched through its inset view but not found as a whole (the whole
        # search is approximate and has a limit): the two wholes are compared exactly.
        unseen = {i for f, w in zip(in_inset, wholes) for i, sim in f.items() if sim >= floor and i not in w}
        if unseen:
            vectors = {i: r.vector for i, r in self.store.get_images(namespace, unseen, with_vectors=True).items()}
            for item, f, w in zip(items, in_inset, wholes):
                w.update({i: float(item.vector @ vectors[i]) for i in f.keys() & vectors.keys() if i not in w})
        pasted = [{i: sim for i, sim in f.items() if sim >= floor and sim > w.get(i, 1.0)} for f, w in zip(in_inset, wholes)]
        return hits, by_view, pasted

    # -- check (and store) -------------------------------------------------------------------
    def _stored_since_checked(self, namespace: str, items: list[PendingImage]) -> set[int]:
        """Positions of the items whose bytes a lagging copy of the digest set ruled out but
        that are stored: a query each, for the rare digest the writer's own set cannot rule out."""
        if self.stored is None:
            return set()
        digests = self.stored.digests
        return {
            n for n, item in enumerate(items)
            if not item.exact_checked and digests.might_contain(digest_key(item.sha256, namespace))
            and self.store.holds_sha256(namespace, item.sha256, other_than=item.image_id)
        }

    def commit(self, items: list[PendingImage]) -> list[CheckResult]:
        """Check (and store) a batch; results in the items' order. Each namespace's items are
        committed on their own, in their order."""
        positions: dict[str, list[int]] = {}
        for n, item in enumerate(items):
            positions.setdefault(item.namespace, []).append(n)
        results: list[CheckResult | None] = [None] * len(items)
        for namespace, where in positions.items():
            for n, result in zip(where, self._commit(namespace, [items[n] for n in where])):
                results[n] = result
        return results  # type: ignore[return-value]

    def _commit(self, namespace: str, items: list[PendingImage]) -> list[CheckResult]:
        now_ms = int(time.time() * 1000)
        exact = self._stored_since_checked(namespace, items)
        to_store = [i.image_id for i in items if i.add_to_index]
        if self.stored is not None:
            to_store = [i for i in to_store if self.stored.keys.might_contain(image_key(i, namespace))]
        existing = self.store.get_images(namespace, to_store)
        # A re-sent id with different content replaces the old image: remove it first, so the
        # search below never sees the stale row and its cluster is repaired.
        replaced = [i.image_id for i in items if i.add_to_index and i.image_id in existing and existing[i.image_id].sha256 != i.sha256]
        if replaced:
            self.delete(namespace, replaced)
            for image_id in replaced:
                existing.pop(image_id)

        room = self.limits.room(namespace) if self.limits is not None else None
        stored = self._stored(namespace)
        rules, terms = self._rules(namespace, [i.vector for i in items], stored)
        thresholds = [self.modes.threshold(i.mode, i.threshold, stored, term) for i, term in zip(items, terms)]
        limit = max(max(i.top_k for i in items) + SEARCH_SLACK, self.rule.neighbours if any(i.add_to_index for i in items) else 0)
        t0 = time.perf_counter()
        # Only candidates that could be a match, a cluster link or support for one (the link
        # rule's floor) matter from here on.
        floor = min(*thresholds, *(r.threshold for r in rules), self.rule.floor)
        all_hits, by_view, pasted = self._search(namespace, items, limit, floor=floor)
        # Stored images with an extra view among those that could link a cluster (the link
        # rule treats them apart: LinkRule.clusters_to_join).
        linking = {h.image_id for item, rule, hits in zip(items, rules, all_hits) if item.add_to_index for h in hits if h.similarity >= rule.threshold}
        viewed = self.views.having_views(namespace, linking) if linking else set()
        t1 = time.perf_counter()
        metrics.STAGE_SECONDS.labels("search").observe(t1 - t0)
        book = _ClusterBook(self.store, self.views, namespace)
        batch_rows: list[ImageRow] = []  # stored earlier in this batch, in order
        batch_at: list[int] = []  # the item each of them came from
        # image_similarity of every pair of the batch's items, in one product (a write of
        # hundreds of images would otherwise make tens of thousands of small ones).
        in_batch = _pairwise([i.all_vectors for i in items], [i.inset for i in items]) if len(items) > 1 and any(i.add_to_index for i in items) else None
        new_views: dict[str, list[np.ndarray]] = {}
        new_insets: set[str] = set()
        followed: list[tuple[str, str, float]] = []  # (composite, its pasted picture, similarity)
        results: list[CheckResult] = []
        for n, (item, threshold, hits) in enumerate(zip(items, thresholds, all_hits)):
            candidates = [Hit(h.image_id, h.similarity, book.cluster_of(h.image_id, h.cluster_id)) for h in hits if h.image_id != item.image_id]
            if batch_rows:
                assert in_batch is not None
                sims = in_batch[n, batch_at]
                candidates += [
                    Hit(batch_rows[k].image_id, float(sims[k]), book.resolve(batch_rows[k].cluster_id))
                    for k in np.flatnonzero(sims >= floor)
                    if batch_rows[k].image_id != item.image_id
                ]
            candidates.sort(key=lambda h: -h.similarity)
            matches = [h for h in candidates if h.similarity >= threshold][: item.top_k]
            if not item.add_to_index:
                results.append(CheckResult(matches, stored=False, threshold=threshold))
                continue
            previous = existing.get(item.image_id) or next((r for r in batch_rows if r.image_id == item.image_id), None)
            if previous is not None:  # the same id and content again: idempotent, nothing written
                results.append(CheckResult(matches, stored=True, cluster_id=book.cluster_of(previous.image_id, previous.cluster_id), threshold=threshold))
                continue
            if room is not None and len(batch_rows) >= room:
                assert self.limits is not None
                results.append(CheckResult(matches, stored=False, error=self.limits.refused(namespace), threshold=threshold))
                continue
            row = ImageRow(item.image_id, "", item.pixels, now_ms, item.sha256, item.vector, namespace)
            own_view = None
            if item.views:
                own_view = by_view[n]
                if batch_rows:  # the batch's earlier images, through this one's views
                    mine = np.stack(item.views)
                    own_view = dict(own_view)
                    for r, k in zip(batch_rows, batch_at):
                        sims = mine @ np.stack(items[k].all_vectors).T
                        if item.inset and items[k].inset:  # two inset views: image_similarity
                            sims[:, 1:][sims[:, 1:] < INSET_PAIR_MIN] = -1.0
                        own_view[r.image_id] = float(sims.max())
            row.cluster_id = book.add_image(row, candidates, rules[n], viewed, own_view)
            for h in hits if not item.views else ():  # composites stored earlier whose pasted picture this image is
                if rules[n].follows(pasted[n].get(h.image_id, -1.0)) and book.follow(h.image_id, h.cluster_id, row.cluster_id):
                    followed.append((h.image_id, item.image_id, pasted[n][h.image_id]))
            batch_rows.append(row)
            batch_at.append(n)
            if item.views:
                new_views[item.image_id] = item.views
                if item.inset:
                    new_insets.add(item.image_id)
                viewed.add(item.image_id)  # for the batch's later images
            results.append(CheckResult(matches, stored=True, cluster_id=row.cluster_id, threshold=threshold))
        if self.stored is not None:
            # Recorded before the write: if it fails part-way, rows may exist that the sets
            # must not rule out (an extra entry only costs a query; a missing one a wrong answer).
            for row in batch_rows:
                self.stored.add(image_key(row.image_id, namespace), digest_key(row.sha256, namespace))
        t2 = time.perf_counter()
        metrics.STAGE_SECONDS.labels("cluster").observe(t2 - t1)
        if batch_rows or book.dirty:
            try:
                book.flush(batch_rows, new_views, new_insets)
            except BaseException:
                self.counts.forget(namespace)  # part may be written: count again
                raise
            self.counts.changed(namespace, len(batch_rows))
            for composite, picture, sim in followed:
                metrics.COMPOSITES_MOVED.inc()
                log.info("composite %r followed the picture pasted into it, %r (%.3f), into its cluster", composite, picture, sim)
            metrics.STAGE_SECONDS.labels("insert").observe(time.perf_counter() - t2)
        for n, r in enumerate(results):
            r.cluster_id = book.resolve(r.cluster_id) if r.cluster_id else ""
            r.matches = [Hit(h.image_id, h.similarity, book.cluster_of(h.image_id, h.cluster_id)) for h in r.matches]
            r.exact = n in exact
        return results

    # -- repair ------------------------------------------------------------------------------
    def rebuild_clusters(self, guard: Callable[[], None] | None = None) -> tuple[int, int]:
        """Recompute every cluster row from the image rows (after an interrupted write).
        `guard()` is called before each write and raises when this process may no longer write.

        Returns (clusters written, stale cluster rows deleted)."""
        images = self.store.all_images()
        groups: dict[str, list[ImageRow]] = {}
        for img in images:
            groups.setdefault(img.cluster_id, []).append(img)
        rows = []
        for cid, members in groups.items():
            rep = max(members, key=lambda m: (m.pixels, -m.inserted_at_ms))
            rows.append(ClusterRow(cid, len(members), rep.image_id, rep.pixels, rep.inserted_at_ms, rep.namespace))
        stale = [cid for cid, _ in self.store.cluster_sizes(None, 1) if cid not in groups]
        for write, arg in ((self.store.upsert_clusters, rows), (self.store.delete_clusters, stale)):
            if guard is not None:
                guard()
            write(arg)
        return len(rows), len(stale)

    # -- delete ------------------------------------------------------------------------------
    def delete(self, namespace: str, image_ids: list[str]) -> tuple[list[str], list[str]]:
        """Delete images of a namespace; recompute the clusters they were in. Returns
        (deleted, not_found)."""
        found = self.store.get_images(namespace, image_ids)
        deleted = [i for i in dict.fromkeys(image_ids) if i in found]
        not_found = [i for i in dict.fromkeys(image_ids) if i not in found]
        if not deleted:
            return deleted, not_found
        try:
            self.store.delete_images(namespace, deleted)
        except BaseException:
            self.counts.forget(namespace)  # some may be deleted: count again
            raise
        self.counts.changed(namespace, -len(deleted))
        self.views.delete_views(namespace, deleted)
        affected = sorted({found[i].cluster_id for i in deleted})
        members = self.store.images_in_clusters(namespace, affected, with_vectors=True)
        extra = self.views.views_of(namespace, [m.image_id for m in members]) if members else {}
        insets = {i for i, views in extra.items() if views.inset}
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
            rows.sort(key=lambda m: (m.inserted_at_ms, m.image_id))
            rules = self._rules(namespace, [m.vector for m in rows], self._stored(namespace))[0]
            components = _regroup(rows, extra, self.rule, insets, [r.threshold for r in rules])
            components.sort(key=len, reverse=True)
            for n, component in enumerate(components):
                new_cid = cid if n == 0 else new_cluster_id()
                for m in component:
                    if m.cluster_id != new_cid:
                        m.cluster_id = new_cid
                        rewrite.append(m)
                rep = max(component, key=lambda m: (m.pixels, -m.inserted_at_ms))
                cluster_rows.append(ClusterRow(new_cid, len(component), rep.image_id, rep.pixels, rep.inserted_at_ms, namespace))
        self.store.rewrite_images(rewrite)
        self.store.delete_clusters(emptied)  # before the upsert, as in _ClusterBook.flush
        self.store.upsert_clusters(cluster_rows)
        return deleted, not_found


    def drop_namespace(self, namespace: str) -> int:
        """Delete every image and cluster of a namespace; returns the images deleted."""
        try:
            return self.store.drop_namespace(namespace)
        finally:
            self.counts.forget(namespace)
            self.views.forget(namespace)


def _similarities(rows: list[ImageRow], extra: dict[str, list[np.ndarray]], insets: Container[str] = ()) -> np.ndarray:
    """image_similarity of every pair of rows (views included; `insets`: the images whose
    views are inset views), as one matrix."""
    return _pairwise([[r.vector, *extra.get(r.image_id, [])] for r in rows], [r.image_id in insets for r in rows])


def _pairwise(images: list[list[np.ndarray]], insets: Sequence[bool] = ()) -> np.ndarray:
    """image_similarity of every pair of images given their views (whole image first; `insets`:
    per image, whether its views are inset views), as one matrix (its diagonal is not
    meaningful)."""
    vectors, starts, with_content = [], [], []
    for n, views in enumerate(images):
        starts.append(len(vectors))
        vectors += views
        with_content.append(len(views) > 1 and not (n < len(insets) and insets[n]))
    sims = np.stack(vectors) @ np.stack(vectors).T
    if len(vectors) > len(images):  # reduce view x view to image x image as image_similarity does
        whole = np.asarray(starts)[np.flatnonzero(with_content)]
        sims[np.ix_(whole, whole)] = -1.0  # (the diagonal too: never used)
        inset_views = [k for n, views in enumerate(images) if n < len(insets) and insets[n] for k in range(starts[n] + 1, starts[n] + len(views))]
        if inset_views:
            pairs = np.ix_(inset_views, inset_views)
            block = sims[pairs]
            block[block < INSET_PAIR_MIN] = -1.0
            sims[pairs] = block
        sims = np.maximum.reduceat(np.maximum.reduceat(sims, starts, axis=0), starts, axis=1)
    return sims


def _regroup(rows: list[ImageRow], extra: dict[str, list[np.ndarray]], rule: LinkRule, insets: Container[str] = (),
             thresholds: Sequence[float] | None = None) -> list[list[ImageRow]]:
    """The clusters `rule` makes of rows (in the order given: the order they were stored; with
    `thresholds`, each row links its pairs with the earlier ones at its own: LinkRule.regroup)."""
    return [[rows[i] for i in group] for group in rule.regroup(_similarities(rows, extra, insets), thresholds=thresholds)]
