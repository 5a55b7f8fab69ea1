"""Query-side score normalisation (core/normalise.py): past the size where the operating point
rises, each query's threshold is the normalised tail's plus beta times its term (its k-th
highest similarity with a background of unrelated photos), for matches, clusters and the
regroup after a delete; below that size nothing changes."""

from __future__ import annotations

import json
import math
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from conftest import check, encode, rgb, serving
from imgdedup._proto.dedup.v1 import dedup_pb2 as pb
from imgdedup.core.linking import LinkRule
from imgdedup.core.normalise import Normaliser, kth_similarity
from imgdedup.core.operating_point import STEP, OperatingPoint
from imgdedup.runtime import load_spec
from imgdedup.runtime.spec import TailFit, spec_text
from imgdedup.tail import spec_with

SPEC = load_spec("sscd_disc_mixup")
BASE = SPEC.search.default_threshold  # 0.475
# A normalised tail for the tests: exponential above 0, 1e-3 of pairs there. For 1e-9 false
# matches per query at one stored image (the strict budget below) it asks a normalised score of
# 0.2 = scale x ln(1e6).
NORM_TAIL = TailFit(u=0.0, share_above=1e-3, shape=0.0, scale=0.2 / math.log(1e6))


def unit(rows: np.ndarray) -> np.ndarray:
    return (rows / np.linalg.norm(rows, axis=1, keepdims=True)).astype(np.float32)


def stepped(t: float) -> float:
    return max(BASE, min(1.0, round(math.ceil(t / STEP - 1e-9) * STEP, 6)))


def test_terms_are_the_kth_similarity_with_copies_of_background_photos_left_out():
    rng = np.random.default_rng(0)
    background = unit(rng.normal(size=(50, 16)))
    query = unit(background[:3] + 0.8 * unit(rng.normal(size=(3, 16))))  # near one background photo each
    sims = query @ background.T
    for k in (1, 2, 5):
        assert np.allclose(kth_similarity(query, background, k, 0.99), np.sort(sims, axis=1)[:, -k])
    # A background photo the query is a copy of is not a neighbour: the next one is its term.
    copy = np.vstack([background[7]])
    assert kth_similarity(copy, background, 1, 0.85)[0] == pytest.approx(np.sort(copy @ background.T)[0, -2])


def test_a_query_gets_its_own_threshold_only_where_the_point_has_risen():
    tail = SPEC.search.tail
    norm = Normaliser(unit(np.eye(4, 512)), 1, 1.0, NORM_TAIL, typical_term=0.2)
    point = OperatingPoint(BASE, tail, 0.01, norm)
    plain = OperatingPoint(BASE, tail, 0.01)
    # Below ~64k stored images the plain point is at its base: so is every query, whatever its term.
    for term in (0.0, 0.5, 0.9):
        assert point.threshold(15_000, term) == BASE == plain.threshold(15_000)
    assert point.terms([np.eye(1, 512)[0]], 15_000) == [None]  # not even computed
    # Past it: the normalised tail's threshold for the size, plus beta x the term, in steps,
    # never below the base and never above 1.
    n = 1_000_000
    assert plain.threshold(n) > BASE
    t_norm = NORM_TAIL.threshold_for(0.01 / n)
    for term in (-0.1, 0.1, 0.3, 0.5, 0.9):
        assert point.threshold(n, term) == stepped(t_norm + term)
    assert point.threshold(n) == point.threshold(n, 0.2)  # None: the typical query's (GetInfo's)
    assert point.threshold(n, 0.0) == BASE < point.threshold(n, 0.5) < point.threshold(n, 0.9) == 1.0
    # The query is background photo 0 itself: a copy, left out; the others are orthogonal to it.
    assert point.terms([np.eye(1, 512)[0]], n) == [pytest.approx(0.0, abs=1e-6)]
    # beta weighs the term.
    half = OperatingPoint(BASE, tail, 0.01, Normaliser(norm.background, 1, 0.5, NORM_TAIL, 0.2))
    assert half.threshold(n, 0.6) == stepped(t_norm + 0.3)


