"""`dedup calibrate` on a small labelled folder built from scikit-image photos."""

from __future__ import annotations

import json
import subprocess
import sys

import cv2
import numpy as np
import pytest

from conftest import encode, rgb

pytestmark = pytest.mark.store_neutral  # calibration from embeddings, no store: run in the Lite pass, not again on the Milvus server


def test_calibrate_reports_curve_threshold_plot_and_edits(tmp_path):
    (tmp_path / "images").mkdir()
    truth, edits = {}, {}
    variants = {
        "flip": lambda a: a[:, ::-1],
        "dark": lambda a: (a * 0.6).astype(np.uint8),
        "crop": lambda a: a[20:-30, 25:-15],
    }
    for name in ("astronaut", "coffee", "rocket", "chelsea", "camera"):
        a = rgb(name)
        (tmp_path / "images" / f"{name}.jpg").write_bytes(encode(a))
        truth[f"{name}.jpg"] = []
        for edit, fn in variants.items():
            copy = f"{name}__{edit}.jpg"
            (tmp_path / "images" / copy).write_bytes(encode(np.ascontiguousarray(fn(a))))
            truth[f"{name}.jpg"].append(copy)
            edits[copy] = {"original": f"{name}.jpg", "edit": edit}
    (tmp_path / "ground_truth.json").write_text(json.dumps(truth))
    (tmp_path / "edits.json").write_text(json.dumps(edits))

    plot, out_json = tmp_path / "curve.png", tmp_path / "calibration.json"
    proc = subprocess.run(
        [sys.executable, "-m", "imgdedup", "calibrate", str(tmp_path), "--plot", str(plot), "--json", str(out_json)],
        capture_output=True, text=True, timeout=600,
    )
    assert proc.returncode == 0, proc.stderr
    assert "threshold for precision >= 0.995" in proc.stdout
    assert "flip" in proc.stdout and "crop" in proc.stdout
    img = cv2.imread(str(plot))
    assert img is not None and img.shape[0] > 300 and img.shape[1] > 500
    result = json.loads(out_json.read_text())
    assert result["images"] == 20
    safe = result["safe"]
    assert safe["precision"] >= 0.995 and safe["recall"] == 1.0  # easy edits: every copy found
    best = max(result["rows"], key=lambda r: r["f1"])
    assert best["f1"] == 1.0


def test_composite_pairs_with_the_photo_it_was_pasted_on_count_neither_way(tmp_path):
    # benchmarks/make_hard.py's "other": a photo P pasted onto photo B is in P's group; its pairs
    # with B's group are left out, but a merge of P's and B's clusters is still false pairs.
    from imgdedup.evaluation import load_dataset, pairwise_scores

    (tmp_path / "images").mkdir()
    names = ["p.jpg", "p__copy.jpg", "p__paste.jpg", "b.jpg", "b__copy.jpg"]
    for n in names:
        (tmp_path / "images" / n).write_bytes(b"x")
    (tmp_path / "ground_truth.json").write_text(json.dumps({"p.jpg": ["p__copy.jpg", "p__paste.jpg"], "b.jpg": ["b__copy.jpg"]}))
    (tmp_path / "edits.json").write_text(json.dumps({
        "p__copy.jpg": {"original": "p.jpg", "edit": "jpeg"},
        "p__paste.jpg": {"original": "p.jpg", "edit": "paste", "other": "b.jpg"},
        "b__copy.jpg": {"original": "b.jpg", "edit": "jpeg"},
    }))
    data = load_dataset(tmp_path, None, 0)
    assert data.ignored_group_of == {"p__paste.jpg": "b.jpg"}
    # The composite joined B's cluster: its 2 pairs there are ignored; P's pair is found.
    joined_b = {"p.jpg": "1", "p__copy.jpg": "1", "p__paste.jpg": "2", "b.jpg": "2", "b__copy.jpg": "2"}
    scores = pairwise_scores(joined_b, data.group_of, data.ignored_group_of)
    assert (scores["tp_pairs"], scores["predicted_pairs"], scores["true_pairs"]) == (2, 2, 4)
    assert pairwise_scores(joined_b, data.group_of)["predicted_pairs"] == 4  # without the rule: 2 false pairs
    # All in one cluster: P-B pairs other than the composite's are false (2 x 2 = 4 of them).
    merged = dict.fromkeys(names, "1")
    scores = pairwise_scores(merged, data.group_of, data.ignored_group_of)
    assert (scores["tp_pairs"], scores["predicted_pairs"]) == (4, 10 - 2)


# scikit-image's photographs (bundled with the package; `chelsea` is its cat).
UNRELATED_PHOTOS = ["astronaut", "brick", "camera", "chelsea", "cell", "coffee", "coins", "grass", "gravel",
                    "hubble_deep_field", "immunohistochemistry", "microaneurysms", "moon", "retina", "rocket"]


