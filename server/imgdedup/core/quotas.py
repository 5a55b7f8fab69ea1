"""Per-namespace quotas (the `quotas` setting; docs/namespaces.md).

- **Images per second**: a token bucket per namespace in each process that takes checks (the
  engine, before any decoding, so a refused check costs almost nothing). With `--workers N` each
  front gets 1/N of the rate and burst (transport/workers.py); separate replicas each enforce
  the whole rate. Over it: QuotaExceeded with the time until the next token (RetryInfo). The
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
from typing import Callable, Mapping

from imgdedup import metrics
from imgdedup.config import NamespaceQuota
from imgdedup.core.counts import StoredCounts
from imgdedup.core.errors import QuotaExceeded

ANY = "*"
# The longest a refused check is held before its answer (see above).
HOLD_S = 0.25


def quota_of(quotas: Mapping[str, NamespaceQuota], namespace: str) -> NamespaceQuota | None:
    return quotas.get(namespace) or quotas.get(ANY)


class _Bucket:
    __slots__ = ("rate", "size", "tokens", "at")

    def __init__(self, rate: float, size: float, now: float):
        self.rate, self.size, self.tokens, self.at = rate, size, size, now


class RateLimits:
    """Token buckets, one per namespace with an images_per_second quota. Used from one thread
    (the event loop)."""

    def __init__(self, quotas: Mapping[str, NamespaceQuota], clock: Callable[[], float] = time.monotonic):
        self._quotas = quotas
        self._clock = clock
        self._buckets: dict[str, _Bucket] = {}  # namespaces with a rate quota that called

    def take(self, namespace: str) -> None:
        """Take one check's token, or raise QuotaExceeded (with the wait for the next one)."""
        metrics.NAMESPACE_CHECKS.labels(namespace).inc()
        bucket = self._buckets.get(namespace)
        now = self._clock()
        if bucket is None:
            q = quota_of(self._quotas, namespace)
            if q is None or q.images_per_second is None:
                return
            rate = q.images_per_second
            bucket = self._buckets[namespace] = _Bucket(rate, max(1.0, q.burst or rate), now)
        bucket.tokens = min(bucket.size, bucket.tokens + (now - bucket.at) * bucket.rate)
        bucket.at = now
        if bucket.tokens >= 1.0:
            bucket.tokens -= 1.0
            return
        metrics.QUOTA_REFUSED.labels(namespace, "images_per_second").inc()
        wait = (1.0 - bucket.tokens) / bucket.rate
        raise QuotaExceeded(
            f"namespace {namespace!r} is over its rate quota ({bucket.rate:g} images per second); retry after RetryInfo's delay",
            namespace=namespace, quota="images_per_second", limit=bucket.rate, retry_after_s=wait,
        )


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
