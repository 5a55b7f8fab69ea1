"""Export torchvision's ResNet-50 (pooled 2048-d features) to ONNX for `dedup serve --model`.

You run this yourself (it needs torch and torchvision, which the server does not):
    pip install torch torchvision onnx
    python model/export_torchvision_resnet50.py model/examples/resnet50.onnx
    dedup serve --model model/examples/torchvision_resnet50.toml

The graph takes float32 NCHW images normalised with ImageNet mean/std (the spec file says so,
and the server prepares inputs from it) and returns the global-average-pooled features. It
has a dynamic batch axis; --fp16 halves the weights for GPUs.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from _onnx_export import export  # this folder's helper (the script's directory is on sys.path)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("output", type=Path, help="where to write the .onnx file")
    parser.add_argument("--size", type=int, default=224, help="input height and width used for tracing")
    parser.add_argument("--weights", default="IMAGENET1K_V2", help="torchvision weights enum name")
    parser.add_argument("--opset", type=int, default=17)
    parser.add_argument("--fp16", action="store_true", help="store float16 weights (GPU inference)")
    args = parser.parse_args()

    import torch
    import torchvision

    model = torchvision.models.resnet50(weights=args.weights)
    model.fc = torch.nn.Identity()  # keep the pooled features, drop the classifier
    model.eval()
    export(model, args.output, size=args.size, opset=args.opset, fp16=args.fp16, dynamic_axes={"image": {0: "batch"}, "embedding": {0: "batch"}})
    print(f"wrote {args.output}; describe it with a spec like model/examples/torchvision_resnet50.toml")


if __name__ == "__main__":
    main()
