"""Model runtime: model specs and the embedders that run them."""

from imgdedup.runtime.base import Embedder
from imgdedup.runtime.spec import ModelSpec, builtin_spec_names, load_spec

__all__ = ["Embedder", "ModelSpec", "builtin_spec_names", "load_spec", "create_embedder"]


def create_embedder(spec: ModelSpec, *, providers: list[str] | None = None, workers: int = 1, intra_op_threads: int = 0) -> Embedder:
    """An embedder that `workers` threads may call at once.

    CPU threads: each worker session gets cores / workers (or intra_op_threads); with more than
    one worker and intra_op_threads unset, one more session on every core serves inferences that
    run alone, so a lone request is fast and concurrent batches share the cores."""
    import os

    from imgdedup.runtime.onnx import OnnxEmbedder

    cores = os.cpu_count() or 1
    each = intra_op_threads or max(1, cores // workers)
    solo = cores if not intra_op_threads and each < cores else 0
    return OnnxEmbedder(spec, providers=providers, session_threads=[each] * workers, solo_threads=solo)
