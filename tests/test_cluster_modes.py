"""A namespace's cluster mode (the setting `cluster_modes`, core/match_modes.py: ClusterModes)
decides what links its images into clusters: another shot of a scene, or a heavily edited copy,
joins a cluster in a `duplicates` namespace and stays apart in a `copies` one, while a check
reports the match either way (with its kind)."""

from __future__ import annotations

import cv2
import numpy as np
import pytest

from conftest import ServerProcess, channel_for, check, encode, rgb
from imgdedup._proto.dedup.v1 import dedup_pb2 as pb
from imgdedup._proto.dedup.v1 import dedup_pb2_grpc as pb_grpc
from imgdedup.config import Settings
from imgdedup.core.match_modes import ClusterModes, MatchMode, MatchModes
from imgdedup.core.operating_point import OperatingPoint
from imgdedup.runtime import load_spec

SPEC = load_spec("sscd_disc_mixup")


def test_cluster_modes_by_namespace_with_a_default():
    modes = MatchModes.of(OperatingPoint(0.55), SPEC)
    named = ClusterModes.of({"albums": "near_duplicates", "*": "copies"}, modes)
    assert named("albums") == MatchMode.NEAR_DUPLICATES
    assert named("anything-else") == MatchMode.COPIES
    assert ClusterModes.of({}, modes)("default") == MatchMode.DUPLICATES
    # The thresholds the link rule runs at, for a small namespace.
    kinds = SPEC.search.kinds
    assert [modes.threshold(m, None, 10) for m in MatchMode] == [0.55, kinds.copy_similarity, kinds.near_duplicate_threshold]


def test_a_model_without_kinds_clusters_by_its_threshold_only():
    plain = MatchModes(OperatingPoint(0.55))
    assert ClusterModes.of({"a": "duplicates"}, plain)("a") == MatchMode.DUPLICATES
    with pytest.raises(ValueError, match="calibration of copies and near-duplicates"):
        ClusterModes.of({"a": "copies"}, plain)


def test_cluster_modes_settings_are_checked():
    assert Settings.load(None, cluster_modes={"photos": "copies", "*": "duplicates"}).cluster_modes == {"photos": "copies", "*": "duplicates"}
    with pytest.raises(ValueError, match="cluster_modes for invalid namespace names"):
        Settings.load(None, cluster_modes={"Bad Name": "copies"})
    with pytest.raises(ValueError):
        Settings.load(None, cluster_modes={"photos": "similar"})


def _rotated(img: np.ndarray, degrees: float) -> bytes:
    h, w = img.shape[:2]
    return encode(cv2.warpAffine(img, cv2.getRotationMatrix2D((w / 2, h / 2), degrees, 1.0), (w, h)), quality=93)


def _clusters(stub, namespace: str) -> list[set[str]]:
    resp = stub.ListClusters(pb.ListClustersRequest(namespace=namespace, min_size=1, page_size=100), timeout=60)
    return sorted(({m.image_id for m in c.members} for c in resp.clusters), key=len, reverse=True)


@pytest.fixture(scope="module")
def stub(tmp_path_factory):
    modes = '{"copies-only": "copies", "near": "near_duplicates"}'
    srv = ServerProcess(tmp_path_factory.mktemp("dedup-cluster-modes"), env={"DEDUP_CLUSTER_MODES": modes}).start()
    try:
        with channel_for(srv.target) as channel:
            yield pb_grpc.DedupServiceStub(channel)
    finally:
        assert srv.stop() == 0


def test_a_copies_namespace_keeps_other_shots_apart_and_still_reports_them(stub):
    photo = rgb("astronaut")
    images = [("photo", encode(photo)), ("re-encoded", encode(photo, quality=75)), ("rotated-25", _rotated(photo, 25))]
    answers = {}
    for namespace in ("grouped", "copies-only"):
        for image_id, data in images:
            answers[namespace, image_id] = check(stub, data, image_id=image_id, add=True, namespace=namespace)
        assert answers[namespace, "re-encoded"].matches[0].kind == pb.MATCH_KIND_COPY
    # The rotated photo scores between the threshold and copy_similarity (~0.77): a duplicate
    # by the threshold, of the near-duplicate kind.
    for namespace in ("grouped", "copies-only"):
        rotated = answers[namespace, "rotated-25"]
        assert rotated.is_duplicate and rotated.matches[0].kind == pb.MATCH_KIND_NEAR_DUPLICATE, rotated
    assert _clusters(stub, "grouped") == [{"photo", "re-encoded", "rotated-25"}]
    assert _clusters(stub, "copies-only") == [{"photo", "re-encoded"}, {"rotated-25"}]
    assert answers["copies-only", "rotated-25"].cluster_id != answers["copies-only", "photo"].cluster_id


def test_a_near_duplicates_namespace_groups_what_scores_under_the_threshold(stub):
    """A tight crop of a photo (similarity ~0.463) is under the default threshold (0.475) but
    over near_duplicate_threshold (0.45): apart in a `duplicates` namespace, grouped in a
    `near_duplicates` one."""
    photo = rgb("coffee")
    h, w = photo.shape[:2]
    crop = encode(np.ascontiguousarray(photo[int(h * 0.27): int(h * 0.75), int(w * 0.36): int(w * 0.75)]), quality=93)
    for namespace in ("grouped-2", "near"):
        check(stub, encode(photo), image_id="photo", add=True, namespace=namespace)
        stored = check(stub, crop, image_id="crop", add=True, namespace=namespace)
        # The call's own mode (the default) reports no match in either namespace.
        assert stored.stored and not stored.is_duplicate, stored
    assert sorted(_clusters(stub, "grouped-2"), key=sorted) == [{"crop"}, {"photo"}]
    assert _clusters(stub, "near") == [{"photo", "crop"}]
    # What links them there: a match in the near-duplicates mode, of the near-duplicate kind.
    other = check(stub, crop, namespace="grouped-2", match_mode=pb.MATCH_MODE_NEAR_DUPLICATES, top_k=2)
    assert {m.image_id for m in other.matches} == {"crop", "photo"}  # itself (stored), and the photo
