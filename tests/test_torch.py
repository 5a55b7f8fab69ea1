"""PyTorch: the export tools in model/ and the PyTorch embedder (`--embedder torch`), with real
torch and torchvision on the CPU and randomly initialised weights (no weights can be downloaded
here; a weights file is the real path, and these tests use one they save themselves).

Run by `./run.sh test`'s torch pass, in .venv-torch (Python 3.11 with the torch this machine has;
the default model's package needs 3.12, so nothing here uses it); the other passes' venv has no
torch and does not collect this file (conftest.py).

Shown: exported graphs have the default model's interface (uint8 NHWC in with dynamic batch and
size, L2-normalised float32 out) and give the PyTorch model's outputs (cosine >= 0.9999 in fp32,
>= 0.999 in fp16 against the fp32 network); the PyTorch embedder gives the same embeddings as the
exported ONNX model; servers started with an exported spec, and with the PyTorch embedder on a
torchvision or TorchScript spec, answer CheckDuplicate."""

from __future__ import annotations

import copy
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from conftest import ROOT, ServerProcess, channel_for, check, encode, rgb
from imgdedup._proto.dedup.v1 import dedup_pb2 as pb
from imgdedup._proto.dedup.v1 import dedup_pb2_grpc as pb_grpc

import onnxruntime as ort
import torch

sys.path.insert(0, str(ROOT / "model"))
import export_sscd_float  # noqa: E402
import export_torchvision_resnet50 as tv_export  # noqa: E402


def images(n: int, h: int, w: int, seed: int = 0) -> np.ndarray:
    """Photos, resized: real content (random pixels give near-constant features)."""
    import cv2

    names = ["astronaut", "coffee", "chelsea", "rocket", "camera"]
    rng = np.random.default_rng(seed)
    out = []
    for i in range(n):
        img = rgb(names[(i + seed) % len(names)])
        if rng.random() < 0.5:
            img = np.ascontiguousarray(img[:, ::-1])
        out.append(cv2.resize(img, (w, h), interpolation=cv2.INTER_AREA))
    return np.stack(out)


def cosine(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    a = a / np.linalg.norm(a, axis=1, keepdims=True)
    b = b / np.linalg.norm(b, axis=1, keepdims=True)
    return (a * b).sum(1)


def run_onnx(path: Path, x: np.ndarray) -> np.ndarray:
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    return session.run(["embedding"], {"image": x})[0]


MEAN, STD = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)


def reference(net, x: np.ndarray, *, size: int, dim: int) -> np.ndarray:
    """The fp32 network on inputs prepared by hand, without the wrapper the export and the
    embedder share (so a wrong layout, channel order or normalisation there would show):
    uint8 NHWC RGB -> float NCHW in [0, 1] -> ImageNet mean/std -> the network -> L2."""
    pixels = torch.from_numpy(x).permute(0, 3, 1, 2).float() / 255.0
    pixels = (pixels - torch.tensor(MEAN).view(1, 3, 1, 1)) / torch.tensor(STD).view(1, 3, 1, 1)
    with torch.inference_mode():
        out = copy.deepcopy(net).eval()(pixels).flatten(1)
    assert out.shape[1] == dim
    return torch.nn.functional.normalize(out, dim=1).numpy()


@pytest.fixture(scope="module")
def resnet():
    torch.manual_seed(0)
    return tv_export.network(None)


@pytest.mark.parametrize("fp16, bound", [(False, 0.9999), (True, 0.999)])
def test_torchvision_export_has_the_default_interface_and_the_models_outputs(tmp_path, resnet, fp16, bound):
    out = tmp_path / "resnet50.onnx"
    spec_path = tv_export.export(copy.deepcopy(resnet), out, name="rn50", description="test", size=224, dim=2048, l2_normalized=False, opset=17, fp16=fp16, threshold=0.9)
    session = ort.InferenceSession(str(out), providers=["CPUExecutionProvider"])
    (inp,), (outp,) = session.get_inputs(), session.get_outputs()
    assert (inp.name, inp.type, outp.name, outp.type) == ("image", "tensor(uint8)", "embedding", "tensor(float)")
    assert isinstance(inp.shape[0], str) and isinstance(inp.shape[1], str) and isinstance(inp.shape[2], str) and inp.shape[3] == 3
    for shape in ((3, 224, 224), (2, 160, 288)):  # dynamic batch and size
        x = images(*shape)
        got = run_onnx(out, x)
        assert got.shape == (shape[0], 2048) and got.dtype == np.float32
        np.testing.assert_allclose(np.linalg.norm(got, axis=1), 1.0, atol=1e-3)
        assert cosine(got, reference(resnet, x, size=224, dim=2048)).min() >= bound
    text = spec_path.read_text()
    assert 'layout = "NHWC"' in text and 'dtype = "uint8"' in text and "dim = 2048" in text and "l2_normalized = true" in text


