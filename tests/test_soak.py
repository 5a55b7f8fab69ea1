"""A bounded soak on 127.0.0.1: a BulkCheck stream and 4 unary callers for 60 s against one
server (benchmarks/soak.py; run it for 10 minutes by hand). No errors; memory stays level."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "benchmarks"))

from soak import run_soak  # noqa: E402
from throughput import load_images  # noqa: E402


@pytest.mark.store_neutral  # a load bound on our own process; the server pass has its fault tests
def test_soak_one_minute_without_errors_or_memory_growth():
    images = load_images(None, 120)  # scikit-image photos, randomly cropped: no research data
    result = run_soak(1.0, images, unary_threads=4, report=lambda line: None)
    assert result["errors"] == 0
    assert result["bulk"] > 100 and result["unary"] > 20
    rss = [r for _, r in result["samples"]]
    assert len(rss) >= 3 and rss[-1] <= rss[0] * 1.15, rss
