"""Inset views (core/insets.py): a photo pasted onto another photo is found, embedded alone, and
its composite clusters with it, without merging the two photos' clusters in either order."""

from __future__ import annotations

import cv2
import numpy as np
import pytest

from conftest import check, encode, rgb, serving
from imgdedup._proto.dedup.v1 import dedup_pb2 as pb
from imgdedup.core.images import decode_image, probe_image
from imgdedup.core import insets
from imgdedup.core.insets import MAX_JPEG_QUANTIZATION, inset_box
from imgdedup.core.views import extra_view


def paste(background: np.ndarray, photo: np.ndarray, size: float, x: float, y: float) -> tuple[np.ndarray, tuple[int, int, int, int]]:
    """`photo` pasted onto `background` as AugLy's overlay_onto_background_image does (its
    height `size` x the background's, its corner at (x, y) x the background's size, clipped at
    the border), and the box it covers."""
    h, w = background.shape[:2]
    ph = int(h * size)
    pw = int(photo.shape[1] * ph / photo.shape[0])
    x0, y0 = int(w * x), int(h * y)
    x1, y1 = min(w, x0 + pw), min(h, y0 + ph)
    out = background.copy()
    out[y0:y1, x0:x1] = cv2.resize(photo, (pw, ph), interpolation=cv2.INTER_AREA)[: y1 - y0, : x1 - x0]
    return out, (x0, y0, x1, y1)


@pytest.mark.parametrize("background, photo, size, x, y", [
    ("astronaut", "chelsea", 0.35, 0.1, 0.5),
    ("astronaut", "coffee", 0.4, 0.3, 0.2),
    ("chelsea", "rocket", 0.4, 0.3, 0.2),
    ("camera", "coffee", 0.5, 0.45, 0.4),  # runs off the right border: three sides
])
def test_the_detector_finds_a_pasted_photo(background, photo, size, x, y):
    composite, truth = paste(rgb(background), rgb(photo), size, x, y)
    found = inset_box(composite)
    assert found is not None
    tol = 2 * max(composite.shape[:2]) / 256 + 2  # found on a 256-px thumbnail, to a pixel or two
    assert max(abs(a - b) for a, b in zip(found, truth)) <= tol, (found, truth)


def test_a_box_coloured_like_its_surroundings_is_no_pasted_photo(monkeypatch):
    """A rectangle drawn on a photo (a window's frame, a screen's bezel) has the straight, full
    sides of a pasted photo's border, but the colours inside are those around it: no inset."""
    photo = rgb("astronaut").copy()
    box = (120, 200, 330, 400)
    cv2.rectangle(photo, box[:2], (box[2] - 1, box[3] - 1), (255, 255, 255), 2)
    monkeypatch.setattr(insets, "MIN_FOREIGN", 0.0)
    found = inset_box(photo)
    assert found is not None and max(abs(a - b) for a, b in zip(found, box)) <= 8, found  # its sides alone would do
    monkeypatch.undo()
    assert inset_box(photo) is None
    composite, _ = paste(photo, rgb("coffee"), 0.4, 0.23, 0.39)  # the same place, another photo's colours
    assert inset_box(composite) is not None


def test_a_photo_pasted_into_a_grey_image_is_found(monkeypatch):
    """A grey image has no hue or saturation to compare (their histograms inside and around any
    box are the same): its brightness histograms are compared instead."""
    def grey(a: np.ndarray) -> np.ndarray:
        return np.dstack([cv2.cvtColor(a, cv2.COLOR_RGB2GRAY)] * 3)
    composite, truth = paste(grey(rgb("chelsea")), grey(rgb("rocket")), 0.4, 0.3, 0.2)
    found = inset_box(composite)
    assert found is not None and max(abs(a - b) for a, b in zip(found, truth)) <= 6, (found, truth)
    monkeypatch.setattr(insets, "GREY_SATURATION", 0.0)  # hue and saturation even here
    assert inset_box(composite) is None


