"""Model runtime: model specs and the embedders that run them."""

from imgdedup.runtime.base import Embedder, InferenceError
from imgdedup.runtime.spec import ModelSpec, builtin_spec_names, load_spec

__all__ = ["Embedder", "InferenceError", "ModelSpec", "builtin_spec_names", "load_spec", "create_embedder", "create_torch_embedder", "create_triton_embedder", "gpu_options"]


def create_embedder(spec: ModelSpec, *, providers: list[str] | None = None, workers: int = 1, intra_op_threads: int = 0, gpu=None) -> Embedder:
    """An embedder that `workers` threads may call at once.

    CPU threads: each worker session gets cores / workers (or intra_op_threads); with more than
    one worker and intra_op_threads unset, one more session on every core serves inferences that
    run alone, so a lone request is fast and concurrent batches share the cores."""
    import os

    from imgdedup.runtime.onnx import GpuOptions, OnnxEmbedder

    cores = os.cpu_count() or 1
    each = intra_op_threads or max(1, cores // workers)
    solo = cores if not intra_op_threads and each < cores else 0
    return OnnxEmbedder(spec, providers=providers, session_threads=[each] * workers, solo_threads=solo, gpu=gpu or GpuOptions())


def gpu_options(settings):
    """onnxruntime-gpu's provider options from the settings."""
    from imgdedup.runtime.onnx import GpuOptions

    return GpuOptions(
        device_id=settings.cuda_device_id,
        mem_limit_mb=settings.cuda_mem_limit_mb,
        cudnn_conv_algo_search=settings.cudnn_conv_algo_search,
        tensorrt=settings.tensorrt,
        tensorrt_fp16=settings.tensorrt_fp16,
        tensorrt_cache_dir=settings.tensorrt_cache_dir or settings.data_dir / "tensorrt-cache",
    )


def create_triton_embedder(spec: ModelSpec, settings) -> Embedder:
    """A client of the model on the Triton server the settings name, ready (the model checked
    against the spec and warmed up)."""
    from imgdedup.runtime.triton import TritonEmbedder, TritonOptions

    return TritonEmbedder(spec, TritonOptions(
        url=settings.triton_url,
        model=settings.triton_model or spec.name,
        model_version=settings.triton_model_version,
        timeout_s=settings.triton_timeout_s,
        retries=settings.triton_retries,
        start_timeout_s=settings.triton_start_timeout_s,
        headers=dict(settings.triton_headers),
        tls=settings.triton_tls,
        tls_ca_file=settings.triton_tls_ca_file,
        tls_cert_file=settings.triton_tls_cert_file,
        tls_key_file=settings.triton_tls_key_file,
    ))


def create_torch_embedder(spec: ModelSpec, settings) -> Embedder:
    """The spec's PyTorch model (TorchScript or torchvision) on the configured device, warmed up."""
    from imgdedup.runtime.torch import TorchEmbedder, TorchOptions

    return TorchEmbedder(spec, TorchOptions(device=settings.torch_device, half=settings.torch_half, compile=settings.torch_compile, threads=settings.intra_op_threads))
