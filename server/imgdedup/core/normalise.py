"""Query-side score normalisation: each query's own threshold where a namespace is large.

At a million stored images the unrelated-pair tail decides the threshold (core/operating_point.py:
0.65 at 1M, 0.84 at 10M with the default model), and hard copies mostly score below it. Some
images score high with everything (plain textures, dark scenes, common layouts): they make the
tail, and a threshold that holds it for them is too strict for the rest. The SSCD paper's
normalisation takes a pair's cosine down by beta times each side's similarity to its k-th
nearest neighbour in a background of unrelated photos. Its query-side form (measured in
benchmarks/normalise.py: nearly all of the gain of both sides, 0.82-0.84 of the hard set's copies
found at 1M instead of 0.65-0.66) needs no term per stored image: a pair matches when

    cosine >= T(N) + beta * term(query)

T(N) being the threshold for N stored images of the normalised scores' tail (its own fit, in the
spec), term(query) the query's k-th highest cosine with the background. So each query gets its own
threshold, in the operating point's steps and never below its base; a hub query gets a higher one,
a typical query a lower one than the plain point's.

The background must be clean: unrelated photos of the collection's kind, several hundred of them,
no copies of what the collection holds (docs/matching.md: 16 photos, or a sample of the
collection itself, make it worse than none). A background photo the query scores at or above the
model's copy similarity with is its copy, not a neighbour: it is left out of the query's term
(else a copy of a background photo would get a threshold above 1 and never match).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np

from imgdedup.runtime.spec import TailFit

if TYPE_CHECKING:
    from imgdedup.runtime.spec import ModelSpec

COPY_SIMILARITY = 0.85  # a spec without [search.kinds]: a background photo this similar is the query's copy


@dataclass(frozen=True, eq=False)
class Normaliser:
    background: np.ndarray  # n x dim, float32, rows L2-normalised
    k: int
    beta: float
    tail: TailFit  # of normalised scores: cosine - beta x the query's term
    typical_term: float
    copy_at: float = COPY_SIMILARITY

    @classmethod
    def of(cls, spec: ModelSpec) -> Normaliser | None:
        """The spec's normalisation, its background loaded and checked (None without one)."""
        table = spec.search.normalise
        if table is None:
            return None
        path = spec.resolve(table.background)
        try:
            background = np.load(path, allow_pickle=False)
        except (OSError, ValueError) as e:
            raise ValueError(f"model spec {spec.name!r}: [search.normalise] background {path}: {e}") from e
        return cls(cls._checked(background, spec.output.dim, table.k, str(path)), table.k, table.beta, table.tail,
                   table.typical_term, spec.search.kinds.copy_similarity if spec.search.kinds is not None else COPY_SIMILARITY)

    @staticmethod
    def _checked(background: np.ndarray, dim: int, k: int, where: str) -> np.ndarray:
        if background.ndim != 2 or background.shape[1] != dim or not np.issubdtype(background.dtype, np.floating):
            raise ValueError(f"[search.normalise] background {where}: {background.shape} {background.dtype}, "
                             f"not n x {dim} floats (the model's embeddings)")
        if background.shape[0] <= k:
            raise ValueError(f"[search.normalise] background {where}: {background.shape[0]} photos, k = {k}: it needs more than k")
        background = background.astype(np.float32)
        norms = np.linalg.norm(background, axis=1)
        if not np.all(np.isfinite(norms)) or np.any(np.abs(norms - 1.0) > 1e-3):
            raise ValueError(f"[search.normalise] background {where}: rows are not L2-normalised embeddings")
        return background

    def terms(self, vectors: np.ndarray) -> np.ndarray:
        """Each vector's (rows: L2-normalised embeddings) term: kth_similarity."""
        return kth_similarity(vectors, self.background, self.k, self.copy_at)


def kth_similarity(vectors: np.ndarray, background: np.ndarray, k: int, copy_at: float) -> np.ndarray:
    """Each vector's k-th highest cosine with the background's rows, the rows it scores
    `copy_at` or more with (its copies) left out."""
    sims = np.atleast_2d(vectors).astype(np.float32, copy=False) @ background.T
    sims[sims >= copy_at] = -1.0
    n = sims.shape[1]
    return np.partition(sims, n - k, axis=1)[:, n - k]
