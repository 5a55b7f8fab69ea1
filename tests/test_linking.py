"""The cluster-link rule (core/linking.py): an image merges the clusters it resembles, and a
composite of two photos does not merge their clusters."""

from __future__ import annotations

import cv2
import numpy as np
import pytest

from conftest import check, encode, rgb, serving
from imgdedup._proto.dedup.v1 import dedup_pb2 as pb
from imgdedup.core.linking import LinkRule

RULE = LinkRule(0.55, support=0.6, floor=0.3, sample=8)


def test_a_match_to_one_cluster_joins_it_and_no_match_starts_one():
    assert RULE.clusters_to_join([("a", 0.56), ("a", 0.9), ("b", 0.4)], lambda c: pytest.fail("sizes not needed")) == ["a"]
    assert RULE.clusters_to_join([("a", 0.54), ("b", 0.2)], lambda c: 1) == []
    assert RULE.clusters_to_join([], lambda c: 1) == []


def test_an_image_merges_only_the_clusters_it_resembles():
    sizes = {"copies": 10, "other": 10}
    # Near 6 of "copies" (>= 0.6 x 8 sampled), near one member of "other" (the photo it shows too).
    hits = [("copies", 0.8)] + [("copies", 0.35)] * 5 + [("other", 0.9)]
    assert RULE.clusters_to_join(hits, sizes.__getitem__) == ["copies"]
    # Near 5 of each: both merge, best match first.
    hits = [("copies", 0.6)] + [("copies", 0.4)] * 4 + [("other", 0.7)] + [("other", 0.31)] * 4
    assert RULE.clusters_to_join(hits, sizes.__getitem__) == ["other", "copies"]
    # Small clusters need a share of their own size: 1 of 1 merges, 1 of 2 does not.
    assert RULE.clusters_to_join([("a", 0.6), ("b", 0.6)], {"a": 1, "b": 1}.__getitem__) == ["a", "b"]
    assert RULE.clusters_to_join([("a", 0.7), ("b", 0.6)], {"a": 2, "b": 1}.__getitem__) == ["b"]
    # Resembling none of them: the best match's cluster alone.
    assert RULE.clusters_to_join([("a", 0.6), ("b", 0.7)], {"a": 4, "b": 4}.__getitem__) == ["b"]
    # Support off: single linkage, every matched cluster.
    plain = LinkRule(0.55, support=0.0)
    assert sorted(plain.clusters_to_join([("a", 0.6), ("b", 0.7)], {"a": 4, "b": 4}.__getitem__)) == ["a", "b"]


def test_links_through_an_image_with_a_view_need_resemblance():
    sizes = {"pasted": 3, "background": 2, "alone": 1}
    # Only a composite (a stored image with an extra view) links "pasted": a copy of the photo
    # the composite was pasted on does not join, even though it links no other cluster...
    hits = [("pasted", 0.8), ("pasted", 0.1), ("pasted", 0.05)]
    assert RULE.clusters_to_join(hits, sizes.__getitem__, through_views={"pasted"}) == []
    # ...unless it resembles that cluster, as a copy of the pasted photo does.
    hits = [("pasted", 0.8), ("pasted", 0.6), ("pasted", 0.5)]
    assert RULE.clusters_to_join(hits, sizes.__getitem__, through_views={"pasted"}) == ["pasted"]
    # A plain match elsewhere wins over a cluster it does not resemble.
    hits = [("pasted", 0.9), ("background", 0.6), ("background", 0.5)]
    assert RULE.clusters_to_join(hits, sizes.__getitem__, through_views={"pasted"}) == ["background"]
    # Without the rule's support (single linkage) nothing changes.
    plain = LinkRule(0.55, support=0.0)
    assert plain.clusters_to_join([("pasted", 0.8)], sizes.__getitem__, through_views={"pasted"}) == ["pasted"]


def test_an_image_with_a_view_joins_one_cluster_its_view_first():
    sizes = {"pasted": 1, "background": 1}
    hits = [("background", 0.9), ("pasted", 0.7)]
    # It resembles both; a plain image would merge them.
    assert RULE.clusters_to_join(hits, sizes.__getitem__) == ["background", "pasted"]
    # With a view that links "pasted", it joins that cluster alone.
    assert RULE.clusters_to_join(hits, sizes.__getitem__, own_view=["pasted"]) == ["pasted"]
    # Its view links nothing: the best match alone, still no merge.
    assert RULE.clusters_to_join(hits, sizes.__getitem__, own_view=[]) == ["background"]


