"""`dedup report` against a real server: an HTML gallery of the clusters and a contact sheet per
cluster, rendered in a real headless Chromium (Debian's `chromium`; run.sh test installs it),
whose screenshot must show the thumbnails."""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
from pathlib import Path

import cv2
import numpy as np
import pytest

from conftest import ServerProcess, encode, rgb

pytestmark = pytest.mark.store_neutral  # the report, built from what the API lists: run in the Lite pass, not again on the Milvus server


CHROMIUM_FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--no-first-run", "--disable-background-networking", "--disable-component-update", "--disable-sync", "--force-device-scale-factor=1", "--hide-scrollbars"]


def _dedup(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "imgdedup", *args], capture_output=True, text=True, timeout=600)


@pytest.fixture(scope="module")
def library(tmp_path_factory):
    """A folder of photos with copies (one of them a larger original, so 'keep' is not simply
    the first stored), indexed into its own server."""
    root = tmp_path_factory.mktemp("library")
    (root / "copies").mkdir()
    for name in ("astronaut", "coffee", "chelsea"):
        img = rgb(name)
        h, w = img.shape[:2]
        (root / f"{name}.jpg").write_bytes(encode(img, quality=92))
        (root / "copies" / f"{name}-small.jpg").write_bytes(encode(cv2.resize(img, (w // 2, h // 2), interpolation=cv2.INTER_AREA), quality=70))
        (root / "copies" / f"{name}-flip.png").write_bytes(encode(np.ascontiguousarray(img[:, ::-1]), ".png"))
    (root / "rocket.jpg").write_bytes(encode(rgb("rocket")))  # alone: no cluster
    srv = ServerProcess(tmp_path_factory.mktemp("report-data")).start()
    try:
        done = _dedup("index", str(root), "--server", srv.target)
        assert done.returncode == 0, done.stdout + done.stderr
        yield root, srv
    finally:
        srv.stop()


def test_the_report_lists_every_cluster_marks_the_copy_to_keep_and_pages(library, tmp_path):
    root, srv = library
    out = tmp_path / "report"
    done = _dedup("report", "--server", srv.target, "--images", str(root), "--out", str(out), "--page-size", "2")
    assert done.returncode == 0, done.stderr
    pages = [out / "index.html", out / "page-2.html"]
    assert all(p.is_file() for p in pages) and not (out / "page-3.html").exists()
    text = "".join(p.read_text() for p in pages)
    sections = re.findall(r'<section class="cluster".*?</section>', text, re.S)
    assert len(sections) == 3
    names = set()
    for section in sections:
        alts = re.findall(r'<img src="[^"]+" alt="([^"]+)"', section)
        name = Path(alts[0]).stem.split("-")[0]
        names.add(name)
        assert sorted(alts) == sorted([f"{name}.jpg", f"copies/{name}-small.jpg", f"copies/{name}-flip.png"]), alts
        keep = re.findall(r'<figure class="keep"><img src="[^"]+" alt="([^"]+)"', section)
        assert keep == [f"{name}.jpg"], section  # the most pixels (tied with the flipped PNG: then the earlier stored)
        assert section.count("<figure") == 3 and "copy, similarity" in section
        assert re.search(r"\d+x\d+ (JPEG|PNG) [\d.]+ (KiB|MiB|B)", section)
        for src, _ in re.findall(r'<img src="([^"]+)" alt="([^"]+)"', section):
            assert (out / src).is_file()
    assert names == {"astronaut", "coffee", "chelsea"}
    assert 'href="page-2.html"' in pages[0].read_text() and 'href="index.html"' in pages[1].read_text()
    sheets = sorted((out / "sheets").glob("*.png"))
    assert len(sheets) == 3
    sheet = cv2.imread(str(sheets[0]))
    assert sheet.shape[1] >= 3 * 200 and sheet.std() > 20  # three thumbnails side by side, not blank
    assert "http://" not in text and "https://" not in text  # nothing fetched to view it


def test_the_report_renders_in_chromium_with_its_thumbnails(library, tmp_path):
    root, srv = library
    out = tmp_path / "report"
    assert _dedup("report", "--server", srv.target, "--images", str(root), "--out", str(out)).returncode == 0
    chromium = shutil.which("chromium") or shutil.which("chromium-browser")
    assert chromium, "chromium is not installed (./run.sh test installs Debian's chromium)"
    shot = tmp_path / "shot.png"
    subprocess.run([chromium, *CHROMIUM_FLAGS, f"--user-data-dir={tmp_path / 'profile'}", f"--screenshot={shot}", "--window-size=1280,1600", (out / "index.html").as_uri()],
                   capture_output=True, timeout=120, check=True)
    page = cv2.imread(str(shot))
    assert page is not None and page.shape[:2] == (1600, 1280)
    assert page.std() > 20  # not a blank page
    # Each cluster's representative thumbnail appears in the page, pixel for pixel (scale 1).
    html = (out / "index.html").read_text()
    found = 0
    for src in re.findall(r'<figure class="keep"><img src="([^"]+)"', html):
        thumb = cv2.imread(str(out / src))
        score = cv2.matchTemplate(page, thumb, cv2.TM_CCOEFF_NORMED).max()
        found += score > 0.9
    assert found == 3, found
