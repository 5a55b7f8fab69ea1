"""Edited copies of an indexed photo are found; different photos are not."""

from __future__ import annotations

import cv2
import numpy as np
import pytest

from conftest import check, encode, rgb


@pytest.fixture(scope="module")
def indexed(stub):
    """The originals, stored once for this module."""
    for name in ("astronaut", "coffee", "rocket"):
        r = check(stub, encode(rgb(name)), image_id=name, add=True)
        assert r.stored and r.cluster_id and not r.is_duplicate
    return stub


def _crop(a):
    h, w = a.shape[:2]
    return a[int(h * 0.08): int(h * 0.92), int(w * 0.06): int(w * 0.90)]


EDITS = {
    "crop": _crop,
    "hflip": lambda a: a[:, ::-1],
    "vflip": lambda a: a[::-1],
    "brighter": lambda a: np.clip(a.astype(np.float32) * 1.4, 0, 255).astype(np.uint8),
    "darker": lambda a: (a.astype(np.float32) * 0.65).astype(np.uint8),
    "grey": lambda a: cv2.cvtColor(a, cv2.COLOR_RGB2GRAY),
    "downscaled": lambda a: cv2.resize(a, (a.shape[1] // 3, a.shape[0] // 3), interpolation=cv2.INTER_AREA),
    "squashed": lambda a: cv2.resize(a, (a.shape[1], a.shape[0] // 2), interpolation=cv2.INTER_AREA),
}


@pytest.mark.parametrize("edit", sorted(EDITS))
@pytest.mark.parametrize("original", ["astronaut", "coffee"])
def test_edited_copy_is_a_duplicate(indexed, original, edit):
    copy = np.ascontiguousarray(EDITS[edit](rgb(original)))
    r = check(indexed, encode(copy), top_k=3)
    assert r.is_duplicate, f"{edit} copy of {original} not found"
    assert r.matches[0].image_id == original
    assert r.threshold <= r.matches[0].similarity <= 1.0001
    assert not r.stored and not r.cluster_id


def test_heavily_recompressed_png_and_webp_copies(indexed):
    a = rgb("rocket")
    for blob in (encode(a, ".jpg", quality=25), encode(a, ".png"), encode(a, ".webp")):
        r = check(indexed, blob)
        assert r.is_duplicate and r.matches[0].image_id == "rocket"


@pytest.mark.parametrize("other", ["chelsea", "camera", "hubble_deep_field", "retina"])
def test_different_photo_is_not_a_duplicate(indexed, other):
    r = check(indexed, encode(rgb(other)))
    assert not r.is_duplicate
    assert list(r.matches) == []


def test_per_call_threshold_and_top_k(indexed):
    copy = encode(EDITS["crop"](rgb("astronaut")))
    loose = check(indexed, copy, threshold=0.02, top_k=3)
    assert loose.matches[0].image_id == "astronaut"
    sims = [m.similarity for m in loose.matches]
    assert sims == sorted(sims, reverse=True) and min(sims) >= 0.02
    assert len(check(indexed, copy, threshold=0.02, top_k=1).matches) == 1
    strict = check(indexed, copy, threshold=0.9999)
    assert not strict.is_duplicate and strict.threshold == pytest.approx(0.9999)


def test_response_reports_image_facts_and_timings(indexed):
    a = rgb("coffee")
    r = check(indexed, encode(a, ".png"))
    assert (r.width, r.height, r.format) == (a.shape[1], a.shape[0], "PNG")
    t = r.timings
    assert t.total_ms > 0 and t.embed_ms > 0 and t.total_ms >= t.decode_ms + t.embed_ms + t.index_ms - 1.0


def test_server_assigns_ids_and_stores(indexed):
    r = check(indexed, encode(rgb("camera")), add=True)
    assert len(r.image_id) == 32 and r.stored and r.cluster_id
    again = check(indexed, encode(rgb("camera")))
    assert again.is_duplicate and again.matches[0].image_id == r.image_id
    assert again.matches[0].cluster_id == r.cluster_id


def test_resending_the_same_id_is_idempotent(indexed):
    blob = encode(rgb("hubble_deep_field"))
    first = check(indexed, blob, image_id="hubble", add=True)
    second = check(indexed, blob, image_id="hubble", add=True)
    assert second.stored and second.cluster_id == first.cluster_id
    assert [m.image_id for m in second.matches] == []  # never a duplicate of itself
    from imgdedup._proto.dedup.v1 import dedup_pb2 as pb

    cluster = indexed.GetCluster(pb.GetClusterRequest(cluster_id=first.cluster_id))
    assert [m.image_id for m in cluster.members] == ["hubble"] and cluster.size == 1


def test_identical_bytes_take_the_exact_duplicate_fast_path(indexed):
    blob = encode(rgb("coffee"))  # the same bytes the fixture stored as "coffee"
    r = check(indexed, blob, top_k=1)
    assert r.exact_duplicate and r.is_duplicate
    assert r.matches[0].image_id == "coffee" and r.matches[0].similarity > 0.999
    assert (r.width, r.height, r.format) == (600, 400, "JPEG")
    other = check(indexed, encode(rgb("coffee"), quality=89))  # same pixels, other bytes
    assert not other.exact_duplicate and other.is_duplicate
