"""Model runtime: model specs and the embedders that run them."""

from imgdedup.runtime.base import Embedder
from imgdedup.runtime.spec import ModelSpec, builtin_spec_names, load_spec

__all__ = ["Embedder", "ModelSpec", "builtin_spec_names", "load_spec", "create_embedder"]


def create_embedder(spec: ModelSpec, *, providers: list[str] | None = None, workers: int = 1, intra_op_threads: int = 0) -> Embedder:
    """An embedder that `workers` threads may call at once.

    CPU threads: the first session gets every core (or intra_op_threads), the others share the
    cores between them, so a lone request is fast and concurrent batches overlap."""
    import os

    from imgdedup.runtime.onnx import OnnxEmbedder

    cores = os.cpu_count() or 1
    first = intra_op_threads or cores
    others = intra_op_threads or max(1, cores // workers)
    return OnnxEmbedder(spec, providers=providers, session_threads=[first] + [others] * (workers - 1))