def test_the_regroup_links_each_image_at_its_own_threshold():
    # Inserted in order 0, 1, 2: 1 is near 0 at 0.6, 2 is near 1 at 0.6 (and not near 0).
    sims = np.array([[1.0, 0.6, 0.0], [0.6, 1.0, 0.6], [0.0, 0.6, 1.0]])
    rule = LinkRule(0.5)
    assert rule.regroup(sims) == [[0, 1, 2]]
    # Image 2 as a query needs 0.7: it does not link 1 (its pair with 1 is its own to judge).
    assert rule.regroup(sims, thresholds=[0.5, 0.5, 0.7]) == [[0, 1], [2]]
    # Image 1 needs 0.7: it starts its own cluster, and 2 joins it at 0.5.
    assert rule.regroup(sims, thresholds=[0.5, 0.7, 0.5]) == [[0], [1, 2]]


def test_a_background_that_does_not_fit_the_model_is_refused_at_load(tmp_path):
    text, _ = spec_text("sscd_disc_mixup")

    def spec_with_background(array) -> Path:
        np.save(tmp_path / "bg.npy", array)
        block = ('[search.normalise]\nbackground = "bg.npy"\nk = 1\nbeta = 1.0\ntypical_term = 0.2\n\n'
                 '[search.normalise.tail]\nu = 0.0\nshare_above = 0.001\nshape = 0.0\nscale = 0.0145\n')
        path = tmp_path / "spec.toml"
        path.write_text(spec_with(text, {"normalise": block}))
        return path

    good = unit(np.random.default_rng(0).normal(size=(20, 512)))
    assert Normaliser.of(load_spec(spec_with_background(good))).background.shape == (20, 512)
    for bad, why in ((good[:, :256], "not n x 512"), (good * 2, "not L2-normalised"), (good[:1], "it needs more than k"),
                     (np.full((20, 512), np.nan, np.float32), "not L2-normalised")):
        with pytest.raises(ValueError, match=why):
            Normaliser.of(load_spec(spec_with_background(bad)))
    (tmp_path / "bg.npy").unlink()
    with pytest.raises(ValueError, match="background"):
        Normaliser.of(load_spec(tmp_path / "spec.toml"))


def embed(images: dict[str, bytes]) -> dict[str, np.ndarray]:
    from imgdedup.calibrate import embed_named
    names, vectors, failed = embed_named(list(images), images.__getitem__, "sscd_disc_mixup", max_pixels=60_000_000)
    assert not failed
    return dict(zip(names, vectors))


UNRELATED = ("brick", "camera", "coins", "grass", "gravel", "moon", "rocket")  # never sent by these tests


def start_normalised(folder: Path, extra: dict[str, bytes]):
    """A server whose budget (1e-9 false matches per query) lifts the plain threshold above the
    base from one stored image (0.84: tests/test_operating_point.py), normalising against a
    background of scikit-image photos plus `extra`. Yields (stub, background vectors)."""
    background = embed({**{name: encode(rgb(name)) for name in UNRELATED}, **extra})
    vectors = np.stack(list(background.values()))
    np.save(folder / "background.npy", vectors)
    block = ('[search.normalise]\nbackground = "background.npy"\nk = 1\nbeta = 1.0\ntypical_term = 0.1\n\n'
             + "[search.normalise.tail]\n" + "".join(f"{k} = {v!r}\n" for k, v in NORM_TAIL.model_dump(exclude={"measured_on"}).items()))
    spec = folder / "spec.toml"
    spec.write_text(spec_with(spec_text("sscd_disc_mixup")[0], {"normalise": block}))
    with serving(folder, "--model", str(spec), "--false-matches-per-query", "1e-9") as stub:
        yield stub, vectors


