"""In-process embedding with onnxruntime: CUDA when a GPU is usable, CPU otherwise."""

from __future__ import annotations

import logging
import os

import numpy as np

from imgdedup.runtime.base import l2_normalize, to_model_input
from imgdedup.runtime.spec import ModelSpec

log = logging.getLogger(__name__)

_GPU_PROVIDERS = ("CUDAExecutionProvider",)


class OnnxEmbedder:
    """One onnxruntime session; `embed` is called from one worker thread at a time."""

    def __init__(self, spec: ModelSpec, *, providers: list[str] | None = None, intra_op_threads: int = 0):
        try:
            import onnxruntime as ort
        except ImportError as exc:  # neither extra installed
            raise RuntimeError(
                "onnxruntime is not installed: install the package with the [cpu] or [gpu] extra"
            ) from exc
        self.spec = spec
        path = spec.model_path()
        if not path.is_file():
            raise FileNotFoundError(f"model file for {spec.name!r} not found: {path}")

        options = ort.SessionOptions()
        # The default model's weights are int8 (QDQ): full graph optimisation fuses them into
        # quantised kernels; BASIC measured 6-9x slower.
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        options.intra_op_num_threads = intra_op_threads or (os.cpu_count() or 1)
        options.inter_op_num_threads = 1
        options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
        if os.environ.get("DEDUP_ORT_SPIN", "0") != "1":
            # Idle onnxruntime threads spin by default, burning the cores that decoding and
            # Milvus need between inferences.
            options.add_session_config_entry("session.intra_op.allow_spinning", "0")

        requested = providers or self._default_providers(ort.get_available_providers())
        self._session = ort.InferenceSession(str(path), sess_options=options, providers=requested)
        # onnxruntime-gpu lists CUDA as available even without a GPU and then silently falls
        # back to CPU: only the session knows what it really uses.
        self._providers = list(self._session.get_providers())
        log.info("model %s loaded from %s; execution providers in use: %s", spec.name, path, self._providers)
        if any(p in requested for p in _GPU_PROVIDERS) and not any(p in self._providers for p in _GPU_PROVIDERS):
            log.warning("CUDA was requested but is not usable here; running on CPU")
        self._check_io()

    @staticmethod
    def _default_providers(available: list[str]) -> list[str]:
        chosen = [p for p in _GPU_PROVIDERS if p in available]
        return [*chosen, "CPUExecutionProvider"]

    def _check_io(self) -> None:
        names_in = {i.name for i in self._session.get_inputs()}
        names_out = {o.name for o in self._session.get_outputs()}
        if self.spec.input.name not in names_in:
            raise ValueError(f"spec input {self.spec.input.name!r} not in model inputs {sorted(names_in)}")
        if self.spec.output.name not in names_out:
            raise ValueError(f"spec output {self.spec.output.name!r} not in model outputs {sorted(names_out)}")

    @property
    def providers(self) -> list[str]:
        return list(self._providers)

    def embed(self, images: np.ndarray) -> np.ndarray:
        feed = {self.spec.input.name: to_model_input(images, self.spec)}
        (out,) = self._session.run([self.spec.output.name], feed)
        out = np.asarray(out, dtype=np.float32).reshape(len(images), -1)
        if out.shape[1] != self.spec.output.dim:
            raise ValueError(f"model returned dim {out.shape[1]}, spec says {self.spec.output.dim}")
        return out if self.spec.output.l2_normalized else l2_normalize(out)
