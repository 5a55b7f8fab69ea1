"""Conversions between the data plane's objects and protobuf messages, shared by the public
servicer, the index writer's service and its client."""

from __future__ import annotations

import numpy as np

from imgdedup._proto.dedup.internal.v1 import writer_pb2 as ipb
from imgdedup._proto.dedup.v1 import dedup_pb2 as pb
from imgdedup.core.backends import ClusterView
from imgdedup.core.match_modes import MatchKind
from imgdedup.core.priority import Priority
from imgdedup.core.rate_shares import Allotment
from imgdedup.storage.milvus import Hit

PRIORITY_TO_PB = {Priority.HIGH: pb.PRIORITY_HIGH, Priority.LOW: pb.PRIORITY_LOW}
PRIORITY_FROM_PB = {v: k for k, v in PRIORITY_TO_PB.items()}


def vector_bytes(v: np.ndarray) -> bytes:
    return np.ascontiguousarray(v, dtype="<f4").tobytes()


def vector_of(b: bytes) -> np.ndarray:
    return np.frombuffer(b, dtype="<f4")


def cluster_pb(v: ClusterView) -> pb.Cluster:
    return pb.Cluster(
        cluster_id=v.cluster_id,
        size=v.size,
        representative_id=v.representative_id,
        members=[pb.ClusterMember(image_id=i, similarity=s) for i, s in v.members],
    )


def cluster_view(c: pb.Cluster) -> ClusterView:
    return ClusterView(c.cluster_id, c.size, c.representative_id, [(m.image_id, m.similarity) for m in c.members])


def namespaces_pb(found: list[tuple[str, int, int]]) -> pb.ListNamespacesResponse:
    """(name, stored images, clusters of two or more) of each namespace, as the answer."""
    return pb.ListNamespacesResponse(namespaces=[pb.Namespace(name=n, indexed_images=i, clusters=c) for n, i, c in found])


def namespace_rows(answer: pb.ListNamespacesResponse) -> list[tuple[str, int, int]]:
    return [(n.name, n.indexed_images, n.clusters) for n in answer.namespaces]


def allotments_pb(allotments: dict[str, Allotment] | None) -> ipb.ShareRatesResponse:
    return ipb.ShareRatesResponse(allotments={
        n: ipb.RateAllotment(images_per_second=a.rate, burst=a.burst, fair_images_per_second=a.fair_rate, limit=a.limit)
        for n, a in (allotments or {}).items()
    })


def allotments_of(answer: ipb.ShareRatesResponse) -> dict[str, Allotment]:
    return {n: Allotment(a.images_per_second, a.burst, a.fair_images_per_second, a.limit) for n, a in answer.allotments.items()}


def match_pb(h: Hit, kind: MatchKind | None = None) -> pb.Match:
    return pb.Match(image_id=h.image_id, similarity=h.similarity, cluster_id=h.cluster_id, kind=kind or 0)


def hit_of(m: pb.Match) -> Hit:
    return Hit(m.image_id, m.similarity, m.cluster_id)