def test_the_detector_leaves_photos_alone():
    # On the dev set's photos it fires on ~14 % (windows, frames: each costs an embedding).
    for name in ("astronaut", "coffee", "chelsea", "camera", "rocket", "immunohistochemistry", "brick", "grass",
                 "gravel", "hubble_deep_field", "coins", "moon", "cell", "clock", "colorwheel", "logo"):
        assert inset_box(rgb(name)) is None, name


def _extra_view(data: bytes):
    """The extra view the server's engine embeds for these bytes (core/engine.py: _decode)."""
    facts = probe_image(data, max_pixels=10**8)
    decoded = decode_image(data, max_pixels=10**8, target_size=288, facts=facts)
    return facts, decoded, extra_view(decoded, facts)


def test_coarse_jpegs_are_not_searched():
    # At quality 5 the 8x8 block borders are straight edges everywhere: the detector finds a
    # "picture" in these three images (as in 45 of the hard set's 200 quality 5-15 copies, whose
    # blocky crops of different photos matched each other), so such JPEGs get no inset view.
    for name in ("chelsea", "immunohistochemistry", "logo"):
        facts, decoded, view = _extra_view(encode(rgb(name), quality=5))
        assert facts.jpeg_quantization > MAX_JPEG_QUANTIZATION
        assert inset_box(decoded.rgb) is not None, name
        assert view is None, name
    # A pasted photo in a JPEG of ordinary quality is still found.
    composite, _ = paste(rgb("astronaut"), rgb("chelsea"), 0.35, 0.1, 0.5)
    view = _extra_view(encode(composite, quality=75))[2]
    assert view is not None and view.inset  # kept as an inset view (tests/test_inset_pairs.py)


@pytest.fixture(scope="module")
def inset_stub(tmp_path_factory):
    with serving(tmp_path_factory.mktemp("insets"), "--inset-views") as stub:
        yield stub


def _clusters(stub, namespace: str) -> list[list[str]]:
    clusters = stub.ListClusters(pb.ListClustersRequest(namespace=namespace, min_size=1)).clusters
    return sorted(sorted(m.image_id for m in c.members) for c in clusters)


def _astronaut_copy() -> bytes:
    a = rgb("astronaut")
    return encode(cv2.resize(a, (400, 400), interpolation=cv2.INTER_AREA), quality=70)


def test_a_composite_joins_its_pasted_photo_and_links_no_clusters(inset_stub):
    stub, ns = inset_stub, "photos-first"
    composite, _ = paste(rgb("astronaut"), rgb("chelsea"), 0.35, 0.1, 0.5)
    astronaut = check(stub, encode(rgb("astronaut")), image_id="astronaut", add=True, namespace=ns)
    chelsea = check(stub, encode(rgb("chelsea")), image_id="chelsea", add=True, namespace=ns)
    assert astronaut.cluster_id != chelsea.cluster_id
    # The composite matches both photos (its whole image the one it was pasted on, its inset
    # view the pasted one) and joins the pasted photo's cluster, merging nothing.
    both = check(stub, encode(composite), image_id="composite", add=True, namespace=ns, top_k=5)
    assert {m.image_id for m in both.matches} == {"astronaut", "chelsea"}
    assert both.cluster_id == chelsea.cluster_id
    # A copy of the background photo matches the composite too, but it joins its own photo.
    again = check(stub, _astronaut_copy(), image_id="astronaut-copy", add=True, namespace=ns, top_k=5)
    assert {m.image_id for m in again.matches} == {"astronaut", "composite"}
    assert again.cluster_id == astronaut.cluster_id
    assert _clusters(stub, ns) == [["astronaut", "astronaut-copy"], ["chelsea", "composite"]]


