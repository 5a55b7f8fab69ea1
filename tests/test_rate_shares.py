"""How the index writer divides a namespace's rate quota between the processes that take its
checks (core/rate_shares.py). The processes and the writer over gRPC: tests/test_quotas.py and
tests/test_replicas.py."""

from __future__ import annotations

import asyncio
import logging
import math

import pytest

from imgdedup.config import NamespaceQuota
from imgdedup.core.errors import QuotaExceeded
from imgdedup.core.quotas import QUIET_S, RateLimits
from imgdedup.core.rate_shares import DEMAND_TAU_S, EXPIRE_S, INTERVAL_S, RESERVE, Allotment, RateReporter, RateShares, share

pytestmark = pytest.mark.store_neutral

QUOTAS = {"slow": NamespaceQuota(images_per_second=10.0, burst=20.0), "capped": NamespaceQuota(max_images=5)}


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def test_one_process_gets_the_whole_rate_and_burst():
    a = share(10.0, 20.0, asked=3.0, others=[])
    assert (a.rate, a.burst, a.fair_rate) == (10.0, 20.0, 10.0)
    assert share(10.0, 20.0, asked=50.0, others=[]).rate == pytest.approx(10.0)


@pytest.mark.parametrize("asked, others", [
    (0.0, [0.0]), (2.0, [3.0]), (9.0, [0.5, 0.0]), (40.0, [10.0]), (0.0, [40.0, 40.0]), (9.5, [0.0]), (9.4, [0.7, 1.3]),
])
def test_allotments_add_up_to_the_rate(asked, others):
    everyone = [asked, *others]
    parts = [share(10.0, 20.0, mine, everyone[:i] + everyone[i + 1:]) for i, mine in enumerate(everyone)]
    assert sum(p.rate for p in parts) == pytest.approx(10.0)
    assert all(p.rate >= 10.0 * RESERVE / len(everyone) - 1e-9 for p in parts)
    assert sum(p.burst for p in parts) <= 20.0 + len(everyone)  # at least one token each
    assert all(p.fair_rate == pytest.approx(10.0 / len(everyone)) for p in parts)


def test_under_the_rate_each_gets_its_demand_and_an_equal_part_of_the_rest():
    a = share(10.0, 20.0, asked=2.0, others=[4.0])
    assert a.rate == pytest.approx(2.0 + (10.0 - 6.0) / 2)
    assert a.burst == pytest.approx(20.0 * a.rate / 10.0)


def test_over_the_rate_the_busy_process_gets_most_and_an_idle_one_the_reserve():
    busy = share(10.0, 20.0, asked=30.0, others=[0.0])
    idle = share(10.0, 20.0, asked=0.0, others=[30.0])
    assert busy.rate == pytest.approx(10.0 * RESERVE / 2 + 10.0 * (1 - RESERVE))
    assert idle.rate == pytest.approx(10.0 * RESERVE / 2)
    assert idle.burst == 1.0  # a first call still gets through
    half = share(10.0, 20.0, asked=30.0, others=[30.0])
    assert half.rate == pytest.approx(5.0)


def test_the_writer_divides_between_processes_heard_from_lately():
    clock = Clock()
    shares = RateShares(QUOTAS, clock=clock)
    assert shares.allot("a", {"slow": 30.0})["slow"].rate == pytest.approx(10.0)  # alone so far
    b = shares.allot("b", {"slow": 30.0})["slow"]
    assert b.rate == pytest.approx(5.0) and shares.processes() == 2
    clock.now += EXPIRE_S / 2
    keep = math.exp(-EXPIRE_S / 2 / DEMAND_TAU_S)  # a's demand falls off: from 30 towards 10
    a = keep * 30.0 + (1 - keep) * 10.0
    assert shares.allot("a", {"slow": 10.0})["slow"].rate == pytest.approx(10.0 * RESERVE / 2 + 9.5 * a / (a + 30.0))
    clock.now += EXPIRE_S / 2 + 0.1  # b's last report is now too old: it stopped
    assert shares.allot("a", {"slow": 10.0})["slow"].rate == pytest.approx(10.0)
    assert shares.processes() == 1


def test_demand_counts_at_once_when_it_rises_and_falls_off_slowly():
    clock = Clock()
    shares = RateShares(QUOTAS, clock=clock)
    shares.allot("a", {"slow": 0.0})
    shares.allot("b", {"slow": 0.0})
    clock.now += INTERVAL_S
    assert shares.allot("a", {"slow": 40.0})["slow"].rate == pytest.approx(10.0 * RESERVE / 2 + 9.5)  # at once
    clock.now += INTERVAL_S
    quiet = shares.allot("a", {"slow": 0.0})["slow"].rate  # a's caller waits: its part stays
    assert quiet > 9.0


