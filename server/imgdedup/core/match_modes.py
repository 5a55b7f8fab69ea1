"""Copies and near-duplicates: what a check reports as a match, and which kind each match is.

Two photos of one scene (a burst, another view of one object) score as high as an edited copy
of one photo does: with the default model, other views of one UKBench object score a median
0.65 and up to 0.89, while a copy rotated by 25 degrees scores ~0.70 with its photo. So the
similarity alone gives a *kind* per match with a measured meaning, not a certainty
(docs/matching.md, "Copies and near-duplicates"; the model spec's [search.kinds], printed by
benchmarks/near_duplicates.py):

- MATCH_KIND_COPY at or above `copy_similarity`: few other shots of a scene reach it;
- MATCH_KIND_NEAR_DUPLICATE below it: another shot, or a heavily edited copy.

A call chooses its mode: DUPLICATES (the default: matches at the threshold, as ever), COPIES
(the threshold is at least `copy_similarity`) or NEAR_DUPLICATES (without a threshold of its
own, the operating point from `near_duplicate_threshold` instead of the default threshold:
it still rises as the namespace grows, by the same false-match budget). The mode decides what
the call reports; clusters follow their namespace's cluster mode (ClusterModes, the setting
`cluster_modes`: DUPLICATES unless configured) whatever the callers' modes.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from enum import IntEnum
from typing import TYPE_CHECKING, Mapping

from imgdedup.core.errors import FailedPrecondition
from imgdedup.core.operating_point import OperatingPoint

if TYPE_CHECKING:
    from imgdedup.runtime.spec import ModelSpec


class MatchMode(IntEnum):  # the values of dedup.v1.MatchMode
    DUPLICATES = 1
    COPIES = 2
    NEAR_DUPLICATES = 3


class MatchKind(IntEnum):  # the values of dedup.v1.MatchKind (0: not calibrated)
    COPY = 1
    NEAR_DUPLICATE = 2


@dataclass(frozen=True)
class MatchModes:
    point: OperatingPoint  # the default mode's operating point
    copy_similarity: float | None = None  # None: the model has no calibration of kinds
    near: OperatingPoint | None = None  # NEAR_DUPLICATES': `point` from near_duplicate_threshold

    @classmethod
    def of(cls, point: OperatingPoint, spec: ModelSpec) -> MatchModes:
        kinds = spec.search.kinds
        if kinds is None:
            return cls(point)
        return cls(point, kinds.copy_similarity, replace(point, base=kinds.near_duplicate_threshold))

    @property
    def near_duplicate_threshold(self) -> float | None:
        return self.near.base if self.near is not None else None

    @property
    def calibrated(self) -> bool:
        return self.copy_similarity is not None and self.near is not None

    def check(self, mode: MatchMode) -> None:
        """Refuse a mode this model cannot serve (before any work is done)."""
        if mode != MatchMode.DUPLICATES and not self.calibrated:
            raise FailedPrecondition(
                f"match_mode {mode.name} needs the model's calibration of copies and near-duplicates "
                "([search.kinds] in its spec), which this model does not have",
                subject="match_mode",
                reason="MATCH_MODE_NOT_CALIBRATED",
            )

    def threshold(self, mode: MatchMode, given: float | None, stored: int, term: float | None = None) -> float:
        """The threshold of a check in `mode` against a namespace of `stored` images: the
        caller's own (raised to copy_similarity for COPIES), else the mode's operating point
        (for a query with this normalisation `term`: OperatingPoint.threshold)."""
        if given is None:
            point = self.near if mode == MatchMode.NEAR_DUPLICATES and self.near is not None else self.point
            given = point.threshold(stored, term)
        if mode == MatchMode.COPIES and self.copy_similarity is not None:
            return max(given, self.copy_similarity)
        return given

    def kind(self, similarity: float) -> MatchKind | None:
        if self.copy_similarity is None:
            return None
        return MatchKind.COPY if similarity >= self.copy_similarity else MatchKind.NEAR_DUPLICATE


@dataclass(frozen=True)
class ClusterModes:
    """What links images into each namespace's clusters: the threshold of a mode (the link rule
    runs at it), by namespace name, "*" for the namespaces not named, DUPLICATES for the rest."""

    by_name: Mapping[str, MatchMode]

    @classmethod
    def of(cls, configured: Mapping[str, str], modes: MatchModes) -> ClusterModes:
        """From the setting (mode names in lower case); refuses modes the model cannot serve."""
        by_name = {name: MatchMode[mode.upper()] for name, mode in configured.items()}
        if any(mode != MatchMode.DUPLICATES for mode in by_name.values()) and not modes.calibrated:
            raise ValueError("cluster_modes other than 'duplicates' need the model's calibration of copies and near-duplicates ([search.kinds] in its spec), which this model does not have")
        return cls(by_name)

    @classmethod
    def from_settings(cls, settings, spec: ModelSpec) -> ClusterModes:
        """The settings' cluster modes for this model: what a start checks before it opens anything
        (only whether the model is calibrated for them: no tail or normalisation background needed)."""
        return cls.of(settings.cluster_modes, MatchModes.of(OperatingPoint(settings.default_threshold(spec)), spec))

    def __call__(self, namespace: str) -> MatchMode:
        return self.by_name.get(namespace, self.by_name.get("*", MatchMode.DUPLICATES))
