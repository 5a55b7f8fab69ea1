"""Per-namespace quotas (the `quotas` setting; docs/namespaces.md).

- **Images per second**: a token bucket per namespace in each process that takes checks (the
  engine, before any decoding, so a refused check costs almost nothing). The processes that
  check through one index writer (`--workers N`'s fronts, replicas) share each rate: every half
  second each tells the writer what it was asked for and gets its part (core/rate_shares.py).
  Over it: QuotaExceeded with the time until the next token (RetryInfo). The
  refusal is held back for up to HOLD_S of that time (RetryInfo then says the rest): a client
  that retries at once, ignoring RetryInfo, then makes at most 1/HOLD_S calls per second per
  call in flight instead of a thousand (measured: benchmarks/quotas.py), and a client that
  honours RetryInfo waits no longer in all.
- **Stored images**: counted by the index writer, the one process that stores (the count is
  read from Milvus on first need and kept up to date by the writer's own stores and deletes). A
  check that would store one more image is refused; checks that store nothing, and re-sent
  images already stored, are not. Waiting does not help, so no RetryInfo: deletes make room.

A namespace without an entry of its own gets the `*` entry, if there is one (each namespace its
own bucket and count).
"""

from __future__ import annotations

import asyncio
import time
from collections import Counter
from typing import TYPE_CHECKING, Callable, Mapping

from imgdedup import metrics
from imgdedup.config import NamespaceQuota
from imgdedup.core.counts import StoredCounts
from imgdedup.core.errors import QuotaExceeded

if TYPE_CHECKING:
    from imgdedup.core.rate_shares import Allotment

ANY = "*"
# The longest a refused check is held before its answer (see above).
HOLD_S = 0.25
# A namespace of the `*` entry not asked for in this long is no longer reported (RateLimits.demand).
QUIET_S = 10.0


def quota_of(quotas: Mapping[str, NamespaceQuota], namespace: str) -> NamespaceQuota | None:
    return quotas.get(namespace) or quotas.get(ANY)


class _Bucket:
    __slots__ = ("rate", "size", "tokens", "at", "fair", "limit")

    def __init__(self, rate: float, size: float, now: float):
        self.rate, self.size, self.tokens, self.at = rate, size, size, now
        self.fair = rate  # what a refused caller's wait is told from (Allotment.fair_rate)
        self.limit = rate  # the namespace's quota, as the index writer last said (Allotment.limit)

    def refill(self, now: float) -> None:
        self.tokens = min(self.size, self.tokens + (now - self.at) * self.rate)
        self.at = now


class RateLimits:
    """Token buckets, one per namespace with an images_per_second quota, at this process's
    settings until the index writer allots it a part of each (`allot`). Used from one thread
    (the event loop)."""

    def __init__(self, quotas: Mapping[str, NamespaceQuota], clock: Callable[[], float] = time.monotonic):
        self._quotas = quotas
        self._clock = clock
        self._buckets: dict[str, _Bucket] = {}  # namespaces with a rate quota that called
        self._asked: Counter[str] = Counter()  # checks of those since the last demand()
        self._last_asked: dict[str, float] = {}  # when demand() last found each asked for
        self._since = clock()

    @property
    def limited(self) -> bool:
        """Whether any namespace has an images_per_second quota here."""
        return any(q.images_per_second is not None for q in self._quotas.values())

    def _bucket(self, namespace: str, now: float) -> _Bucket | None:
        bucket = self._buckets.get(namespace)
        if bucket is None:
            q = quota_of(self._quotas, namespace)
            if q is None or q.images_per_second is None:
                return None
            rate = q.images_per_second
            bucket = self._buckets[namespace] = _Bucket(rate, max(1.0, q.burst or rate), now)
        return bucket

    def take(self, namespace: str) -> None:
        """Take one check's token, or raise QuotaExceeded (with the wait for the next one)."""
        metrics.NAMESPACE_CHECKS.labels(namespace).inc()
        now = self._clock()
        bucket = self._bucket(namespace, now)
        if bucket is None:
            return
        self._asked[namespace] += 1
        bucket.refill(now)
        if bucket.tokens >= 1.0:
            bucket.tokens -= 1.0
            return
        metrics.QUOTA_REFUSED.labels(namespace, "images_per_second").inc()
        # Told from the fair part, not this process's allotment: one that was asked for little
        # has a small one until its next report shows the demand (core/rate_shares.py).
        wait = (1.0 - bucket.tokens) / max(bucket.rate, bucket.fair)
        raise QuotaExceeded(
            f"namespace {namespace!r} is over its rate quota ({bucket.limit:g} images per second); retry after RetryInfo's delay",
            namespace=namespace, quota="images_per_second", limit=bucket.limit, retry_after_s=wait,
        )

    def demand(self) -> dict[str, float]:
        """Checks per second of each rate-limited namespace since the last call (refused ones
        too), for the index writer's RateShares: the namespaces named in the quotas with a rate
        (from the start, at 0, so that their first calls find a part waiting) and those of the
        `*` entry asked for in the last QUIET_S (the writer then counts this process out of the
        others' rates; a namespace that comes back takes its last part until the next report)."""
        now = self._clock()
        elapsed = max(now - self._since, 1e-3)
        for n in self._asked:
            self._last_asked[n] = now
        for n in [n for n, at in self._last_asked.items() if now - at > QUIET_S]:
            del self._last_asked[n]
        out = {n: 0.0 for n, q in self._quotas.items() if n != ANY and q.images_per_second is not None}
        out |= {n: self._asked[n] / elapsed for n in self._last_asked}
        self._asked.clear()
        self._since = now
        return out

    def allot(self, allotments: Mapping[str, Allotment]) -> None:
        """Take this process's part of each namespace's rate from the index writer (of the
        namespaces this process limits; a part that is no rate is ignored)."""
        now = self._clock()
        for namespace, part in allotments.items():
            bucket = self._bucket(namespace, now)
            if bucket is None or not (part.rate > 0 and part.burst >= 1 and part.fair_rate > 0):
                continue
            bucket.refill(now)  # at the old rate up to now
            bucket.rate, bucket.size, bucket.fair, bucket.limit = part.rate, part.burst, part.fair_rate, part.limit
            bucket.tokens = min(bucket.tokens, bucket.size)


async def hold(refused: QuotaExceeded) -> None:
    """Wait up to HOLD_S of a rate refusal's delay before it is answered; its RetryInfo then
    says what is left of the delay."""
    assert refused.retry_after_s is not None
    held = min(refused.retry_after_s, HOLD_S)
    await asyncio.sleep(held)
    refused.retry_after_s = max(0.0, refused.retry_after_s - held)


class StoredLimits:
    """Stored images per namespace against max_images, on the index writer's thread."""

    def __init__(self, quotas: Mapping[str, NamespaceQuota], counts: StoredCounts):
        self._quotas = quotas
        self._counts = counts

    def room(self, namespace: str) -> int | None:
        """How many more images the namespace may store (None: no limit)."""
        q = quota_of(self._quotas, namespace)
        if q is None or q.max_images is None:
            return None
        return max(0, q.max_images - self._counts[namespace])

    def refused(self, namespace: str) -> QuotaExceeded:
        q = quota_of(self._quotas, namespace)
        assert q is not None and q.max_images is not None
        metrics.QUOTA_REFUSED.labels(namespace, "stored_images").inc()
        return QuotaExceeded(
            f"namespace {namespace!r} holds {q.max_images} images, its quota; delete some to store more",
            namespace=namespace, quota="stored_images", limit=q.max_images,
        )
