"""The operating point: the default threshold, rising with the images a query is compared with.

A query against N stored unrelated images meets N * p(t) false matches on average, where p(t)
is the share of unrelated pairs scoring at least t (the model's tail, measured and fitted by
benchmarks/tail.py, kept in its spec as [search.tail]). A threshold fixed for 15k images lets
that grow 70-fold at a million; when a query is stored, each false match merges two clusters.
So the default threshold of a namespace holding N images is the smallest t (in steps of
STEP) with N * p(t) <= `false_matches_per_query`, and never below the calibrated default.
With the default model and 0.01 it stays at 0.475 up to ~64k images, 0.50 at ~92k, 0.55 at ~230k, 0.65 at 1M
(docs/matching.md).

A caller's own threshold is used as given. The clusters' threshold (the link rule's) follows
the namespace's operating point too: a false match merges clusters only through it.

With the spec's [search.normalise] (core/normalise.py), past the size where the threshold rises
each query gets its own: the normalised tail's threshold plus beta times the query's term, in
the same steps and never below the base. Below that size nothing changes.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np

from imgdedup.core.normalise import Normaliser
from imgdedup.runtime.spec import TailFit

if TYPE_CHECKING:
    from imgdedup.config import Settings
    from imgdedup.runtime.spec import ModelSpec

STEP = 0.005  # thresholds move in steps, so they change rarely as a namespace grows


@dataclass(frozen=True)
class OperatingPoint:
    base: float  # the calibrated default threshold (settings' or the model spec's)
    tail: TailFit | None = None  # None: the threshold stays `base`
    false_matches_per_query: float = 0.0  # 0: the threshold stays `base`
    normaliser: Normaliser | None = None  # None: one threshold for every query of a namespace

    @property
    def adaptive(self) -> bool:
        return self.tail is not None and self.false_matches_per_query > 0

    def risen(self, stored: int) -> bool:
        """Whether a namespace holding `stored` images is past the base (where normalisation,
        if any, gives each query its own threshold)."""
        return self.adaptive and stored > 0 and self._plain(stored) > self.base

    def _plain(self, stored: int) -> float:
        assert self.tail is not None
        return self.tail.threshold_for(self.false_matches_per_query / stored)

    def threshold(self, stored: int, term: float | None = None) -> float:
        """The default threshold of a query against a namespace holding `stored` images; with
        normalisation, of a query with this `term` (Normaliser.terms; None: a typical query's)."""
        if not self.risen(stored):
            return self.base
        if self.normaliser is None:
            t = self._plain(stored)
        else:
            norm = self.normaliser
            t = norm.tail.threshold_for(self.false_matches_per_query / stored) + norm.beta * (norm.typical_term if term is None else term)
            if t <= self.base:
                return self.base
        return min(1.0, round(math.ceil(t / STEP - 1e-9) * STEP, 6))

    def terms(self, vectors: Sequence[np.ndarray], stored: int) -> list[float | None]:
        """The queries' terms where they decide a threshold (normalisation, past the base),
        else None each."""
        if self.normaliser is None or not vectors or not self.risen(stored):
            return [None] * len(vectors)
        return [float(t) for t in self.normaliser.terms(np.stack(vectors))]

    @classmethod
    def of(cls, settings: Settings, spec: ModelSpec) -> OperatingPoint:
        return cls(settings.default_threshold(spec), spec.search.tail, settings.false_matches_per_query, Normaliser.of(spec))

    def false_matches(self, threshold: float, stored: int) -> float | None:
        """Expected unrelated matches of a query at `threshold` against `stored` images."""
        if self.tail is None:
            return None
        return stored * self.tail.p(threshold)
