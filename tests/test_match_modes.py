"""Copies and near-duplicates (core/match_modes.py): a call's match_mode decides what it reports,
and each match says which kind it probably is, by the model spec's [search.kinds]."""

from __future__ import annotations

import grpc
import numpy as np
import pytest
from google.rpc import error_details_pb2, status_pb2

from conftest import check, encode, rgb
from imgdedup._proto.dedup.v1 import dedup_pb2 as pb
from imgdedup.core.errors import FailedPrecondition
from imgdedup.core.match_modes import MatchKind, MatchMode, MatchModes
from imgdedup.core.operating_point import OperatingPoint
from imgdedup.runtime import load_spec

SPEC = load_spec("sscd_disc_mixup")
KINDS = SPEC.search.kinds


def test_the_default_model_is_calibrated_between_its_thresholds():
    assert KINDS is not None
    assert KINDS.near_duplicate_threshold < SPEC.search.default_threshold < KINDS.copy_similarity < 1.0


def test_each_mode_resolves_its_threshold_and_the_budget_still_applies():
    point = OperatingPoint(0.55, SPEC.search.tail, 0.01)
    modes = MatchModes.of(point, SPEC)
    assert modes.threshold(MatchMode.DUPLICATES, None, 10) == 0.55
    assert modes.threshold(MatchMode.COPIES, None, 10) == KINDS.copy_similarity
    assert modes.threshold(MatchMode.NEAR_DUPLICATES, None, 10) == KINDS.near_duplicate_threshold
    assert modes.threshold(MatchMode.COPIES, 0.5, 10) == KINDS.copy_similarity  # raised to a copy's
    assert modes.threshold(MatchMode.COPIES, 0.95, 10) == 0.95
    assert modes.threshold(MatchMode.NEAR_DUPLICATES, 0.6, 10) == 0.6  # a caller's own, as given
    # As a namespace grows the near-duplicate threshold rises by the same false-match budget,
    # and at a million images it has met the default's.
    sizes = [10, 10_000, 100_000, 1_000_000, 10_000_000]
    near = [modes.threshold(MatchMode.NEAR_DUPLICATES, None, n) for n in sizes]
    assert near == sorted(near) and near[0] < near[2]
    assert near[3] == modes.threshold(MatchMode.DUPLICATES, None, 1_000_000)
    assert modes.kind(KINDS.copy_similarity) == MatchKind.COPY
    assert modes.kind(KINDS.copy_similarity - 0.01) == MatchKind.NEAR_DUPLICATE


def test_a_model_without_the_calibration_serves_only_the_default_mode():
    modes = MatchModes(OperatingPoint(0.55))
    modes.check(MatchMode.DUPLICATES)
    for mode in (MatchMode.COPIES, MatchMode.NEAR_DUPLICATES):
        with pytest.raises(FailedPrecondition) as err:
            modes.check(mode)
        assert err.value.subject == "match_mode"
    assert modes.kind(0.99) is None
    assert modes.threshold(MatchMode.COPIES, None, 5) == 0.55


def _crop(img: np.ndarray, margin: float) -> bytes:
    h, w = img.shape[:2]
    return encode(np.ascontiguousarray(img[int(h * margin): int(h * (1 - margin)), int(w * margin): int(w * (1 - margin))]))


def test_modes_and_kinds_through_the_api(stub):
    coffee = rgb("coffee")
    stored = check(stub, encode(coffee), image_id="modes-coffee", add=True)
    assert stored.stored
    jpeg = encode(coffee, quality=50)  # ~0.98 with the photo
    crop = _crop(coffee, 0.2)  # ~0.62: a small crop, as far from its photo as another shot is
    tight = _crop(coffee, 0.2775)  # ~0.463: below the default threshold (0.475), above 0.45

    r = check(stub, jpeg)
    assert [(m.image_id, m.kind) for m in r.matches] == [("modes-coffee", pb.MATCH_KIND_COPY)]
    r = check(stub, crop)
    assert [(m.image_id, m.kind) for m in r.matches] == [("modes-coffee", pb.MATCH_KIND_NEAR_DUPLICATE)]
    assert KINDS.near_duplicate_threshold <= r.matches[0].similarity < KINDS.copy_similarity

    copies = check(stub, crop, match_mode=pb.MATCH_MODE_COPIES)
    assert not copies.is_duplicate and copies.threshold == pytest.approx(KINDS.copy_similarity)
    copies = check(stub, jpeg, match_mode=pb.MATCH_MODE_COPIES, threshold=0.5)
    assert copies.is_duplicate and copies.threshold == pytest.approx(KINDS.copy_similarity)

    assert not check(stub, tight).is_duplicate
    near = check(stub, tight, match_mode=pb.MATCH_MODE_NEAR_DUPLICATES)
    assert near.threshold == pytest.approx(KINDS.near_duplicate_threshold)
    assert [(m.image_id, m.kind) for m in near.matches] == [("modes-coffee", pb.MATCH_KIND_NEAR_DUPLICATE)]
    given = check(stub, tight, match_mode=pb.MATCH_MODE_NEAR_DUPLICATES, threshold=0.6)
    assert given.threshold == pytest.approx(0.6) and not given.is_duplicate
    explicit = check(stub, crop, match_mode=pb.MATCH_MODE_DUPLICATES)
    assert explicit.is_duplicate and explicit.threshold == pytest.approx(SPEC.search.default_threshold)

    info = stub.GetInfo(pb.GetInfoRequest())
    assert info.copy_similarity == pytest.approx(KINDS.copy_similarity)
    assert info.near_duplicate_threshold == pytest.approx(KINDS.near_duplicate_threshold)


def test_an_unknown_mode_is_refused_and_a_stream_goes_on(stub):
    photo = encode(rgb("astronaut"))
    with pytest.raises(grpc.RpcError) as err:
        check(stub, photo, match_mode=9)
    assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    status = status_pb2.Status.FromString(dict(err.value.trailing_metadata())["grpc-status-details-bin"])
    bad = error_details_pb2.BadRequest()
    assert any(d.Unpack(bad) for d in status.details)
    assert [v.field for v in bad.field_violations] == ["match_mode"]

    requests = [
        pb.BulkCheckRequest(image_id="mode-a", image=photo, add_to_index=True),
        pb.BulkCheckRequest(image_id="mode-b", image=photo, match_mode=9),
        pb.BulkCheckRequest(image_id="mode-c", image=encode(rgb("astronaut"), quality=60), match_mode=pb.MATCH_MODE_COPIES),
    ]
    out = list(stub.BulkCheck(iter(requests), timeout=120))
    assert [o.WhichOneof("outcome") for o in out] == ["result", "error", "result"]
    assert out[1].error.code == grpc.StatusCode.INVALID_ARGUMENT.value[0]
    assert [(m.image_id, m.kind) for m in out[2].result.matches] == [("mode-a", pb.MATCH_KIND_COPY)]
