"""The torch -> ONNX step shared by the export tools in this folder (needs the `torch` extra).

Every exported graph has the default model's interface, whatever the network: input "image",
uint8 [batch, height, width, 3] RGB (batch, height and width dynamic); the normalisation the
network was trained with inside the graph; output "embedding", float32 [batch, dim],
L2-normalised. The wrapper is the PyTorch embedder's own (imgdedup.runtime.torch.uint8_input),
so both run the same computation. Beside the .onnx file the tool writes its spec (.toml), which
`dedup serve --model` takes as it is.
"""

from __future__ import annotations

from pathlib import Path

from imgdedup.runtime.spec import ModelSpec
from imgdedup.runtime.torch import uint8_input

IMAGENET = {"scale": 1.0 / 255.0, "mean": (0.485, 0.456, 0.406), "std": (0.229, 0.224, 0.225)}


def network_spec(name: str, *, size: int, dim: int, l2_normalized: bool) -> ModelSpec:
    """What the network itself takes: float32 NCHW RGB, ImageNet-normalised."""
    return ModelSpec.model_validate({
        "name": name,
        "source": {"path": "unused.onnx"},
        "input": {"name": "image", "layout": "NCHW", "dtype": "float32", "resize": {"mode": "square", "size": size}, "normalize": IMAGENET},
        "output": {"name": "embedding", "dim": dim, "l2_normalized": l2_normalized},
    })


def wrapped(net, name: str, *, size: int, dim: int, l2_normalized: bool, fp16: bool):
    """`net` (eval mode, CPU) behind the uint8 NHWC input and the L2-normalised output."""
    if fp16:
        net = net.half()
    return uint8_input(net, network_spec(name, size=size, dim=dim, l2_normalized=l2_normalized), half=fp16).eval()


def export(net, output: Path, *, name: str, description: str, size: int, dim: int, l2_normalized: bool, opset: int, fp16: bool, threshold: float) -> Path:
    """Write `output` (.onnx) and its spec beside it (same name, .toml); returns the spec's path."""
    import torch

    module = wrapped(net, name, size=size, dim=dim, l2_normalized=l2_normalized, fp16=fp16)
    dummy = torch.zeros(1, size, size, 3, dtype=torch.uint8)
    output.parent.mkdir(parents=True, exist_ok=True)
    # Traced first: the exporter cannot trace into a TorchScript network (Meta's SSCD files)
    # inside a Python wrapper, while torch.jit.trace can.
    with torch.no_grad():
        traced = torch.jit.trace(module, (dummy,))
    torch.onnx.export(
        traced,
        (dummy,),
        str(output),
        input_names=["image"],
        output_names=["embedding"],
        dynamic_axes={"image": {0: "batch", 1: "height", 2: "width"}, "embedding": {0: "batch"}},
        opset_version=opset,
        dynamo=False,  # the TorchScript exporter: no onnxscript needed, dynamic axes as named
    )
    spec_path = output.with_suffix(".toml")
    spec_path.write_text(spec_toml(name, description, output.name, size=size, dim=dim, threshold=threshold))
    return spec_path


def spec_toml(name: str, description: str, onnx_file: str, *, size: int, dim: int, threshold: float) -> str:
    return f'''# Written by model/{Path(__file__).name}'s caller: the default model's interface (uint8 NHWC RGB
# in, normalised inside the graph; L2-normalised float32 out). Serve: dedup serve --model THIS_FILE
name = "{name}"
description = "{description}"

[source]
path = "{onnx_file}"

[input]
name = "image"
layout = "NHWC"
dtype = "uint8"
channels = "RGB"

[input.resize]
mode = "square"
size = {size}
interpolation = "auto"

[output]
name = "embedding"
dim = {dim}
l2_normalized = true

[search]
# Calibrate for your images: dedup calibrate --model THIS_FILE DIR
default_threshold = {threshold}
'''
