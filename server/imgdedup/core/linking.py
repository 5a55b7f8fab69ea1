"""The cluster-link rule: which clusters a new image joins (docs/matching.md).

An image joins the clusters it matches (similarity >= the cluster threshold). When it matches
more than one, plain single linkage would merge them all, and one image that shows two photos
(a photo pasted onto another, a screenshot of two) would then merge two unrelated clusters, and
through them everything linked to either. So an image merges only the clusters it *resembles*:
those in which it is near (similarity >= `floor`) at least `support` of the members, counted
over at most `sample` of them (its nearest neighbours show them). A copy of a photo resembles
most copies of that photo; a composite resembles one member of the other photo's cluster (the
image it was made from) and none of the rest. If it resembles none of them in that way, it joins
the cluster of its best match alone.

The same rule regroups a cluster after a delete (`regroup`): its remaining members, replayed in
the order they were stored, against each other only. Pure functions of similarities: no I/O.
"""

from __future__ import annotations

from collections.abc import Callable, Collection, Hashable, Iterable, Sequence
from dataclasses import dataclass, replace

import numpy as np


@dataclass(frozen=True, slots=True)
class LinkRule:
    threshold: float  # a match links its cluster from here (the server's cluster threshold)
    support: float = 0.6  # share of a cluster's members an image must be near to merge it; 0: plain single linkage
    floor: float = 0.30  # "near": unrelated photos score 0.01 +- 0.05 with the default model
    sample: int = 8  # members counted at most, so that a large cluster needs 5 near neighbours, not half of itself

    @property
    def neighbours(self) -> int:
        """Nearest stored images a search must return so that the rule sees enough of three
        large clusters an image may link."""
        return 3 * self.sample

    def needed(self, size: int) -> float:
        return self.support * min(size, self.sample)

    def clusters_to_join(self, hits: Iterable[tuple[Hashable, float]], size_of: Callable[[Hashable], int], *,
                         through_views: Collection[Hashable] = (), own_view: Sequence[Hashable] | None = None) -> list:
        """The clusters a new image joins, given its neighbours as (cluster id, similarity):
        none (it starts a cluster of its own), one, or several to merge, best match first.
        `size_of` (a cluster's size before this image) is only called for a cluster it must
        resemble.

        Composites (docs/matching.md): `through_views` are clusters linked only through stored
        images that have an extra view (a composite's whole image matches the photo it was
        pasted on, whatever cluster its pasted photo put it in): the image joins one of them
        only if it resembles it, even alone. `own_view` is given for an image that has an
        extra view itself: the clusters its view links, best first; such an image joins one
        cluster, never merges, and the cluster its view links goes first."""
        best: dict = {}
        near: dict = {}
        for cluster_id, sim in hits:
            if sim > best.get(cluster_id, -2.0):
                best[cluster_id] = sim
            if sim >= self.floor:
                near[cluster_id] = near.get(cluster_id, 0) + 1
        linked = sorted((c for c, s in best.items() if s >= self.threshold), key=lambda c: -best[c])
        if self.support <= 0:
            return linked
        if len(linked) <= 1 and not through_views:
            return linked
        must = set(linked) if len(linked) > 1 else set(through_views)
        kept = [c for c in linked if c not in must or near[c] >= self.needed(size_of(c))]
        kept = kept or [c for c in linked if c not in through_views][:1]
        if own_view is None:
            return kept
        return [c for c in [*own_view, *kept] if c in kept][:1]

    def follows(self, pasted_similarity: float) -> bool:
        """Whether a stored composite leaves its cluster for a new image's: the new image's
        whole matches the composite's inset view (the picture pasted into it) at
        `pasted_similarity`, better than the two whole images match each other (and the new
        image has no extra view: a composite's whole is the photo it was pasted on), and did not
        join the composite's cluster (it does not resemble it: the composite was stored first
        and joined the photo it was pasted on). A composite belongs with its pasted picture,
        as a new composite does by `own_view`; so the order images arrive in no longer
        decides. Unlike a merge, the composite moves alone (docs/matching.md)."""
        return self.support > 0 and pasted_similarity >= self.threshold

    def regroup(self, sims: np.ndarray, order: Sequence[int] | None = None, thresholds: Sequence[float] | None = None) -> list[list[int]]:
        """Clusters of n images given their n x n similarities, adding them one at a time in
        `order` (default 0..n-1: the order they were stored) as the index writer does; with
        `thresholds`, image i links at thresholds[i] (a query's own: score normalisation).
        Returns lists of indexes, each in insertion order."""
        n = len(sims)
        order = list(range(n)) if order is None else list(order)
        label = np.full(n, -1)  # cluster (its first member's index) of each image added so far
        size: dict[int, int] = {}
        for i in order:
            rule = self if thresholds is None or thresholds[i] == self.threshold else replace(self, threshold=thresholds[i])
            near = np.flatnonzero((label >= 0) & (sims[i] >= min(rule.floor, rule.threshold)))
            chosen = rule.clusters_to_join(((int(label[j]), float(sims[i, j])) for j in near), size.__getitem__)
            if not chosen:
                label[i] = i
                size[i] = 1
                continue
            target = max(chosen, key=lambda c: (size[c], -c))
            for c in chosen:
                if c != target:
                    label[label == c] = target
                    size[target] += size.pop(c)
            label[i] = target
            size[target] += 1
        groups: dict[int, list[int]] = {}
        for i in order:
            groups.setdefault(int(label[i]), []).append(i)
        return list(groups.values())
