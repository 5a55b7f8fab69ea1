"""Two inset views (core/insets.py) match only when near alike (core/index.py: INSET_PAIR_MIN):
the detector also fires on what no one pasted (the same emoji drawn on two photos), and such
crops of different photos look alike. Through the IndexWriter on a real Milvus (a Lite file of
its own, or the session's server), with vectors made to the similarities wanted: across writes
(the views searched), within one write (compared in one matrix), after a delete (the regroup),
and the kind kept in Milvus. A content view and an inset view match as before."""

from __future__ import annotations

import hashlib

import numpy as np
import pytest

from conftest import backend_settings
from imgdedup.core.index import INSET_PAIR_MIN, PendingImage, image_similarity
from imgdedup.core.local_index import build_writer
from imgdedup.core.view_mirror import ViewMirror
from imgdedup.runtime import load_spec
from imgdedup.storage.milvus import is_inset_key, view_key

NS = "inset-pairs"


@pytest.fixture()
def writer(tmp_path, milvus_store):
    settings = backend_settings(tmp_path)
    return build_writer(settings, load_spec(settings.model), milvus_store, None)


def _near(rng, v: np.ndarray, cosine: float) -> np.ndarray:
    """A unit vector at exactly this cosine with the unit vector v."""
    u = rng.normal(size=v.shape).astype(np.float32)
    u -= (u @ v) * v
    u /= np.linalg.norm(u)
    return (cosine * v + np.sqrt(1 - cosine**2) * u).astype(np.float32)


def _item(image_id: str, whole, view, *, inset: bool, add: bool = True) -> PendingImage:
    return PendingImage(image_id, whole, add, None, 5, 640 * 480, hashlib.sha256(image_id.encode()).hexdigest(),
                        views=[view], inset=inset, namespace=NS)


def _setup(writer, seed: int):
    rng = np.random.default_rng(seed)
    wholes = rng.normal(size=(4, writer.store.dim)).astype(np.float32)
    wholes /= np.linalg.norm(wholes, axis=1, keepdims=True)
    sticker = wholes[3]
    alike = _near(rng, sticker, 0.60)  # above the threshold (0.475), below INSET_PAIR_MIN
    same = _near(rng, sticker, 0.80)
    return wholes, sticker, alike, same


def test_the_rule_in_image_similarity():
    rng = np.random.default_rng(1)
    a, b = (x / np.linalg.norm(x) for x in rng.normal(size=(2, 64)).astype(np.float32))
    alike = _near(rng, a, 0.6)
    assert 0.6 < INSET_PAIR_MIN
    for kinds in ({}, {"a_inset": True}, {"b_inset": True}):  # content views, or one of each
        assert image_similarity([b, a], [-b, alike], **kinds) == pytest.approx(0.6, abs=1e-5)
    both = {"a_inset": True, "b_inset": True}
    assert image_similarity([b, a], [-b, alike], **both) < 0.3  # two inset views: their pair does not count
    assert image_similarity([b, a], [-b, _near(rng, a, 0.8)], **both) == pytest.approx(0.8, abs=1e-5)
    # Whole images: left out between two content views (two screenshots' app chrome), not
    # where an inset view is one of them (the whole is the photo: a copy with an emoji on it).
    whole = _near(rng, b, 0.7)
    assert image_similarity([b, a], [whole, -a]) < 0.3
    for kinds in ({"a_inset": True}, {"b_inset": True}, both):
        assert image_similarity([b, a], [whole, -a], **kinds) == pytest.approx(0.7, abs=1e-5)


@pytest.mark.parametrize("views_in", ["memory", "milvus"])
def test_two_inset_views_link_only_when_near_alike_across_writes(writer, views_in):
    if views_in == "milvus":  # a namespace with more views than the writer keeps in memory
        writer.views = ViewMirror(writer.store, max_views=0)
    (w1, w2, w3, _), sticker, alike, same = _setup(writer, 2)
    [first] = writer.commit([_item("photo-with-emoji", w1, sticker, inset=True)])
    assert first.stored
    assert writer.store.views_of(NS, ["photo-with-emoji"])["photo-with-emoji"].inset  # the kind is kept
    [other] = writer.commit([_item("other-photo-same-emoji", w2, alike, inset=True, add=False)])
    assert other.matches == []
    [content] = writer.commit([_item("screenshot", w2, alike, inset=False, add=False)])
    assert [m.image_id for m in content.matches] == ["photo-with-emoji"]
    [pasted] = writer.commit([_item("same-picture-pasted", w3, same, inset=True, add=False)])
    assert [m.image_id for m in pasted.matches] == ["photo-with-emoji"]
    # Read again from Milvus (a new writer's copy of the views): the same answers.
    writer.views.forget_all()
    [other] = writer.commit([_item("other-photo-same-emoji", w2, alike, inset=True, add=False)])
    assert other.matches == []
    assert writer.views.in_memory(NS) is (views_in == "memory")


