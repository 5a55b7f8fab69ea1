"""In-process embedding with onnxruntime: CUDA when a GPU is usable, CPU otherwise."""

from __future__ import annotations

import logging
import os
import queue
import threading

import numpy as np

from imgdedup.runtime.base import l2_normalize, to_model_input
from imgdedup.runtime.spec import ModelSpec

log = logging.getLogger(__name__)

_GPU_PROVIDERS = ("CUDAExecutionProvider",)


class OnnxEmbedder:
    """onnxruntime sessions of one model; `embed` may be called from several threads at once.

    `session_threads` gives the intra-op thread count of each worker session: concurrent calls
    take the first free one. `solo_threads`, when set, adds one more session with that many
    threads for calls that say they run `alone`: a lone image then uses every core (lowest
    latency), while under load narrow sessions side by side use the cores better (2 cores,
    BulkCheck: 18.3 ms of model CPU per image on two 1-thread sessions against 19.1 when a
    2-thread session overlapped a 1-thread one: parallel sections stall when a core is taken).
    """

    def __init__(self, spec: ModelSpec, *, providers: list[str] | None = None, session_threads: list[int] | None = None, solo_threads: int = 0):
        try:
            import onnxruntime as ort
        except ImportError as exc:  # neither extra installed
            raise RuntimeError(
                "onnxruntime is not installed: install the package with the [cpu] or [gpu] extra"
            ) from exc
        if spec.source.format != "onnx":
            raise ValueError(f"model {spec.name!r} is a {spec.source.format} model: serve it with embedder torch")
        self.spec = spec
        path = spec.model_path()
        if not path.is_file():
            raise FileNotFoundError(f"model file for {spec.name!r} not found: {path}")

        requested = providers or self._default_providers(ort.get_available_providers())
        sessions = [self._session_for(ort, path, n, requested) for n in (session_threads or [os.cpu_count() or 1])]
        self._session = sessions[0]
        self._free: queue.PriorityQueue = queue.PriorityQueue()
        for rank, session in enumerate(sessions):
            self._free.put((rank, session))
        # onnxruntime-gpu lists CUDA as available even without a GPU and then silently falls
        # back to CPU: only the session knows what it really uses.
        self._providers = list(self._session.get_providers())
        # Thread counts are a CPU matter: on a GPU a solo session would only hold another copy
        # of the weights.
        on_gpu = any(p in self._providers for p in _GPU_PROVIDERS)
        self._solo = self._session_for(ort, path, solo_threads, requested) if solo_threads and not on_gpu else None
        self._solo_lock = threading.Lock()
        log.info("model %s loaded from %s; execution providers in use: %s", spec.name, path, self._providers)
        if any(p in requested for p in _GPU_PROVIDERS) and not any(p in self._providers for p in _GPU_PROVIDERS):
            log.warning("CUDA was requested but is not usable here; running on CPU")
        self._check_io()
        # A session's first run initialises lazily (tens of ms): pay for it now, on every session.
        size = spec.input_size
        feed = {spec.input.name: to_model_input(np.zeros((1, size, size, 3), np.uint8), spec)}
        for session in [*sessions, *([self._solo] if self._solo else [])]:
            session.run([spec.output.name], feed)

    @staticmethod
    def _session_for(ort, path, threads: int, providers: list[str]):
        options = ort.SessionOptions()
        # The default model's weights are int8 (QDQ): full graph optimisation fuses them into
        # quantised kernels; BASIC measured 6-9x slower.
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        options.intra_op_num_threads = threads
        options.inter_op_num_threads = 1
        options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
        # Idle onnxruntime threads spin by default, burning the cores that decoding and Milvus
        # need between inferences (BulkCheck 67 -> 72 img/s on 2 cores without spinning).
        options.add_session_config_entry("session.intra_op.allow_spinning", "0")
        return ort.InferenceSession(str(path), sess_options=options, providers=providers)

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

    def ready(self) -> bool:
        return True  # in process: ready once constructed

    def close(self) -> None:
        pass  # sessions go with the object

    def embed(self, images: np.ndarray, *, alone: bool = False) -> np.ndarray:
        feed = {self.spec.input.name: to_model_input(images, self.spec)}
        solo = alone and self._solo is not None and self._solo_lock.acquire(blocking=False)
        rank, session = (-1, self._solo) if solo else self._free.get()
        try:
            (out,) = session.run([self.spec.output.name], feed)
        finally:
            if solo:
                self._solo_lock.release()
            else:
                self._free.put((rank, session))
        out = np.asarray(out, dtype=np.float32).reshape(len(images), -1)
        if out.shape[1] != self.spec.output.dim:
            raise ValueError(f"model returned dim {out.shape[1]}, spec says {self.spec.output.dim}")
        return out if self.spec.output.l2_normalized else l2_normalize(out)
