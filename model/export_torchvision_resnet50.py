"""Export torchvision's ResNet-50 (the model of Milvus' original image-deduplication tutorial:
ImageNet weights, pooled 2048-d features) to ONNX with the default model's interface, plus its spec.

You run this yourself, with the `torch` extra installed (torch, torchvision, onnx) and the weights
file you downloaded (torchvision's IMAGENET1K_V2 state dict, e.g. resnet50-11ad3fa6.pth):
    python model/export_torchvision_resnet50.py --weights resnet50-11ad3fa6.pth out/resnet50.onnx [--fp16]
    dedup serve --model out/resnet50.toml

The graph takes uint8 [batch, height, width, 3] RGB and normalises inside (ImageNet mean/std);
the output is L2-normalised. --fp16 stores float16 weights and computes in float16 (for GPUs;
input and output stay uint8 and float32). --random-weights exports an untrained network, for
tests and speed measurements only. The spec's threshold is a starting point: generic ImageNet
features are not trained for copy detection, so calibrate (dedup calibrate).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from _onnx_export import export  # this folder's helper (the script's directory is on sys.path)


def network(weights: Path | None):
    """torchvision's ResNet-50 without its classifier (the pooled features), eval mode."""
    import torch
    import torchvision

    net = torchvision.models.resnet50(weights=None)
    if weights is not None:
        state = torch.load(str(weights), map_location="cpu", weights_only=True)
        net.load_state_dict(state)
    net.fc = torch.nn.Identity()
    return net.eval()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("output", type=Path, help="where to write the .onnx file (its spec goes beside it, .toml)")
    weights = parser.add_mutually_exclusive_group(required=True)
    weights.add_argument("--weights", type=Path, help="torchvision ResNet-50 state dict (.pth)")
    weights.add_argument("--random-weights", action="store_true", help="untrained (tests, speed)")
    parser.add_argument("--size", type=int, default=224, help="the square the server resizes to (default 224)")
    parser.add_argument("--name", default="torchvision_resnet50")
    parser.add_argument("--opset", type=int, default=17)
    parser.add_argument("--fp16", action="store_true", help="float16 weights and compute (GPU inference)")
    args = parser.parse_args(argv)

    net = network(None if args.random_weights else args.weights)
    what = "random weights" if args.random_weights else args.weights.name
    spec = export(net, args.output, name=args.name, description=f"torchvision ResNet-50 pooled features ({what}{', fp16' if args.fp16 else ''})", size=args.size, dim=2048, l2_normalized=False, opset=args.opset, fp16=args.fp16, threshold=0.9)
    print(f"wrote {args.output} and {spec}; serve it with: dedup serve --model {spec}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