def test_tail_fits_your_photos_leaves_copies_out_and_writes_a_spec_the_server_reads(tmp_path):
    from imgdedup.core.operating_point import OperatingPoint
    from imgdedup.runtime import load_spec
    from imgdedup.runtime.spec import TailFit

    photos = tmp_path / "photos"
    (photos / "more").mkdir(parents=True)
    for i, name in enumerate(UNRELATED_PHOTOS):  # read recursively: some in a subfolder
        (photos / ("more" if i % 2 else "") / f"{name}.jpg").write_bytes(encode(rgb(name)))
    (photos / "more" / "coffee_again.png").write_bytes(encode(rgb("coffee")[::2, ::2], ".png"))  # a copy: left out
    (photos / "broken.jpg").write_bytes(encode(rgb("rocket"))[:300])  # undecodable: left out, said
    spec_out, out_json = tmp_path / "specs" / "mine.toml", tmp_path / "tail.json"

    def tail(*extra):
        return subprocess.run([sys.executable, "-m", "imgdedup", "tail", str(photos), "--quantile", "0.6", "--json", str(out_json), *extra],
                              capture_output=True, text=True, timeout=600)

    # 15 photos are far too few for a fit the server should trust: no threshold keeps 0.01 false
    # matches per query at a million with it. Said, and the spec is not written.
    proc = tail("--spec-out", str(spec_out))
    assert proc.returncode == 2 and "not written" in proc.stderr and not spec_out.exists(), proc.stderr
    result = json.loads(out_json.read_text())
    n = len(UNRELATED_PHOTOS)
    assert result["photos"] == n and result["copies_left_out"] == 1 and result["failed"] == 1 and result["pairs"] == n * (n - 1) // 2
    assert "1 images left out as copies" in proc.stdout and "coffee_again.png" in proc.stdout
    assert "1 images could not be decoded" in proc.stdout and "broken.jpg" in proc.stdout
    assert result["similarity_for_rate"]["1000000"] is None and "none <= 1" in proc.stdout
    assert "[search.tail]" in proc.stdout and result["spec_out"] is None

    proc = tail("--spec-out", str(spec_out), "--force")
    assert proc.returncode == 0, proc.stderr
    result = json.loads(out_json.read_text())
    spec, builtin = load_spec(spec_out), load_spec("sscd_disc_mixup")
    fit = spec.search.tail
    assert fit.model_dump(exclude={"measured_on"}) == pytest.approx(result["tail"], rel=1e-3)  # what it printed, rounded
    assert fit.measured_on.startswith(f"dedup tail: {n} photos")
    # Everything else is the model's own spec, so the server serves the same model with it.
    assert spec.model_dump(exclude={"search", "base_dir"}) == builtin.model_dump(exclude={"search", "base_dir"})
    assert spec.search.default_threshold == builtin.search.default_threshold and spec.search.kinds == builtin.search.kinds
    # The operating point reads the new tail: at 100 stored images this heavy a tail already
    # lifts the threshold above the base, where the built-in tail keeps the base.
    ours = OperatingPoint(spec.search.default_threshold, fit, 0.01).threshold(100)
    assert spec.search.default_threshold < ours < 1.0
    assert ours == OperatingPoint(spec.search.default_threshold, TailFit(**result["tail"]), 0.01).threshold(100)
    assert OperatingPoint(builtin.search.default_threshold, builtin.search.tail, 0.01).threshold(100) == builtin.search.default_threshold


def test_spec_with_tail_replaces_that_table_alone():
    import tomllib

    from imgdedup.runtime.spec import spec_text
    from imgdedup.tail import spec_with_tail

    text, _ = spec_text("sscd_disc_mixup")
    block = '[search.tail]\nu = 0.2\nshare_above = 0.001\nshape = 0.1\nscale = 0.02\nmeasured_on = "test"\n'

    def tables(t):
        data = tomllib.loads(t)
        return data["search"].pop("tail", None), data

    text = text.replace("\n[search.kinds]", "\n# about the kinds\n[search.kinds]")  # a comment above the next table
    out = spec_with_tail(text, block)
    tail, rest = tables(out)
    assert tail == {"u": 0.2, "share_above": 0.001, "shape": 0.1, "scale": 0.02, "measured_on": "test"}
    assert rest == tables(text)[1]  # nothing else changed
    assert out.index("[search.tail]") < out.index("# about the kinds") < out.index("[search.kinds]")  # kept
    # The next table's header indented (valid TOML) is still the next table.
    indented = text.replace("\n[search.kinds]", "\n  [search.kinds]")
    assert tables(spec_with_tail(indented, block)) == (tail, tables(indented)[1])
    # A spec without a tail gets one.
    start, end = text.index("\n[search.tail]") + 1, text.index("# about the kinds")
    assert tables(spec_with_tail(text[:start] + text[end:], block))[0] == tail
    # A tail written as dotted keys cannot be replaced as a table: refused, not written wrong.
    dotted = text[:start] + text[end:]
    dotted = dotted.replace("\ndefault_threshold = 0.475\n", "\ndefault_threshold = 0.475\ntail = { u = 0.1, share_above = 0.1, shape = 0.1, scale = 0.1 }\n")
    with pytest.raises(ValueError):
        spec_with_tail(dotted, block)
