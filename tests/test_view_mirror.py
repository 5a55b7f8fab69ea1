"""The index writer's in-memory copy of the extra views (core/view_mirror.py) answers as the
views collection does, through writes, deletes, a write Milvus refuses and a namespace too
large to copy. Against a real Milvus (a Lite file of its own, or the session's server)."""

from __future__ import annotations

import hashlib

import numpy as np
import pytest

from conftest import backend_settings
from imgdedup.config import Settings
from imgdedup.core.index import PendingImage
from imgdedup.core.local_index import build_writer
from imgdedup.core.view_mirror import ViewMirror
from imgdedup.runtime import load_spec

NS = "views-ns"


@pytest.fixture()
def settings(tmp_path) -> Settings:
    return backend_settings(tmp_path)


@pytest.fixture()
def store(milvus_store):
    return milvus_store


def _units(rng, n: int, dim: int) -> list[np.ndarray]:
    x = rng.normal(size=(n, dim)).astype(np.float32)
    return list(x / np.linalg.norm(x, axis=1, keepdims=True))


def _same(mirror: ViewMirror, store, queries: np.ndarray, ids: list[str]) -> None:
    """The mirror's search and views_of (vectors and kinds) equal the collection's."""
    ours, theirs = mirror.search_views(NS, queries, 16), store.search_views(NS, queries, 16)
    assert [[(i, inset) for i, _, inset in hits] for hits in ours] == [[(i, inset) for i, _, inset in hits] for hits in theirs]
    for a, b in zip(ours, theirs):
        assert np.allclose([s for _, s, _ in a], [s for _, s, _ in b], atol=1e-4)
    mine, stored = mirror.views_of(NS, ids), store.views_of(NS, ids)
    assert {i: v.inset for i, v in mine.items()} == {i: v.inset for i, v in stored.items()}
    assert mine.keys() == stored.keys()
    for image_id in mine:
        assert len(mine[image_id]) == len(stored[image_id])
        assert all(np.allclose(u, v, atol=1e-6) for u, v in zip(mine[image_id], stored[image_id]))


def test_the_copy_answers_as_the_views_collection_through_every_write(store):
    rng = np.random.default_rng(7)
    vs = [v * (0.5 + i % 3) for i, v in enumerate(_units(rng, 12, store.dim))]  # not all unit length: cosine
    # Views an earlier writer stored: read when the namespace is first searched.
    store.insert_views(NS, {f"old-{i}": [vs[i]] for i in range(5)})
    mirror = ViewMirror(store)
    # Queries near some views (so the order is not a near tie) and one far from all.
    near = [vs[1] / np.linalg.norm(vs[1]) + 0.3 * _units(rng, 1, store.dim)[0], vs[3] / np.linalg.norm(vs[3]) + 0.5 * _units(rng, 1, store.dim)[0]]
    queries = np.stack([v / np.linalg.norm(v) for v in near] + _units(rng, 1, store.dim))
    ids = [f"old-{i}" for i in range(5)] + ["new", "landed", "nope"]
    assert mirror.in_memory(NS)
    _same(mirror, store, queries, ids)
    assert mirror.search_views(NS, queries, 1)[0][0][0] == "old-1"

    mirror.insert_views(NS, {"new": [vs[5], vs[6]], "inset": [vs[9]]}, insets={"inset"})  # two views of one image; an inset view
    _same(mirror, store, queries, ids + ["inset"])
    assert {i for i, v in mirror.views_of(NS, ids + ["inset"]).items() if v.inset} == {"inset"}
    assert {(i, inset) for hits in mirror.search_views(NS, queries, 16) for i, _, inset in hits if i in ("inset", "new")} == {("inset", True), ("new", False)}
    mirror.insert_views(NS, {"old-1": [vs[7]]})  # an upsert of view 1: old-1 moves away
    _same(mirror, store, queries, ids)
    assert mirror.search_views(NS, queries, 1)[0][0][0] != "old-1"
    mirror.delete_views(NS, ["old-3", "new", "nope"])
    _same(mirror, store, queries, ids)
    assert "old-3" not in {i for hits in mirror.search_views(NS, queries, 16) for i, _, _ in hits}

    # A write Milvus refuses (a vector of the wrong size) may have landed in part: the copy is
    # dropped and read again, so what did land is found.
    with pytest.raises(Exception):
        mirror.insert_views(NS, {"bad": [np.ones(3, np.float32)]})
    store.insert_views(NS, {"landed": [vs[8]]})
    _same(mirror, store, queries, ids)
    assert "landed" in {i for hits in mirror.search_views(NS, queries, 16) for i, _, _ in hits}
    # Another namespace has views of its own.
    assert mirror.search_views("elsewhere", queries, 16) == [[], [], []]


def test_a_namespace_with_more_views_than_the_cap_is_searched_in_milvus(store):
    rng = np.random.default_rng(8)
    vs = _units(rng, 6, store.dim)
    store.insert_views(NS, {f"img-{i}": [vs[i]] for i in range(4)})
    queries = np.stack(vs[:2])
    over = ViewMirror(store, max_views=3)
    assert not over.in_memory(NS)
    _same(over, store, queries, [f"img-{i}" for i in range(4)])
    # One that grows past the cap by its own writes is searched there from then on.
    growing = ViewMirror(store, max_views=5)
    assert growing.in_memory(NS)
    growing.insert_views(NS, {"img-4": [vs[4]], "img-5": [vs[5]]})
    assert not growing.in_memory(NS)
    _same(growing, store, queries, [f"img-{i}" for i in range(6)])


def test_a_namespace_never_stored_in_is_not_kept_and_a_dropped_one_is_read_again(settings, store):
    """Through the IndexWriter: a photo that matches only a stored screenshot's content view is
    found; once the namespace is dropped it is not (no view left in memory), and a namespace
    nobody stored in is searched without being read or kept."""
    writer = build_writer(settings, load_spec(settings.model), store, None)
    rng = np.random.default_rng(9)
    canvas, content, other = _units(rng, 3, store.dim)

    def item(image_id: str, vector, views=(), add=True) -> PendingImage:
        return PendingImage(image_id, vector, add, None, 5, 640 * 480, hashlib.sha256(image_id.encode()).hexdigest(), views=list(views), namespace=NS)

    assert writer.views.in_memory("nobody-here") and "nobody-here" not in writer.views._copies
    [shot] = writer.commit([item("shot", canvas, [content])])
    assert shot.stored
    [photo] = writer.commit([item("photo", content, add=False)])
    assert [m.image_id for m in photo.matches] == ["shot"]  # through the screenshot's view
    assert writer.views.in_memory(NS)

    writer.drop_namespace(NS)
    [photo] = writer.commit([item("photo", content, add=False)])
    assert photo.matches == []
    # The id stored again, as another image without a view: a view kept from before the drop
    # would match it.
    [other_shot] = writer.commit([item("shot", other)])
    assert other_shot.stored and not other_shot.matches
    [photo] = writer.commit([item("photo", content, add=False)])
    assert photo.matches == []
    [again] = writer.commit([item("shot-2", other, [content])])
    assert again.stored and [m.image_id for m in again.matches] == ["shot"]  # the same whole vector
    [photo] = writer.commit([item("photo", content, add=False)])
    assert [m.image_id for m in photo.matches] == ["shot-2"]
    writer.close()