def test_only_namespaces_with_a_rate_quota_here_are_allotted():
    shares = RateShares(QUOTAS)
    out = shares.allot("a", {"slow": 1.0, "capped": 1.0, "elsewhere": 1.0})
    assert set(out) == {"slow"}
    star = RateShares({"*": NamespaceQuota(images_per_second=4.0)})
    assert star.allot("a", {"x": 0.0})["x"].rate == pytest.approx(4.0)
    assert star.allot("b", {"x": 0.0, "y": 0.0})["x"].rate == pytest.approx(2.0)  # each namespace its own rate
    assert star.allot("b", {"y": 0.0})["y"].rate == pytest.approx(4.0)  # a does not take y's checks


def test_a_process_reports_its_demand_and_takes_its_part():
    """RateLimits (core/quotas.py): what it was asked for since the last report, refused
    checks included, and the writer's allotment replacing its own settings."""
    clock = Clock()
    limits = RateLimits({"slow": NamespaceQuota(images_per_second=1.0, burst=2.0), "*": NamespaceQuota(images_per_second=5.0)}, clock=clock)
    assert limits.limited
    assert limits.demand() == {"slow": 0.0}  # named ones from the start; `*` ones once they call
    clock.now += 1.0
    passed = refused = 0
    for _ in range(4):
        try:
            limits.take("slow")
            passed += 1
        except QuotaExceeded:
            refused += 1
    limits.take("other")
    assert (passed, refused) == (2, 2)
    clock.now += 1.0
    assert limits.demand() == {"slow": pytest.approx(4 / 2.0), "other": pytest.approx(1 / 2.0)}
    assert limits.demand()["slow"] == 0.0  # counted once
    # A part of 0.1 per second with a fair share of 0.5: the bucket holds one token at most, and
    # a refusal says when the fair share would have given the next one.
    limits.allot({"slow": Allotment(rate=0.1, burst=1.0, fair_rate=0.5, limit=1.0)})
    limits.take("slow")  # the token refilled in the last second, at the old rate
    with pytest.raises(QuotaExceeded) as refusal:
        limits.take("slow")
    assert refusal.value.retry_after_s == pytest.approx(1 / 0.5) and refusal.value.limit == 1.0
    clock.now += 5.0  # 0.5 token at 0.1 per second
    with pytest.raises(QuotaExceeded):
        limits.take("slow")
    clock.now += 5.0
    limits.take("slow")
    # Only the namespaces this process limits, and only parts that are a rate.
    limits.allot({"free": Allotment(rate=1.0, burst=1.0, fair_rate=1.0, limit=2.0), "slow": Allotment(rate=0.0, burst=1.0, fair_rate=0.0, limit=1.0)})
    assert set(limits.demand()) == {"slow", "other"}
    clock.now += QUIET_S + 1  # `other` (of the `*` entry) not asked for since: no longer reported
    assert limits.demand() == {"slow": 0.0}


def test_no_rate_quota_no_demand():
    limits = RateLimits({"capped": NamespaceQuota(max_images=3)})
    assert not limits.limited and limits.demand() == {}


class _WriterThatFails:
    """A stand-in for an index writer that cannot be reached, then answers: the fault the
    reporter must ride out (the real writer over gRPC: tests/test_quotas.py, test_replicas.py)."""

    def __init__(self) -> None:
        self.calls = 0

    async def share_rates(self, process: str, demand: dict[str, float]):
        self.calls += 1
        if self.calls <= 2:
            raise ConnectionError("writer away")
        return {"slow": Allotment(rate=0.25, burst=1.0, fair_rate=0.5, limit=1.0)}


def test_the_reporter_keeps_its_parts_while_the_writer_is_away_then_takes_the_new_ones(caplog):
    limits = RateLimits({"slow": NamespaceQuota(images_per_second=1.0, burst=2.0)})

    async def run() -> int:
        writer = _WriterThatFails()
        reporter = RateReporter(limits, writer)
        await asyncio.sleep(INTERVAL_S * 2.5)  # reports at 0, 0.5 (both fail) and 1.0 s
        await reporter.stop()
        return writer.calls

    with caplog.at_level(logging.WARNING, logger="imgdedup.core.rate_shares"):
        calls = asyncio.run(run())
    assert calls == 3
    assert len([r for r in caplog.records if "failed" in r.message]) == 1  # said once, not per report
    limits.take("slow")  # the allotment's one token
    with pytest.raises(QuotaExceeded) as refusal:
        limits.take("slow")
    assert refusal.value.retry_after_s == pytest.approx(1 / 0.5, rel=0.05)  # told from the fair part
