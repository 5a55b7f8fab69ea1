"""BulkCheck: one response per request, in order; duplicates inside one stream; bad items."""

from __future__ import annotations

import numpy as np
from google.rpc import code_pb2, error_details_pb2

from conftest import encode, rgb
from imgdedup._proto.dedup.v1 import dedup_pb2 as pb


def test_bulk_finds_duplicates_inside_one_stream_and_survives_bad_items(stub):
    a, c = rgb("astronaut"), rgb("coffee")
    items = [
        ("a", encode(a)),
        ("c", encode(c)),
        ("bad-empty", b""),
        ("a-flip", encode(np.ascontiguousarray(a[:, ::-1]))),
        ("bad-garbage", b"\x00\x01not an image at all" * 10),
        ("c-dark", encode((c * 0.7).astype(np.uint8))),
        ("r", encode(rgb("rocket"))),
    ]
    reqs = [pb.BulkCheckRequest(image_id=i, image=b, add_to_index=True) for i, b in items]
    responses = list(stub.BulkCheck(iter(reqs), timeout=120))

    assert [r.image_id for r in responses] == [i for i, _ in items]
    assert [r.index for r in responses] == list(range(len(items)))
    by_id = {r.image_id: r for r in responses}
    for bad in ("bad-empty", "bad-garbage"):
        assert by_id[bad].WhichOneof("outcome") == "error"
        assert by_id[bad].error.code == code_pb2.INVALID_ARGUMENT
        detail = error_details_pb2.BadRequest()
        assert any(d.Unpack(detail) for d in by_id[bad].error.details)
        assert detail.field_violations[0].field == "image"
    ok = {k: v.result for k, v in by_id.items() if v.WhichOneof("outcome") == "result"}
    assert all(r.stored for r in ok.values())
    assert ok["a-flip"].is_duplicate and ok["a-flip"].matches[0].image_id == "a"
    assert ok["c-dark"].is_duplicate and ok["c-dark"].matches[0].image_id == "c"
    assert ok["a-flip"].cluster_id == ok["a"].cluster_id
    assert ok["c-dark"].cluster_id == ok["c"].cluster_id != ok["a"].cluster_id
    assert not ok["r"].is_duplicate


def test_stream_items_are_checked_in_request_order(stub):
    """Many copies of one photo in one burst: one cluster, and only the first item is new, even
    though it is the slowest to decode (a big PNG) and the later small JPEGs overtake it."""
    import cv2

    h = rgb("hubble_deep_field")
    big = encode(cv2.resize(h, (2400, 2400), interpolation=cv2.INTER_CUBIC), ".png")
    small = cv2.resize(h, (160, 160), interpolation=cv2.INTER_AREA)
    blobs = [big] + [encode(small, quality=q) for q in (95, 90, 85, 80, 75, 70, 65)]
    reqs = [pb.BulkCheckRequest(image_id=f"h{i}", image=b, add_to_index=True) for i, b in enumerate(blobs)]
    results = [r.result for r in stub.BulkCheck(iter(reqs), timeout=120)]
    assert [r.is_duplicate for r in results] == [False] + [True] * (len(blobs) - 1)
    assert len({r.cluster_id for r in results}) == 1
    assert all("h0" in {m.image_id for m in r.matches} or len(r.matches) == 5 for r in results[1:])
    cluster = stub.GetCluster(pb.GetClusterRequest(cluster_id=results[0].cluster_id))
    assert cluster.size == len(blobs) and cluster.representative_id == "h0"  # most pixels


def test_long_stream_keeps_order(stub):
    photos = [rgb(n) for n in ("astronaut", "coffee", "chelsea", "rocket", "camera")]
    reqs = [pb.BulkCheckRequest(image_id=f"s{i}", image=encode(photos[i % 5], quality=60 + i % 30)) for i in range(60)]
    responses = list(stub.BulkCheck(iter(reqs), timeout=300))
    assert [r.index for r in responses] == list(range(60))
    assert all(r.WhichOneof("outcome") == "result" for r in responses)


def test_a_failing_item_does_not_let_later_items_overtake_earlier_ones(stub):
    """The original is slow to decode (big PNG); a bad item after it fails at once; the small
    copy after that must still be checked after the original is stored."""
    import cv2

    r = rgb("retina")
    big = encode(cv2.resize(r, (2400, 2400), interpolation=cv2.INTER_CUBIC), ".png")
    small = encode(cv2.resize(r, (200, 200), interpolation=cv2.INTER_AREA))
    reqs = [
        pb.BulkCheckRequest(image_id="retina-big", image=big, add_to_index=True),
        pb.BulkCheckRequest(image_id="broken", image=b"\x00garbage", add_to_index=True),
        pb.BulkCheckRequest(image_id="retina-small", image=small, add_to_index=True),
    ]
    first, bad, copy = stub.BulkCheck(iter(reqs), timeout=120)
    assert bad.WhichOneof("outcome") == "error"
    assert not first.result.is_duplicate
    assert copy.result.is_duplicate and copy.result.matches[0].image_id == "retina-big"
