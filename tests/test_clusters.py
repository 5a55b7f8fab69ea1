"""Clusters: the connected groups of the duplicate relation, stored in Milvus."""

from __future__ import annotations

import cv2
import grpc
import numpy as np
import pytest

from conftest import check, encode, rgb, serving
from imgdedup._proto.dedup.v1 import dedup_pb2 as pb


def _list_all(stub, **kw):
    clusters, token, pages = [], "", 0
    while True:
        resp = stub.ListClusters(pb.ListClustersRequest(page_token=token, **kw))
        clusters += resp.clusters
        pages += 1
        token = resp.next_page_token
        if not token:
            return clusters, pages, resp.total_size


def test_clusters_group_copies_with_the_largest_as_representative(stub):
    small = cv2.resize(rgb("astronaut"), (256, 256), interpolation=cv2.INTER_AREA)
    check(stub, encode(small), image_id="astro-small", add=True)
    check(stub, encode(rgb("astronaut")), image_id="astro-full", add=True)  # 512x512: most pixels
    check(stub, encode(rgb("astronaut")[:, ::-1]), image_id="astro-flip", add=True)  # same size, later
    check(stub, encode(rgb("coffee")), image_id="coffee", add=True)
    check(stub, encode(rgb("coffee")[::-1]), image_id="coffee-vflip", add=True)
    check(stub, encode(rgb("rocket")), image_id="rocket", add=True)  # a singleton

    clusters, _, total = _list_all(stub)
    assert total == 2 and len(clusters) == 2
    by_rep = {c.representative_id: c for c in clusters}
    assert set(by_rep) == {"astro-full", "coffee"}
    astro = by_rep["astro-full"]
    assert astro.size == 3 and clusters[0].cluster_id == astro.cluster_id  # largest first
    assert [m.image_id for m in astro.members][0] == "astro-full"
    assert astro.members[0].similarity == pytest.approx(1.0)
    assert {m.image_id for m in astro.members} == {"astro-small", "astro-full", "astro-flip"}
    threshold = stub.GetInfo(pb.GetInfoRequest()).default_threshold
    assert all(threshold <= m.similarity <= 1.0001 for m in astro.members)

    singles, _, total_all = _list_all(stub, min_size=1)
    assert total_all == 3 and any(c.representative_id == "rocket" and c.size == 1 for c in singles)

    got = stub.GetCluster(pb.GetClusterRequest(cluster_id=astro.cluster_id))
    assert got == astro


def test_pagination_walks_every_cluster_once(stub):
    for name in ("chelsea", "camera", "retina", "hubble_deep_field"):
        a = rgb(name)
        check(stub, encode(a), image_id=f"{name}-1", add=True)
        check(stub, encode(np.ascontiguousarray(a[:, ::-1])), image_id=f"{name}-2", add=True)
    everything, _, total = _list_all(stub, page_size=100)
    paged, pages, _ = _list_all(stub, page_size=2)
    assert total == len(everything) >= 6
    assert pages == (total + 1) // 2
    assert [c.cluster_id for c in paged] == [c.cluster_id for c in everything]
    sizes = [c.size for c in paged]
    assert sizes == sorted(sizes, reverse=True)


def test_page_tokens_are_validated(stub):
    with pytest.raises(grpc.RpcError) as err:
        stub.ListClusters(pb.ListClustersRequest(page_token="forged-token"))
    assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    first = stub.ListClusters(pb.ListClustersRequest(page_size=1))
    assert first.next_page_token
    with pytest.raises(grpc.RpcError) as err:  # a token is tied to the query that made it
        stub.ListClusters(pb.ListClustersRequest(page_size=1, page_token=first.next_page_token, min_size=3))
    assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    with pytest.raises(grpc.RpcError) as err:
        stub.ListClusters(pb.ListClustersRequest(page_size=5000))
    assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT


def test_get_unknown_cluster_is_not_found(stub):
    with pytest.raises(grpc.RpcError) as err:
        stub.GetCluster(pb.GetClusterRequest(cluster_id="c-does-not-exist"))
    assert err.value.code() == grpc.StatusCode.NOT_FOUND


@pytest.fixture(scope="module")
def bridge_server(tmp_path_factory):
    # Halves of a photo match the whole photo (cosine ~0.68-0.70) but not each other (~0.40):
    # at threshold 0.6 the whole photo is the only bridge between them.
    with serving(tmp_path_factory.mktemp("bridge"), "--threshold", "0.6") as stub:
        yield stub


def test_bridging_image_merges_clusters_and_deleting_it_splits_them(bridge_server):
    stub = bridge_server
    a = rgb("astronaut")
    w = a.shape[1]
    left = check(stub, encode(np.ascontiguousarray(a[:, : int(w * 0.55)])), image_id="left", add=True)
    right = check(stub, encode(np.ascontiguousarray(a[:, int(w * 0.45):])), image_id="right", add=True)
    assert left.cluster_id != right.cluster_id and not right.is_duplicate
    whole = check(stub, encode(a), image_id="whole", add=True)
    assert {m.image_id for m in whole.matches} == {"left", "right"}

    (merged,) = stub.ListClusters(pb.ListClustersRequest()).clusters
    assert merged.size == 3 and merged.representative_id == "whole"
    assert merged.cluster_id == whole.cluster_id
    # Matches reported after the merge point at the surviving cluster.
    again = check(stub, encode(a[:, : int(w * 0.55)].copy()))
    assert again.matches[0].cluster_id == merged.cluster_id

    deleted = stub.DeleteImages(pb.DeleteImagesRequest(image_ids=["whole", "nope"]))
    assert list(deleted.deleted_ids) == ["whole"] and list(deleted.not_found_ids) == ["nope"]
    assert stub.ListClusters(pb.ListClustersRequest()).total_size == 0
    singles = stub.ListClusters(pb.ListClustersRequest(min_size=1)).clusters
    assert sorted((c.representative_id, c.size) for c in singles) == [("left", 1), ("right", 1)]
    assert len({c.cluster_id for c in singles}) == 2
    info = stub.GetInfo(pb.GetInfoRequest())
    assert info.indexed_images == 2

    stub.DeleteImages(pb.DeleteImagesRequest(image_ids=["left", "right"]))
    assert stub.ListClusters(pb.ListClustersRequest(min_size=1)).total_size == 0
    assert stub.GetInfo(pb.GetInfoRequest()).indexed_images == 0


def test_ids_with_quotes_backslashes_and_unicode_round_trip(stub):
    odd = ["jack-o'-lantern.jpg", 'say "cheese".png', "back\\slash", "ünïcödé/写真.jpg", "x' or 1=1 or id=''"]
    a = rgb("rocket")
    for i, image_id in enumerate(odd):
        r = check(stub, encode(np.ascontiguousarray(a[:, ::-1] if i % 2 else a), quality=90 - i), image_id=image_id, add=True)
        assert r.image_id == image_id and r.stored
    cluster = stub.GetCluster(pb.GetClusterRequest(cluster_id=r.cluster_id))
    assert set(odd) <= {m.image_id for m in cluster.members}
    resp = stub.DeleteImages(pb.DeleteImagesRequest(image_ids=odd))
    assert sorted(resp.deleted_ids) == sorted(odd)
    remaining = {m.image_id for m in stub.GetCluster(pb.GetClusterRequest(cluster_id=r.cluster_id)).members}
    assert remaining.isdisjoint(odd) and "rocket" in remaining
