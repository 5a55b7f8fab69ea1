"""Model runtime: model specs and the embedders that run them."""

from imgdedup.runtime.base import Embedder
from imgdedup.runtime.spec import ModelSpec, builtin_spec_names, load_spec

__all__ = ["Embedder", "ModelSpec", "builtin_spec_names", "load_spec", "create_embedder"]


def create_embedder(spec: ModelSpec, *, providers: list[str] | None = None, intra_op_threads: int = 0) -> Embedder:
    from imgdedup.runtime.onnx import OnnxEmbedder

    return OnnxEmbedder(spec, providers=providers, intra_op_threads=intra_op_threads)
