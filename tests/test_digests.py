"""The in-memory digest set behind the exact-duplicate fast path: it may say "maybe" wrongly
(a Milvus query then settles it), but never "no" for bytes that were stored."""

from __future__ import annotations

import hashlib
import threading

import numpy as np
import pytest

from imgdedup.config import Settings
from imgdedup.core.digests import DigestSet, StoredImages
from imgdedup.core.index import PendingImage
from imgdedup.core.local_index import build_writer, open_store
from imgdedup.runtime import load_spec

pytestmark = pytest.mark.store_neutral  # in this process, on a Lite file of its own: run in the Lite pass, not again on the Milvus server


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


def test_a_copy_fed_by_watch_holds_every_key_exactly_when_the_original_does():
    """A front's copy (WatchDigests): what the set held when the watch began, then each
    addition, once, also while other threads add."""
    original = DigestSet()
    original.load(_sha(i) for i in range(10_000))
    delivered: list[int] = []
    copy = DigestSet()
    threads = [threading.Thread(target=lambda b=b: [original.add(_sha(i)) for i in range(b, b + 3_000)]) for b in (10_000, 13_000)]
    threads[0].start()
    copy.add_keys(original.watch(delivered.append))  # in the middle of the adds
    threads[1].start()
    for t in threads:
        t.join()
    original.add(_sha(5))  # already held: not delivered
    assert len(delivered) == len(set(delivered))
    copy.add_keys(np.array(delivered, dtype=np.uint64))
    copy.loaded = True
    assert len(copy) == len(original) == 16_000
    assert all(copy.might_contain(_sha(i)) for i in range(16_000))
    assert not any(copy.might_contain(_sha(i)) for i in range(16_000, 20_000))
    original.unwatch(delivered.append)
    before = len(delivered)
    original.add(_sha(99_999))
    assert len(original) == 16_001 and len(delivered) == before  # nothing delivered after unwatch
    copy.reset()
    assert not copy.loaded and copy.might_contain(_sha(1)) and len(copy) == 0


def test_bytes_a_lagging_copy_ruled_out_are_found_by_the_writer(tmp_path):
    """A front whose copy of the digest set is a moment behind embeds an exact duplicate and
    sends it with exact_checked False; the writer, which holds the bytes, says exact."""
    settings = Settings(data_dir=tmp_path)  # a Milvus Lite file of its own
    spec = load_spec(settings.model)
    store = open_store(settings, spec)
    store.connect()
    try:
        stored = StoredImages()
        stored.load([])
        writer = build_writer(settings, spec, store, stored)
        rng = np.random.default_rng(0)
        v, w = (x / np.linalg.norm(x) for x in rng.normal(size=(2, spec.output.dim)).astype(np.float32))

        def item(image_id: str, vector, sha: str, **kw) -> PendingImage:
            return PendingImage(image_id, vector, True, None, 5, 640 * 480, sha, **kw)

        [first] = writer.commit([item("a", v, _sha(1))])
        assert first.stored and not first.exact
        again, other = writer.commit([item("b", v, _sha(1), exact_checked=False), item("c", w, _sha(2), exact_checked=False)])
        assert again.exact and again.stored and again.matches[0].image_id == "a"
        assert not other.exact
        [looked_up] = writer.commit([item("d", v, _sha(1))])  # the front found it itself: not asked again
        assert not looked_up.exact and looked_up.matches
        # Its own row (a write retried after part of it landed) is not an earlier copy.
        writer.commit([item("e", w, _sha(3))])
        [own] = writer.commit([item("e", w, _sha(3), exact_checked=False)])
        assert own.stored and not own.exact
    finally:
        store.close()