@pytest.mark.parametrize("views_in", ["memory", "milvus"])
def test_images_with_inset_views_still_match_as_wholes(writer, views_in):
    """A copy with an emoji (an inset view) and its photo with a window frame taken for one:
    their whole images match, across writes and within one; two screenshots (content views)
    do not match by their whole canvases."""
    if views_in == "milvus":
        writer.views = ViewMirror(writer.store, max_views=0)
    rng = np.random.default_rng(70)  # not _setup's seed: its first draw would be w1 itself
    (w1, _, _, _), _, _, _ = _setup(writer, 7)
    copy_whole = _near(rng, w1, 0.7)
    views = [x / np.linalg.norm(x) for x in rng.normal(size=(4, writer.store.dim)).astype(np.float32)]  # unrelated
    [photo] = writer.commit([_item("photo", w1, views[0], inset=True)])
    [copy] = writer.commit([_item("copy", copy_whole, views[1], inset=True, add=False)])
    assert [m.image_id for m in copy.matches] == ["photo"]
    assert copy.matches[0].similarity == pytest.approx(0.7, abs=1e-3)
    [shot] = writer.commit([_item("shot", copy_whole, views[1], inset=False, add=False)])
    assert [m.image_id for m in shot.matches] == ["photo"]  # one content view, one inset: wholes count
    [screenshot] = writer.commit([_item("screenshot", w1, views[2], inset=False)])
    [other] = writer.commit([_item("other-screenshot", copy_whole, views[3], inset=False, add=False)])
    assert "screenshot" not in [m.image_id for m in other.matches]  # two content views: not as wholes
    # Within one write too (wholes nothing stored resembles).
    fresh, view_a, view_b = (x / np.linalg.norm(x) for x in rng.normal(size=(3, writer.store.dim)).astype(np.float32))
    a, b = writer.commit([_item("a", fresh, view_a, inset=True), _item("b", _near(rng, fresh, 0.7), view_b, inset=True)])
    assert [m.image_id for m in a.matches] == [] and [m.image_id for m in b.matches] == ["a"]
    assert b.cluster_id == a.cluster_id


def test_two_inset_views_link_only_when_near_alike_within_one_write(writer):
    (w1, w2, w3, _), sticker, alike, same = _setup(writer, 3)
    also_alike = _near(np.random.default_rng(6), sticker, 0.60)  # 0.33 with `alike`
    a, b, c = writer.commit([
        _item("a", w1, sticker, inset=True),
        _item("b", w2, alike, inset=True),
        _item("c", w3, also_alike, inset=False),
    ])
    assert b.matches == [] and b.cluster_id != a.cluster_id
    assert c.cluster_id == a.cluster_id  # a content view and an inset view: as before
    assert {i for i, views in writer.store.views_of(NS, ["a", "b", "c"]).items() if views.inset} == {"a", "b"}


def test_a_delete_regroups_by_the_same_rule(writer):
    """b (an inset view alike a's at 0.6) joins a's cluster only through c, a content view near
    both; once c is deleted the regroup must split them, as a and b never matched."""
    (w1, w2, w3, _), sticker, alike, _ = _setup(writer, 4)
    rng = np.random.default_rng(5)
    a, = writer.commit([_item("a", w1, sticker, inset=True)])
    c, = writer.commit([_item("c", w3, _near(rng, sticker, 0.9), inset=False)])
    b, = writer.commit([_item("b", w2, alike, inset=True)])
    assert a.cluster_id == c.cluster_id
    assert b.matches and {m.image_id for m in b.matches} == {"c"}
    writer.delete(NS, ["c"])
    rows = writer.store.get_images(NS, ["a", "b"])
    assert rows["a"].cluster_id != rows["b"].cluster_id


def test_view_keys_of_content_views_are_those_stored_before_kinds():
    """Views stored before the kinds were kept have these keys and must read as content views."""
    assert view_key("img", 1) == "2de9268ea70e4fb2addd40bb85ce2b60"
    assert view_key("img", 1, "tenant-a") == "4c6f9f8341fe247d9faa7c59e859d4e7"
    assert not is_inset_key(view_key("img", 1), "img")
    assert is_inset_key(view_key("img", 1, inset=True), "img")
    assert not is_inset_key(view_key("img", 1, "tenant-a", inset=True), "img")  # another namespace's


def test_the_kind_crosses_the_writer_protocol():
    """--workers fronts send the kind with each item, and the writer returns it with an exact
    duplicate's stored views (transport/writer_service.py)."""
    from imgdedup._proto.dedup.internal.v1 import writer_pb2 as ipb
    from imgdedup.transport.messages import vector_bytes
    from imgdedup.transport.writer_service import _exact, _pending

    v = np.ones(4, np.float32) / 2
    for inset in (True, False):
        item = _pending(ipb.CommitItem(image_id="x", vector=vector_bytes(v), views=[vector_bytes(v)], inset_views=inset))
        assert item.inset is inset and len(item.views) == 1
        assert _exact((v, [v], inset)).inset_views is inset
    assert not _pending(ipb.CommitItem(image_id="y", vector=vector_bytes(v), inset_views=True)).inset  # no view, no kind