@pytest.fixture(scope="module")
def normalised(tmp_path_factory):
    """With a crop of the astronaut in the background: the astronaut is a query with a high term."""
    astronaut = rgb("astronaut")
    h, w = astronaut.shape[:2]
    yield from start_normalised(tmp_path_factory.mktemp("normalised"), {"astronaut_crop": encode(np.ascontiguousarray(astronaut[: h * 3 // 5, : w * 3 // 5]))})


@pytest.fixture(scope="module")
def coffee_top_in_background(tmp_path_factory):
    coffee = rgb("coffee")
    yield from start_normalised(tmp_path_factory.mktemp("coffee-top"), {"coffee_top": encode(np.ascontiguousarray(coffee[: coffee.shape[0] * 55 // 100]))})


def expected(term: float, stored: int = 1) -> float:
    return stepped(NORM_TAIL.threshold_for(1e-9 / stored) + term)


def is_own(threshold: float, term: float, stored: int) -> bool:
    """The threshold of a query with this term against `stored` images (the term computed here
    from an embedding made apart from the server's: within 1e-4, in case it straddles a step)."""
    return any(threshold == pytest.approx(expected(term + d, stored)) for d in (-1e-4, 0.0, 1e-4))


def test_each_query_is_matched_and_clustered_at_its_own_threshold(normalised):
    stub, background = normalised
    coffee = rgb("coffee")
    h, w = coffee.shape[:2]
    crop = encode(np.ascontiguousarray(coffee[h // 5 : h * 4 // 5, w // 5 : w * 4 // 5]))  # ~0.62 with the photo
    astronaut = encode(rgb("astronaut"))
    astronaut_crop = encode(np.ascontiguousarray(rgb("astronaut")[40:480, 60:470]))
    vectors = embed({"coffee": encode(coffee), "crop": crop, "astronaut": astronaut, "astronaut_crop": astronaut_crop})
    terms = {name: float(kth_similarity(v, background, 1, SPEC.search.kinds.copy_similarity)[0]) for name, v in vectors.items()}
    assert terms["astronaut"] > 0.5 > 0.3 > terms["crop"]  # the astronaut is near its background crop

    first = check(stub, encode(coffee), image_id="coffee", add=True)
    assert first.threshold == pytest.approx(BASE)  # nothing stored: the base, as ever
    info = stub.GetInfo(pb.GetInfoRequest())
    assert info.threshold == pytest.approx(expected(0.1))  # the typical query's (typical_term 0.1)
    plain = OperatingPoint(BASE, SPEC.search.tail, 1e-9).threshold(1)
    assert plain > 0.8

    # The crop's term is low: its threshold is far below the plain point's, and it matches the
    # photo (~0.62), which the plain 0.84 would not, and joins its cluster.
    got = check(stub, crop, image_id="crop", add=True)
    assert is_own(got.threshold, terms["crop"], stored=1)
    assert got.threshold < 0.62 < plain
    assert [m.image_id for m in got.matches] == ["coffee"] and got.cluster_id == first.cluster_id

    # The astronaut's term is high (a crop of it is in the background): a threshold of its own
    # far above a typical query's. A caller's threshold is still used as given.
    stored = check(stub, astronaut, image_id="astronaut", add=True)
    assert is_own(stored.threshold, terms["astronaut"], stored=2)
    assert stored.threshold > stub.GetInfo(pb.GetInfoRequest()).threshold + 0.2
    again = check(stub, astronaut, image_id="astronaut-again")
    assert [m.image_id for m in again.matches] == ["astronaut"]  # itself: 1.0
    asked = check(stub, astronaut_crop, threshold=0.3)
    assert asked.threshold == pytest.approx(0.3) and "astronaut" in [m.image_id for m in asked.matches]


def test_a_delete_regroups_each_member_at_its_own_threshold(coffee_top_in_background):
    stub, background = coffee_top_in_background
    coffee = rgb("coffee")
    w = coffee.shape[1]
    # Two overlapping halves of the photo: ~0.75 with it, ~0.59 with each other; the top of the
    # photo is in the background, so each half's term is ~0.45-0.5: thresholds of their own.
    images = {"coffee": encode(coffee), "left": encode(np.ascontiguousarray(coffee[:, : w * 6 // 10])),
              "right": encode(np.ascontiguousarray(coffee[:, w * 4 // 10 :]))}
    v = embed(images)
    term = {n: float(kth_similarity(v[n], background, 1, SPEC.search.kinds.copy_similarity)[0]) for n in ("left", "right")}
    own = {"left": expected(term["left"] + 1e-4, stored=1), "right": expected(term["right"] + 1e-4, stored=2)}
    # Stored in order, each half links the photo at its own threshold...
    assert own["left"] < float(v["left"] @ v["coffee"]) - 0.01 and own["right"] < float(v["right"] @ v["coffee"]) - 0.01
    # ... and the two halves would link each other at the base, but not at "right"'s own.
    assert BASE < float(v["left"] @ v["right"]) < expected(term["right"] - 1e-4, stored=2) - 0.01
    for image_id, data in images.items():
        check(stub, data, image_id=image_id, add=True)
    assert [c.size for c in stub.ListClusters(pb.ListClustersRequest(min_size=1)).clusters] == [3]
    # Without the photo, the regroup replays the halves in their order: "right" is the query of
    # their pair, at its own threshold for the namespace's size after the delete (two images).
    stub.DeleteImages(pb.DeleteImagesRequest(image_ids=["coffee"]))
    assert [c.size for c in stub.ListClusters(pb.ListClustersRequest(min_size=1)).clusters] == [1, 1]


def test_dedup_tail_normalise_writes_the_background_and_its_tail_and_the_server_loads_them(tmp_path):
    from test_calibrate import UNRELATED_PHOTOS

    photos = tmp_path / "photos"
    photos.mkdir()
    for name in UNRELATED_PHOTOS:
        (photos / f"{name}.jpg").write_bytes(encode(rgb(name)))
    spec_out, out_json = tmp_path / "specs" / "mine.toml", tmp_path / "tail.json"
    proc = subprocess.run([sys.executable, "-m", "imgdedup", "tail", str(photos), "--normalise", "--quantile", "0.6", "--boot", "5",
                           "--json", str(out_json), "--spec-out", str(spec_out), "--force"], capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr
    everything = json.loads(out_json.read_text())
    result = everything["normalise"]
    # The spread of the server's thresholds over resamples: 5th <= 50th <= 95th percentile, per size.
    resampled = everything["resampled"]
    assert resampled["resamples"] >= 1 and "over" in proc.stdout and "resamples of the photos" in proc.stdout
    for table in (resampled["plain"], resampled["normalised"]):
        assert set(table) == {"15000", "1000000", "10000000"}
        assert all(BASE <= q[0] <= q[1] <= q[2] <= 1.0 for q in table.values())
    n = len(UNRELATED_PHOTOS)
    assert (result["background_photos"], result["query_photos"]) == (n // 2, n - n // 2)
    assert result["ordered_pairs"] == (n - n // 2) * (n - n // 2 - 1)  # both ways: either may be the query
    spec = load_spec(spec_out)
    table = spec.search.normalise
    assert table is not None and (table.k, table.beta) == (1, 1.0)
    assert table.background == Path("mine-background.npy") and (tmp_path / "specs" / "mine-background.npy").is_file()
    assert table.typical_term == pytest.approx(result["typical_term"], abs=1e-5)
    assert table.tail.model_dump(exclude={"measured_on"}) == pytest.approx(result["tail"], rel=1e-3)
    norm = Normaliser.of(spec)
    assert norm.background.shape == (n // 2, 512)
    # Its background is half of the photos: a photo of it is its own copy there and left out,
    # so every term is an unrelated photo's.
    assert np.all(norm.terms(norm.background) < 0.5)
    # Everything but [search.tail] and [search.normalise] is the built-in spec.
    assert spec.model_dump(exclude={"search", "base_dir"}) == SPEC.model_dump(exclude={"search", "base_dir"})
    assert "normalisation:" in proc.stdout and "typical query" in proc.stdout
