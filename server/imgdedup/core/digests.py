"""Hashes of what this server stored, in memory: "could these exact bytes be stored?" and
"could an image with this id be stored?" (StoredImages: one DigestSet for each).

The exact-duplicate fast path needs that answer for every image, and nearly always it is no.
Asking Milvus costs a query (about 0.6 ms of this process's CPU and a thread hop) per image;
asking this set costs a microsecond. A "maybe" is confirmed by a Milvus query, which also
fetches the stored embedding, so the set may err only on the side of "maybe":
- it keeps 64-bit prefixes of the SHA-256 (8 bytes per image: 8 MB per million), whose rare
  collisions cost one query that finds nothing;
- deleted images are left in it (the confirming query finds nothing, and the image is embedded).
What it must never do is say "no" for bytes this server stored; bytes stored by another server
sharing the Milvus collection are not in it (they are still found, by the vector search, just
not flagged exact_duplicate); see the `digest_cache` setting.

A copy can be kept elsewhere: `watch` hands a listener every key held now and then each key
added (`--workers` fronts keep copies of their writer's set this way: transport/writer_service.py
WatchDigests), and `add_keys` fills such a copy. A copy may lag its original by a moment, so its
"no" is confirmed where the original lives (core/index.py: IndexWriter, `exact_checked`).

The id set works alike on image keys (a hash of the id, storage/milvus.py: image_key): a new id
skips the query that looks for an earlier image with the same id; a "maybe" makes that query.

Both sets hold every namespace's images, each under a key of its namespace (image_key, and
storage/milvus.py: digest_key for the bytes), so a "maybe" in one namespace says nothing of
another's images and the confirming query looks in the caller's namespace only.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterable

import numpy as np

from imgdedup.storage.milvus import digest_key

# Additions are kept in a small set and merged into the sorted array now and then.
_MERGE_AT = 4096


def _prefix(hex_digest: str) -> int:
    return int(hex_digest[:16], 16)


class DigestSet:
    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._sorted = np.empty(0, dtype=np.uint64)
        self._recent: set[int] = set()
        # False until the stored digests have been loaded; until then nothing can be ruled out.
        self.loaded = False
        self._listeners: list[Callable[[int], None]] = []

    def __len__(self) -> int:
        with self._lock:
            return len(self._sorted) + len(self._recent)

    def load(self, sha256_hexes: Iterable[str]) -> None:
        """Add every stored digest (at start-up; additions made meanwhile are kept)."""
        loaded = np.fromiter((_prefix(h) for h in sha256_hexes if h), dtype=np.uint64)
        with self._lock:
            self._sorted = np.union1d(self._sorted, loaded)
            self.loaded = True

    def add(self, sha256_hex: str) -> None:
        key = _prefix(sha256_hex)
        with self._lock:
            if self._has(key):
                return
            self._recent.add(key)
            for listener in self._listeners:  # under the lock: none misses a key or sees one twice
                listener(key)
            self._merge_if_due()

    def add_keys(self, keys: np.ndarray) -> None:
        """Add 64-bit keys as `watch` gives them (a copy's side)."""
        with self._lock:
            if len(keys) >= _MERGE_AT:
                self._sorted = np.union1d(self._sorted, keys.astype(np.uint64, copy=False))
            else:
                self._recent.update(int(k) for k in keys)
                self._merge_if_due()

    def reset(self) -> None:
        """Empty, and not loaded: nothing is ruled out until it is filled again."""
        with self._lock:
            self._sorted = np.empty(0, dtype=np.uint64)
            self._recent.clear()
            self.loaded = False

    def watch(self, listener: Callable[[int], None]) -> np.ndarray:
        """Returns every key held now; from then on `listener(key)` is called with each key added,
        from the adding thread, while the set is locked (so it must be quick). `unwatch` ends it."""
        with self._lock:
            self._listeners.append(listener)
            return np.union1d(self._sorted, np.fromiter(self._recent, dtype=np.uint64, count=len(self._recent)))

    def unwatch(self, listener: Callable[[int], None]) -> None:
        with self._lock:
            if listener in self._listeners:
                self._listeners.remove(listener)

    def _merge_if_due(self) -> None:
        if len(self._recent) >= _MERGE_AT:
            self._sorted = np.union1d(self._sorted, np.fromiter(self._recent, dtype=np.uint64, count=len(self._recent)))
            self._recent.clear()

    def might_contain(self, sha256_hex: str) -> bool:
        """False only when these bytes are certainly not stored (by this server)."""
        if not self.loaded:
            return True
        key = _prefix(sha256_hex)
        with self._lock:
            return self._has(key)

    def _has(self, key: int) -> bool:
        if key in self._recent:
            return True
        i = int(np.searchsorted(self._sorted, np.uint64(key)))
        return i < len(self._sorted) and int(self._sorted[i]) == key


class StoredImages:
    """What this server stored: the SHA-256 of the bytes (`digests`) and the primary keys of the
    ids (`keys`, storage/milvus.py: image_key), filled from Milvus once and then by the writer."""

    def __init__(self) -> None:
        self.digests = DigestSet()
        self.keys = DigestSet()

    def load(self, rows: Iterable[tuple[str, str, str]]) -> None:
        """rows: (namespace, image_key, sha256) of every stored image."""
        rows = list(rows)
        self.digests.load(digest_key(digest, ns) for ns, _, digest in rows if digest)
        self.keys.load(key for _, key, _ in rows)

    def add(self, key: str, digest: str) -> None:
        """key: the image_key; digest: the digest_key of its bytes."""
        self.keys.add(key)
        self.digests.add(digest)
