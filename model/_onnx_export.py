"""The torch -> ONNX step shared by the export tools in this folder (needs torch)."""

from __future__ import annotations

from pathlib import Path


def export(model, output: Path, *, size: int, opset: int, fp16: bool, dynamic_axes: dict) -> None:
    """Trace `model` (eval mode) on one size x size NCHW image and write it to `output`, with
    the input and output names the spec files use ("image", "embedding")."""
    import torch

    dummy = torch.zeros(1, 3, size, size)
    if fp16:
        model, dummy = model.half(), dummy.half()
    output.parent.mkdir(parents=True, exist_ok=True)
    torch.onnx.export(
        model,
        dummy,
        str(output),
        input_names=["image"],
        output_names=["embedding"],
        dynamic_axes=dynamic_axes,
        opset_version=opset,
    )