def test_sscd_export_of_a_torchscript_file(tmp_path, resnet):
    net = copy.deepcopy(resnet)
    net.fc = torch.nn.Linear(2048, 512)  # SSCD's shape: a ResNet-50 trunk, a 512-d projection
    scripted = tmp_path / "sscd_like.torchscript.pt"
    torch.jit.save(torch.jit.script(net.eval()), str(scripted))
    out = tmp_path / "sscd.onnx"
    assert export_sscd_float.main([str(scripted), str(out), "--size", "288"]) == 0
    x = images(2, 288, 288)
    got = run_onnx(out, x)
    assert got.shape == (2, 512)
    assert cosine(got, reference(net, x, size=288, dim=512)).min() >= 0.9999
    assert 'dim = 512' in out.with_suffix(".toml").read_text()


def _torchvision_spec(folder: Path, weights: Path) -> Path:
    spec = folder / "rn50_torch.toml"
    text = (ROOT / "model" / "examples" / "torchvision_resnet50_torch.toml").read_text()
    spec.write_text(text.replace('path = "resnet50-11ad3fa6.pth"', f'path = "{weights}"'))
    return spec


def test_the_torch_embedder_equals_the_exported_onnx_model(tmp_path, resnet):
    from imgdedup.runtime import load_spec
    from imgdedup.runtime.torch import TorchEmbedder, TorchOptions

    weights = tmp_path / "rn50.pth"
    torch.save({**resnet.state_dict(), "fc.weight": torch.zeros(1000, 2048), "fc.bias": torch.zeros(1000)}, str(weights))
    embedder = TorchEmbedder(load_spec(_torchvision_spec(tmp_path, weights)), TorchOptions(device="cpu"))
    assert embedder.providers == ["torch:cpu"]
    out = tmp_path / "rn50.onnx"
    tv_export.export(copy.deepcopy(resnet), out, name="rn50", description="test", size=224, dim=2048, l2_normalized=False, opset=17, fp16=False, threshold=0.9)
    x = images(4, 224, 224, seed=1)
    got = embedder.embed(x)
    np.testing.assert_allclose(np.linalg.norm(got, axis=1), 1.0, atol=1e-5)
    assert cosine(got, run_onnx(out, x)).min() >= 0.9999


def _serves(srv: ServerProcess, name: str, provider: str) -> None:
    with channel_for(srv.target) as channel:
        stub = pb_grpc.DedupServiceStub(channel)
        info = stub.GetInfo(pb.GetInfoRequest(), timeout=30)
        assert info.model_name == name and list(info.execution_providers)[0].startswith(provider), info
        photo = rgb("astronaut")
        assert check(stub, encode(photo), "a", add=True).stored
        assert check(stub, encode(rgb("coffee")), "c", add=True).stored
        same = check(stub, encode(photo, ".png"))
        assert same.is_duplicate and same.matches[0].image_id == "a"
        assert same.matches[0].similarity > 0.99


def test_a_server_serves_an_exported_model_from_the_command_line(tmp_path):
    out = tmp_path / "rn50.onnx"
    subprocess.run([sys.executable, str(ROOT / "model" / "export_torchvision_resnet50.py"), "--random-weights", str(out)], check=True, timeout=600)
    srv = ServerProcess(tmp_path / "data", "--model", str(out.with_suffix(".toml"))).start()
    try:
        _serves(srv, "torchvision_resnet50", "CPUExecutionProvider")
    finally:
        assert srv.stop() == 0


def test_a_server_with_the_torch_embedder_on_torchvision_and_torchscript_specs(tmp_path, resnet):
    weights = tmp_path / "rn50.pth"
    torch.save(resnet.state_dict(), str(weights))
    srv = ServerProcess(tmp_path / "tv", "--embedder", "torch", "--model", str(_torchvision_spec(tmp_path, weights))).start()
    try:
        _serves(srv, "torchvision_resnet50", "torch:cpu")
    finally:
        assert srv.stop() == 0
    scripted = tmp_path / "sscd_disc_mixup.torchscript.pt"
    net = copy.deepcopy(resnet)
    net.fc = torch.nn.Linear(2048, 512)
    torch.jit.save(torch.jit.script(net.eval()), str(scripted))
    spec = tmp_path / "ts.toml"
    spec.write_text((ROOT / "model" / "examples" / "sscd_disc_mixup_torchscript.toml").read_text())
    srv = ServerProcess(tmp_path / "ts", "--embedder", "torch", "--model", str(spec)).start()
    try:
        _serves(srv, "sscd_disc_mixup_torchscript", "torch:cpu")
    finally:
        assert srv.stop() == 0
