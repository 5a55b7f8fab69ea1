"""Write a Triton model repository for a model spec (a built-in name or a spec .toml).

    python model/triton_repository.py --model sscd_disc_mixup --out /srv/triton-models
    tritonserver --model-repository /srv/triton-models
    dedup serve --embedder triton --triton-url TRITON_HOST:8001

It writes OUT/<name>/config.pbtxt (the spec's input and output, max_batch_size, dynamic_batching,
instance_group, optionally the TensorRT accelerator) and OUT/<name>/1/model.onnx as a symbolic
link to the spec's .onnx file, where it is installed: the default model's licence allows its use
unmodified, as a dependency, so it is placed by reference, never copied or converted by us. With
--no-link the tool prints the `cp` command instead; a copy you make for your own Triton host is
your use of the package. Mount the linked file's folder into a Triton container as well, or copy.

It also writes OUT/<name>/model-settings.json for Seldon MLServer with model/mlserver's onnxruntime
runtime: MLServer speaks Triton's gRPC protocol (KServe v2), and the tests and
benchmarks/triton_path.py use it where Triton cannot be installed. Triton ignores that file.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

_TRITON_TYPES = {"uint8": "TYPE_UINT8", "float32": "TYPE_FP32", "float16": "TYPE_FP16"}
_KSERVE_TYPES = {"uint8": "UINT8", "float32": "FP32", "float16": "FP16"}


def input_dims(spec) -> list[int]:
    """The input's shape without the batch dimension, as the server sends it."""
    size = spec.input_size if spec.input.resize.mode == "square" else -1
    return [size, size, 3] if spec.input.layout == "NHWC" else [3, size, size]


def output_dtype(model_path: Path) -> str:
    """The graph's output element type (onnxruntime reads it; nothing is run)."""
    import onnxruntime as ort

    session = ort.InferenceSession(str(model_path), providers=["CPUExecutionProvider"])
    kind = session.get_outputs()[0].type  # e.g. "tensor(float)"
    return {"tensor(float)": "float32", "tensor(float16)": "float16"}.get(kind, "float32")


def config_pbtxt(spec, name: str, *, out_dtype: str, max_batch_size: int, preferred: list[int], queue_delay_us: int, kind: str, count: int, tensorrt: bool) -> str:
    lines = [
        f'name: "{name}"',
        'backend: "onnxruntime"',
        f"max_batch_size: {max_batch_size}",
        "input [",
        "  {",
        f'    name: "{spec.input.name}"',
        f"    data_type: {_TRITON_TYPES[spec.input.dtype]}",
        f"    dims: [ {', '.join(map(str, input_dims(spec)))} ]",
        "  }",
        "]",
        "output [",
        "  {",
        f'    name: "{spec.output.name}"',
        f"    data_type: {_TRITON_TYPES[out_dtype]}",
        f"    dims: [ {spec.output.dim} ]",
        "  }",
        "]",
        "dynamic_batching {",
        f"  preferred_batch_size: [ {', '.join(str(p) for p in preferred if p <= max_batch_size)} ]",
        f"  max_queue_delay_microseconds: {queue_delay_us}",
        "}",
        "instance_group [",
        "  {",
        f"    count: {count}",
        f"    kind: {kind}",
        "  }",
        "]",
    ]
    if tensorrt:
        lines += [
            "optimization {",
            "  execution_accelerators {",
            "    gpu_execution_accelerator : [ {",
            '      name : "tensorrt"',
            '      parameters { key: "precision_mode" value: "FP16" }',
            '      parameters { key: "trt_engine_cache_enable" value: "true" }',
            "    } ]",
            "  }",
            "}",
        ]
    return "\n".join(lines) + "\n"


def model_settings(spec, name: str, *, out_dtype: str) -> dict:
    """MLServer's model-settings.json for the same model (model/mlserver/onnx_embedding.py)."""
    return {
        "name": name,
        "implementation": "onnx_embedding.OnnxEmbedding",
        "parameters": {"uri": "1/model.onnx"},
        "inputs": [{"name": spec.input.name, "datatype": _KSERVE_TYPES[spec.input.dtype], "shape": [-1, *input_dims(spec)]}],
        "outputs": [{"name": spec.output.name, "datatype": _KSERVE_TYPES[out_dtype], "shape": [-1, spec.output.dim]}],
        # Our server batches already; MLServer's adaptive batching would only add its delay.
        "max_batch_size": 0,
        "max_batch_time": 0,
    }


def write(spec, out: Path, *, name: str | None = None, link: bool = True, max_batch_size: int = 64, preferred: list[int] | None = None, queue_delay_us: int = 2000, kind: str = "KIND_GPU", count: int = 1, tensorrt: bool = False) -> Path:
    """Write the repository entry for `spec` under `out`; returns the model's folder."""
    name = name or spec.name
    source = spec.model_path().resolve()
    if not source.is_file():
        raise FileNotFoundError(f"model file for {spec.name!r} not found: {source}")
    folder = out / name
    (folder / "1").mkdir(parents=True, exist_ok=True)
    out_dtype = output_dtype(source)
    (folder / "config.pbtxt").write_text(config_pbtxt(spec, name, out_dtype=out_dtype, max_batch_size=max_batch_size, preferred=preferred or [8, 16, 32], queue_delay_us=queue_delay_us, kind=kind, count=count, tensorrt=tensorrt))
    (folder / "model-settings.json").write_text(json.dumps(model_settings(spec, name, out_dtype=out_dtype), indent=2) + "\n")
    target = folder / "1" / "model.onnx"
    if link:
        if target.is_symlink() or target.exists():
            target.unlink()
        target.symlink_to(source)
    else:
        print(f"place the model file yourself: cp {source} {target}", file=sys.stderr)
    return folder


def main(argv: list[str] | None = None) -> int:
    from imgdedup.runtime import load_spec

    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--model", default="sscd_disc_mixup", help="built-in model spec name or spec .toml (default sscd_disc_mixup)")
    p.add_argument("--out", type=Path, required=True, help="the model repository folder")
    p.add_argument("--name", help="the model's name on Triton (default: the spec's name; dedup's triton_model)")
    p.add_argument("--max-batch-size", type=int, default=64)
    p.add_argument("--preferred-batch-sizes", default="8,16,32", help="comma-separated (default 8,16,32)")
    p.add_argument("--queue-delay-us", type=int, default=2000, help="Triton's dynamic batching delay (default 2000)")
    p.add_argument("--kind", choices=["KIND_GPU", "KIND_CPU"], default="KIND_GPU")
    p.add_argument("--count", type=int, default=1, help="model instances per device (default 1)")
    p.add_argument("--tensorrt", action="store_true", help="run it with the TensorRT accelerator (fp16, engine cache)")
    p.add_argument("--no-link", action="store_true", help="do not link the .onnx file; print the copy command")
    args = p.parse_args(argv)
    folder = write(
        load_spec(args.model), args.out, name=args.name, link=not args.no_link, max_batch_size=args.max_batch_size,
        preferred=[int(x) for x in args.preferred_batch_sizes.split(",") if x], queue_delay_us=args.queue_delay_us,
        kind=args.kind, count=args.count, tensorrt=args.tensorrt,
    )
    print(folder)
    return 0


if __name__ == "__main__":
    sys.exit(main())