def _composite_then_its_background(stub, ns: str) -> pb.CheckDuplicateResponse:
    """The cat pasted onto the astronaut, stored first; then the astronaut, which resembles the
    whole composite and joins it. Returns the composite's response."""
    composite, _ = paste(rgb("astronaut"), rgb("chelsea"), 0.35, 0.1, 0.5)
    first = check(stub, encode(composite), image_id="composite", add=True, namespace=ns)
    assert not first.matches
    astronaut = check(stub, encode(rgb("astronaut")), image_id="astronaut", add=True, namespace=ns)
    assert astronaut.cluster_id == first.cluster_id
    return first


def test_a_composite_stored_first_does_not_link_its_two_photos(inset_stub):
    stub, ns = inset_stub, "composite-first"
    first = _composite_then_its_background(stub, ns)
    # The pasted photo matches the composite through its inset view, but that cluster is the
    # astronaut's: one member of two resembles it, so it starts its own, and the composite,
    # which belongs with the picture pasted into it, follows it there (LinkRule.follows). The
    # astronaut's cluster keeps its id and gets the astronaut as its representative.
    chelsea = check(stub, encode(rgb("chelsea")), image_id="chelsea", add=True, namespace=ns, top_k=5)
    assert [m.image_id for m in chelsea.matches] == ["composite"]
    assert chelsea.cluster_id != first.cluster_id
    assert _clusters(stub, ns) == [["astronaut"], ["chelsea", "composite"]]
    listed = {c.cluster_id: c for c in stub.ListClusters(pb.ListClustersRequest(namespace=ns, min_size=1)).clusters}
    assert listed[first.cluster_id].size == 1 and listed[first.cluster_id].representative_id == "astronaut"
    assert listed[chelsea.cluster_id].size == 2
    # Later copies go where their photos are; the background's copy does not follow the composite.
    again = check(stub, _astronaut_copy(), image_id="astronaut-copy", add=True, namespace=ns, top_k=5)
    assert again.cluster_id == first.cluster_id
    assert _clusters(stub, ns) == [["astronaut", "astronaut-copy"], ["chelsea", "composite"]]


def test_a_composite_does_not_follow_another_composite_made_on_its_pasted_photo(inset_stub):
    stub, ns = inset_stub, "composite-on-composite"
    first = _composite_then_its_background(stub, ns)
    # Another composite whose background is the cat: its whole image matches the first one's
    # inset view, but a composite's whole is only the photo it was pasted on, so the first
    # composite stays where it is (it follows a picture, not another composite's background).
    other, _ = paste(rgb("chelsea"), rgb("coffee"), 0.35, 0.55, 0.1)
    second = check(stub, encode(other), image_id="other", add=True, namespace=ns, top_k=5)
    assert "composite" in [m.image_id for m in second.matches]
    assert second.cluster_id != first.cluster_id
    assert _clusters(stub, ns) == [["astronaut", "composite"], ["other"]]


def test_copies_of_the_pasted_photo_in_one_stream_all_find_the_composite_where_it_went(inset_stub):
    stub, ns = inset_stub, "follow-in-one-write"
    first = _composite_then_its_background(stub, ns)
    # Two copies of the pasted photo in one stream (one write, when they arrive together): the
    # second must see the composite in the first one's cluster, where it has just gone, and
    # join that cluster, not the astronaut's through it.
    cat = rgb("chelsea")
    items = [pb.BulkCheckRequest(image_id=f"chelsea-{q}", image=encode(cat, quality=q), add_to_index=True, namespace=ns, top_k=5)
             for q in (90, 70)]
    out = list(stub.BulkCheck(iter(items), timeout=60))
    assert [r.WhichOneof("outcome") for r in out] == ["result", "result"]
    assert out[0].result.cluster_id == out[1].result.cluster_id != first.cluster_id
    assert all(m.cluster_id == out[0].result.cluster_id for r in out for m in r.result.matches if m.image_id == "composite")
    assert _clusters(stub, ns) == [["astronaut"], ["chelsea-70", "chelsea-90", "composite"]]
