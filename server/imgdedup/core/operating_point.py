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
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import TYPE_CHECKING

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

    @property
    def adaptive(self) -> bool:
        return self.tail is not None and self.false_matches_per_query > 0

    def threshold(self, stored: int) -> float:
        """The default threshold for a namespace holding `stored` images."""
        if not self.adaptive or stored <= 0:
            return self.base
        assert self.tail is not None
        t = self.tail.threshold_for(self.false_matches_per_query / stored)
        if t <= self.base:
            return self.base
        return min(1.0, round(math.ceil(t / STEP - 1e-9) * STEP, 6))

    @classmethod
    def of(cls, settings: Settings, spec: ModelSpec) -> OperatingPoint:
        return cls(settings.default_threshold(spec), spec.search.tail, settings.false_matches_per_query)

    def false_matches(self, threshold: float, stored: int) -> float | None:
        """Expected unrelated matches of a query at `threshold` against `stored` images."""
        if self.tail is None:
            return None
        return stored * self.tail.p(threshold)
