"""Shared rate quotas: a namespace's images per second, divided between the processes that take
its checks, by what each is asked for.

Every process that takes checks (each front of `--workers N`, each replica, the writer replica
itself when it serves calls) keeps a token bucket per namespace (core/quotas.py: RateLimits), so
that a refused check costs nothing: no round trip, no decoding. Left alone, N such processes
would let a namespace through at N times its rate. So each one tells the collection's index
writer, every INTERVAL_S, how many checks of each rate-limited namespace it was asked for
(refused ones too), and the writer, which hears them all, answers with each process's allotment
(`RateShares.allot`), the way YouTube's Doorman and other global rate limiters lease capacity:

- a process that has not reported for EXPIRE_S is gone, and its share goes to the others;
- a process's demand rises at once with what it reports and falls off over ~DEMAND_TAU_S (an
  exponential decay), so that a busy process gets its part at its next report and a caller who
  waits as a refusal's RetryInfo says finds that part much as it was;
- while the namespace's demand fits its rate, each process gets what it asked for plus an
  equal part of what is left (so a caller that moves to another process, or speeds up, finds
  room at once);
- when demand exceeds the rate, RESERVE of it is split evenly (a process that was asked for
  nothing can still let a first call through) and the rest in proportion to demand;
- the burst is divided like the rate (at least one token each).

Each allotment is worked out from the others' last reports, so the parts held at one moment
add up to the namespace's rate once every process has reported since the last change (the
burst may round up by one token per process); while a writer that just started (or took over)
hears the processes one by one, the first are given more for up to one interval. A process uses
its own settings until its first answer (with `--workers N`, 1/N of each rate:
transport/workers.py) and keeps its last allotment while the writer cannot be reached. One
caller on one connection, which the kernel or a load balancer pins to one process, gets nearly
the whole rate at the next report, instead of 1/N of it.

Every process must have the same rate quotas in its settings: a process reports (and is limited
in) the namespaces its own settings limit, and the writer divides them by its own settings.
"""

from __future__ import annotations

import asyncio
import logging
import math
import time
import uuid
from dataclasses import dataclass
from typing import TYPE_CHECKING, Callable, Mapping

from imgdedup.config import NamespaceQuota
from imgdedup.core.quotas import RateLimits, quota_of

if TYPE_CHECKING:
    from imgdedup.core.backends import IndexBackend

log = logging.getLogger(__name__)

INTERVAL_S = 0.5  # how often a process reports its demand and takes its allotment
EXPIRE_S = 4 * INTERVAL_S  # a process not heard from for this long has stopped taking checks
DEMAND_TAU_S = 2.0  # a fall in a process's demand takes about this long to count (an exponential decay)
RESERVE = 0.05  # of a rate over-asked: split evenly, whatever each process asked for


@dataclass(frozen=True, slots=True)
class Allotment:
    rate: float  # images per second this process may let through
    burst: float  # its bucket's size
    fair_rate: float  # the namespace's rate / the processes sharing it: what a refused caller's wait is told from
    limit: float  # the namespace's rate


class RateShares:
    """The index writer's side: the last demand of each process, and their allotments. Used from
    one thread (the writer's event loop)."""

    def __init__(self, quotas: Mapping[str, NamespaceQuota], clock: Callable[[], float] = time.monotonic):
        self._quotas = quotas
        self._clock = clock
        self._heard: dict[str, tuple[float, Mapping[str, float]]] = {}  # process -> (when, demand by namespace)

    def allot(self, process: str, demand: Mapping[str, float]) -> dict[str, Allotment]:
        """Record `process`'s demand (checks per second since its last report, by namespace) and
        return its allotment of each of those namespaces that has a rate quota here."""
        now = self._clock()
        last = self._heard.get(process)
        if last is not None:  # up at once, down by an exponential decay
            keep = math.exp(-(now - last[0]) / DEMAND_TAU_S)
            demand = {n: max(d, keep * last[1].get(n, d) + (1 - keep) * d) for n, d in demand.items()}
        self._heard[process] = (now, dict(demand))
        for gone in [p for p, (at, _) in self._heard.items() if now - at > EXPIRE_S]:
            del self._heard[gone]
        out: dict[str, Allotment] = {}
        for namespace in demand:
            q = quota_of(self._quotas, namespace)
            if q is None or q.images_per_second is None:
                continue
            sharing = [d.get(namespace, 0.0) for p, (_, d) in self._heard.items() if namespace in d and p != process]
            out[namespace] = share(q.images_per_second, q.burst or q.images_per_second, max(0.0, demand[namespace]), [max(0.0, d) for d in sharing])
        return out

    def processes(self) -> int:
        """Processes heard from in the last EXPIRE_S."""
        now = self._clock()
        return sum(1 for at, _ in self._heard.values() if now - at <= EXPIRE_S)


def share(rate: float, burst: float, asked: float, others: list[float]) -> Allotment:
    """One process's part of `rate` (and `burst`) when it asks for `asked` and the others
    sharing the namespace ask for `others` (module docstring)."""
    n = 1 + len(others)
    total = asked + sum(others)
    if total <= rate * (1 - RESERVE):
        mine = asked + (rate - total) / n
    else:
        mine = rate * RESERVE / n + rate * (1 - RESERVE) * (asked / total)
    return Allotment(rate=mine, burst=max(1.0, burst * mine / rate), fair_rate=rate / n, limit=rate)


class RateReporter:
    """A process's side: every INTERVAL_S, its RateLimits' demand goes to the index (the writer
    in this process, or over gRPC) and the allotment that comes back replaces its parts. The
    first report goes at once, before the first calls."""

    def __init__(self, limits: RateLimits, index: IndexBackend):
        self._limits = limits
        self._index = index
        self.process = uuid.uuid4().hex  # the writer tells processes apart by it
        self._task = asyncio.get_running_loop().create_task(self._run(), name="rate-shares")

    async def _run(self) -> None:
        said = False
        while True:
            try:
                allotments = await self._index.share_rates(self.process, self._limits.demand())
                if allotments:
                    self._limits.allot(allotments)
                said = False
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # the writer away: keep the last parts
                if not said:
                    log.warning("sharing rate quotas with the index writer failed (%s); keeping this process's last parts", exc)
                    said = True
            await asyncio.sleep(INTERVAL_S)

    async def stop(self) -> None:
        self._task.cancel()
        await asyncio.gather(self._task, return_exceptions=True)
