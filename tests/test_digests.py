"""The in-memory digest set behind the exact-duplicate fast path: it may say "maybe" wrongly
(a Milvus query then settles it), but never "no" for bytes that were stored."""

from __future__ import annotations

import hashlib
import threading

from imgdedup.core.digests import DigestSet


def _sha(i: int) -> str:
    return hashlib.sha256(f"image {i}".encode()).hexdigest()


def test_nothing_is_ruled_out_before_the_stored_digests_are_loaded():
    digests = DigestSet()
    assert digests.might_contain(_sha(1))
    digests.add(_sha(2))  # additions before loading are kept
    digests.load([_sha(3)])
    assert digests.loaded and len(digests) == 2
    assert digests.might_contain(_sha(2)) and digests.might_contain(_sha(3))
    assert not digests.might_contain(_sha(1))


def test_every_stored_digest_is_found_across_merges_and_others_are_not():
    digests = DigestSet()
    digests.load(_sha(i) for i in range(20_000))
    for i in range(20_000, 30_000):  # crosses the merge point of the recent additions twice
        digests.add(_sha(i))
    digests.add(_sha(5))  # already there: not counted twice
    assert len(digests) == 30_000
    assert all(digests.might_contain(_sha(i)) for i in range(0, 30_000, 7))
    # 64-bit prefixes: a false "maybe" among 10,000 absent digests would be a 1-in-10^11 event.
    assert not any(digests.might_contain(_sha(i)) for i in range(30_000, 40_000))


def test_concurrent_adds_and_lookups_never_lose_a_digest():
    digests = DigestSet()
    digests.load([])
    missed: list[int] = []

    def writer(base: int) -> None:
        for i in range(base, base + 5_000):
            digests.add(_sha(i))
            if not digests.might_contain(_sha(i)):
                missed.append(i)

    threads = [threading.Thread(target=writer, args=(n * 5_000,)) for n in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert missed == [] and len(digests) == 20_000
