"""Content views: a photo shown small inside a screenshot, or padded, is matched by its content,
in either order of arrival, and its extra view follows the image through clusters and deletes."""

from __future__ import annotations

import cv2
import numpy as np
import pytest

from conftest import ServerProcess, channel_for, check, encode, rgb
from imgdedup._proto.dedup.v1 import dedup_pb2 as pb
from imgdedup._proto.dedup.v1 import dedup_pb2_grpc as pb_grpc
from imgdedup.core.images import decode_image, probe_image
from imgdedup.core.views import content_box, extra_view


def screenshot(photo: np.ndarray) -> np.ndarray:
    """A phone-style screenshot: the photo in a 1-px frame on a white page with a title bar and
    grey text lines; the photo covers ~12 % of the canvas."""
    h, w = photo.shape[:2]
    cw, ch = int(w / 0.6), int(w / 0.6 * 19.5 / 9)
    canvas = np.full((ch, cw, 3), 255, np.uint8)
    canvas[: ch // 16] = (222, 222, 230)
    cv2.circle(canvas, (ch // 32, ch // 32), ch // 80, (237, 106, 94), -1)
    x0, y0 = (cw - w) // 2, ch // 8
    canvas[y0 - 1: y0 + h + 1, x0 - 1: x0 + w + 1] = 120
    canvas[y0: y0 + h, x0: x0 + w] = photo
    for y in range(y0 + h + 30, ch - 20, 24):
        canvas[y: y + 9, x0: x0 + int(w * (0.5 + 0.4 * ((y // 24) % 2)))] = 215
    return canvas


def padded(photo: np.ndarray) -> np.ndarray:
    h, w = photo.shape[:2]
    return cv2.copyMakeBorder(photo, h // 2, h // 2, w // 3, w // 3, cv2.BORDER_CONSTANT, value=(20, 20, 20))


def test_the_detector_finds_the_photo_and_leaves_ordinary_photos_alone():
    photo = rgb("coffee")
    shot = screenshot(photo)
    x0, y0, x1, y1 = content_box(shot)
    h, w = photo.shape[:2]
    ty0, tx0 = shot.shape[0] // 8, (shot.shape[1] - w) // 2
    tol = max(shot.shape) / 256 + 2  # found on a 256-px thumbnail: one thumbnail pixel, plus the frame
    assert max(abs(x0 - tx0), abs(y0 - ty0), abs(x1 - (tx0 + w)), abs(y1 - (ty0 + h))) <= tol
    assert content_box(padded(rgb("astronaut"))) is not None
    data = encode(shot)
    facts = probe_image(data, max_pixels=10**8)
    view = extra_view(decode_image(data, max_pixels=10**8, facts=facts), facts)
    assert view is not None and not view.inset  # a content view, not an inset view
    # Most photos have no plain border. (Some do, e.g. skimage's rocket against a dark sky: they
    # get an extra view, which costs an embedding and changes no answer.)
    for name in ("astronaut", "coffee", "chelsea", "camera", "immunohistochemistry"):
        assert content_box(rgb(name)) is None, name


@pytest.fixture(scope="module")
def view_stub(tmp_path_factory):
    srv = ServerProcess(tmp_path_factory.mktemp("views")).start()
    with channel_for(srv.target) as channel:
        yield pb_grpc.DedupServiceStub(channel)
    srv.stop()


def test_a_screenshot_matches_its_photo_in_either_order(view_stub):
    coffee, chelsea = rgb("coffee"), rgb("chelsea")
    # photo stored first, screenshot checked
    stored = check(view_stub, encode(coffee), image_id="coffee", add=True)
    shot = check(view_stub, encode(screenshot(coffee)), image_id="coffee-shot", add=True)
    assert shot.is_duplicate and shot.matches[0].image_id == "coffee"
    assert shot.cluster_id == stored.cluster_id
    # screenshot stored first, photo checked: found through the stored content view
    check(view_stub, encode(screenshot(chelsea)), image_id="chelsea-shot", add=True)
    photo = check(view_stub, encode(chelsea, quality=80), image_id="chelsea")
    assert photo.is_duplicate and photo.matches[0].image_id == "chelsea-shot"
    # different photos in the same screenshot layout stay apart
    assert "coffee" not in [m.image_id for m in photo.matches] and "coffee-shot" not in [m.image_id for m in photo.matches]
    cluster = view_stub.GetCluster(pb.GetClusterRequest(cluster_id=stored.cluster_id))
    assert sorted(m.image_id for m in cluster.members) == ["coffee", "coffee-shot"]
    assert min(m.similarity for m in cluster.members) >= shot.threshold  # best pair of views


def test_views_follow_their_image_through_deletes(view_stub):
    rocket = rgb("rocket")
    first = check(view_stub, encode(rocket), image_id="rocket", add=True)
    check(view_stub, encode(padded(rocket)), image_id="rocket-padded", add=True)
    check(view_stub, encode(rocket[:, ::-1].copy()), image_id="rocket-flip", add=True)
    # Deleting the original re-splits the cluster by the best pair of views: the padded copy
    # (linked to the flip only through its content view) stays with the flip.
    view_stub.DeleteImages(pb.DeleteImagesRequest(image_ids=["rocket"]))
    left = check(view_stub, encode(padded(rocket)), image_id="rocket-padded", add=True)  # idempotent re-send
    flip = view_stub.GetCluster(pb.GetClusterRequest(cluster_id=left.cluster_id))
    assert sorted(m.image_id for m in flip.members) == ["rocket-flip", "rocket-padded"], first.cluster_id
    # Deleting the padded copy deletes its view too: the photo no longer matches it.
    view_stub.DeleteImages(pb.DeleteImagesRequest(image_ids=["rocket-padded", "rocket-flip"]))
    again = check(view_stub, encode(rocket, quality=75))
    assert [m.image_id for m in again.matches] == []


def test_regroup_and_pairwise_similarity_agree():
    """Delete regroups clusters with _regroup; checks link with image_similarity: the same
    relation, views and the whole-image rule included (random unit vectors). With the link
    rule's support off, the regroup is the connected groups of that relation."""
    from imgdedup.core.index import _regroup, image_similarity
    from imgdedup.core.linking import LinkRule
    from imgdedup.storage.milvus import ImageRow

    rng = np.random.default_rng(7)

    def unit(*shape):
        v = rng.standard_normal((*shape, 16)).astype(np.float32)
        return v / np.linalg.norm(v, axis=-1, keepdims=True)

    for trial in range(30):
        rows = [ImageRow(f"i{k}", "c", 1, 0, "", v) for k, v in enumerate(unit(8))]
        extra = {f"i{k}": list(unit(int(rng.integers(1, 3)))) for k in rng.choice(8, 4, replace=False)}
        insets = {i for i in extra if rng.random() < 0.5}  # inset views: their pairs count from INSET_PAIR_MIN
        views = {r.image_id: [r.vector, *extra.get(r.image_id, [])] for r in rows}
        threshold = 0.3
        parent = {r.image_id: r.image_id for r in rows}

        def find(x):
            while parent[x] != x:
                x = parent[x]
            return x

        for a in rows:
            for b in rows:
                kinds = {"a_inset": a.image_id in insets, "b_inset": b.image_id in insets}
                if a.image_id < b.image_id and image_similarity(views[a.image_id], views[b.image_id], **kinds) >= threshold:
                    parent[find(a.image_id)] = find(b.image_id)
        expected = sorted(sorted(i for i in parent if find(i) == root) for root in {find(i) for i in parent})
        got = sorted(sorted(r.image_id for r in comp) for comp in _regroup(rows, extra, LinkRule(threshold, support=0.0), insets))
        assert got == expected, trial


def test_a_writes_pairwise_matrix_is_image_similarity_of_each_pair():
    """IndexWriter compares the images of one write with each other in one matrix (_pairwise);
    every entry off the diagonal must be what image_similarity gives that pair, views and the
    whole-image rule included (random unit vectors, some images with 1-2 views)."""
    from imgdedup.core.index import _pairwise, image_similarity

    rng = np.random.default_rng(11)

    def unit(n):
        v = rng.standard_normal((n, 32)).astype(np.float32)
        return list(v / np.linalg.norm(v, axis=-1, keepdims=True))

    for trial in range(40):
        images = [unit(1 + int(rng.integers(0, 3)) * int(rng.random() < 0.4)) for _ in range(int(rng.integers(2, 12)))]
        insets = [len(views) > 1 and rng.random() < 0.5 for views in images]
        got = _pairwise(images, insets)
        assert got.shape == (len(images), len(images))
        for i, a in enumerate(images):
            for j, b in enumerate(images):
                if i != j:
                    assert abs(got[i, j] - image_similarity(a, b, a_inset=insets[i], b_inset=insets[j])) < 1e-5, (trial, i, j)
