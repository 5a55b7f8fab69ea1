"""`dedup calibrate` on a small labelled folder built from scikit-image photos."""

from __future__ import annotations

import json
import subprocess
import sys

import cv2
import numpy as np

from conftest import encode, rgb


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