def test_regroup_replays_the_rule_in_insertion_order():
    # 0: photo A; 1: a composite of A and B; 2: a copy of B; 3: photo B. The composite is near
    # A and B, A and B are unrelated.
    sims = np.array([
        [1.0, 0.6, 0.0, 0.0],
        [0.6, 1.0, 0.4, 0.6],
        [0.0, 0.4, 1.0, 0.9],
        [0.0, 0.6, 0.9, 1.0],
    ])
    assert LinkRule(0.55, support=0.6).regroup(sims) == [[0, 1], [2, 3]]
    assert LinkRule(0.55, support=0.0).regroup(sims) == [[0, 1, 2, 3]]
    # Stored in another order (B's two images, the composite, then A): A matches one cluster
    # only, and joins it; the rule chooses between clusters, it does not refuse a match.
    assert LinkRule(0.55, support=0.6).regroup(sims, [3, 2, 1, 0]) == [[3, 2, 1, 0]]


def _side_by_side(a: np.ndarray, b: np.ndarray, height_a: int = 384, height_b: int = 320) -> np.ndarray:
    """a and b next to each other on white, top-aligned."""
    a = cv2.resize(a, (a.shape[1] * height_a // a.shape[0], height_a), interpolation=cv2.INTER_AREA)
    b = cv2.resize(b, (b.shape[1] * height_b // b.shape[0], height_b), interpolation=cv2.INTER_AREA)
    canvas = np.full((max(height_a, height_b), a.shape[1] + b.shape[1], 3), 255, np.uint8)
    canvas[:height_a, : a.shape[1]] = a
    canvas[:height_b, a.shape[1]:] = b
    return canvas


@pytest.fixture(scope="module")
def composite_server(tmp_path_factory):
    # Measured with the default model: the astronaut|coffee composite scores ~0.44 with the
    # astronaut and ~0.49 with the coffee photo, the coffee's centre crop ~0.62 with the coffee
    # and ~0.25 with the composite; the two photos ~0.04. At threshold 0.40 the composite
    # matches both photos.
    with serving(tmp_path_factory.mktemp("composite"), "--threshold", "0.40") as stub:
        yield stub


def test_a_composite_of_two_photos_does_not_merge_their_clusters(composite_server):
    stub = composite_server
    astronaut, coffee = rgb("astronaut"), rgb("coffee")
    a = check(stub, encode(astronaut), image_id="astronaut", add=True)
    both = check(stub, encode(_side_by_side(astronaut, coffee)), image_id="composite", add=True)
    assert both.cluster_id == a.cluster_id  # the composite joins the photo it shows
    h, w = coffee.shape[:2]
    crop = check(stub, encode(np.ascontiguousarray(coffee[h // 5 : h * 4 // 5, w // 5 : w * 4 // 5])), image_id="coffee-crop", add=True)
    assert crop.cluster_id != a.cluster_id
    # The coffee photo matches the composite and its crop: single linkage would merge the
    # astronaut's cluster into the coffee's; it resembles one of that cluster's two members.
    c = check(stub, encode(coffee), image_id="coffee", add=True, top_k=5)
    assert {m.image_id for m in c.matches} == {"composite", "coffee-crop"}
    assert c.cluster_id == crop.cluster_id

    clusters = stub.ListClusters(pb.ListClustersRequest()).clusters
    assert sorted(sorted(m.image_id for m in cl.members) for cl in clusters) == [["astronaut", "composite"], ["coffee", "coffee-crop"]]

    # A delete regroups by the same rule: the composite's cluster keeps the astronaut.
    stub.DeleteImages(pb.DeleteImagesRequest(image_ids=["coffee-crop"]))
    singles = stub.ListClusters(pb.ListClustersRequest(min_size=1)).clusters
    assert sorted(sorted(m.image_id for m in cl.members) for cl in singles) == [["astronaut", "composite"], ["coffee"]]
