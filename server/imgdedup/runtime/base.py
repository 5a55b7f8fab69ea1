"""The one small interface between the server and whatever computes embeddings.

In-process onnxruntime is one implementation (runtime/onnx.py), a client of a remote NVIDIA
Triton server another (runtime/triton.py). The server hands over a batch of same-shaped uint8 RGB images (N, H, W, 3), as
the model's spec sized them, and gets L2-normalised float32 embeddings (N, dim) back.
"""

from __future__ import annotations

from typing import Literal, Protocol

import numpy as np

from imgdedup.runtime.spec import ModelSpec


class Embedder(Protocol):
    """Ready when constructed: any lazy initialisation (a first inference) is already paid for,
    so the first real call is as fast as the next."""

    spec: ModelSpec
    # The model runs on a GPU in this process: the server forms larger batches by default.
    on_gpu: bool
    # Inference runs on this host's CPU cores (onnxruntime or PyTorch on the CPU), not on a GPU
    # or another server: the server then decodes on threads by default (core/decoding.py).
    on_cpu: bool

    @property
    def providers(self) -> list[str]:
        """Where inference runs, as the backend reports it (e.g. ["CUDAExecutionProvider", ...])."""
        ...

    def embed(self, images: np.ndarray, *, alone: bool = False) -> np.ndarray:
        """uint8 (N, H, W, 3) RGB -> float32 (N, dim), each row L2-normalised. Blocking.

        `alone`: a hint that no other inference runs or waits (none of its priority or above:
        the caller runs lower-priority ones on threads that yield the cores), so this one may
        take every core.

        Raises InferenceError when the backend fails the batch."""
        ...

    def ready(self) -> bool:
        """Whether inference can run now (a remote model is loaded and answering). Blocking,
        quick: the server's health follows it."""
        ...

    def close(self) -> None:
        """Release connections and sessions; no call follows."""
        ...


class InferenceError(Exception):
    """A batch could not be embedded. `kind`: "unavailable" (the backend is down or reloading:
    retry later), "overloaded" (it sheds load: retry after a pause) or "failed" (anything else)."""

    def __init__(self, message: str, *, kind: Literal["unavailable", "overloaded", "failed"] = "failed"):
        super().__init__(message)
        self.kind = kind


def to_model_input(images: np.ndarray, spec: ModelSpec) -> np.ndarray:
    """Turn a uint8 NHWC RGB batch into what the model's input spec asks for."""
    inp = spec.input
    x = images if inp.channels == "RGB" else images[..., ::-1]
    if inp.dtype != "uint8":
        x = x.astype(np.float32)
        if inp.normalize is not None:
            norm = inp.normalize
            x = (x * norm.scale - np.asarray(norm.mean, np.float32)) / np.asarray(norm.std, np.float32)
        x = x.astype(inp.dtype)
    if inp.layout == "NCHW":
        x = x.transpose(0, 3, 1, 2)
    return np.ascontiguousarray(x)


def as_embeddings(out, n: int, spec: ModelSpec, *, who: str = "model", normalized: bool | None = None) -> np.ndarray:
    """A runtime's raw output as the (n, dim) float32 rows, L2-normalised, that the server stores.
    `normalized`: whether the output already is (default: as the spec says). InferenceError
    when the output's width is not the spec's dimension."""
    out = np.asarray(out, dtype=np.float32).reshape(n, -1)
    if out.shape[1] != spec.output.dim:
        raise InferenceError(f"{who} returned dim {out.shape[1]}, spec says {spec.output.dim}")
    already = spec.output.l2_normalized if normalized is None else normalized
    return out if already else l2_normalize(out)


def l2_normalize(vectors: np.ndarray) -> np.ndarray:
    vectors = np.asarray(vectors, dtype=np.float32)
    norms = np.linalg.norm(vectors, axis=1, keepdims=True)
    return vectors / np.maximum(norms, 1e-12)
