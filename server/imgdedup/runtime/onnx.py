"""In-process embedding with onnxruntime: CUDA when a GPU is usable, CPU otherwise."""

from __future__ import annotations

import logging
import os
import queue
import threading
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from imgdedup.runtime.base import as_embeddings, to_model_input
from imgdedup.runtime.spec import ModelSpec

log = logging.getLogger(__name__)

_GPU_PROVIDERS = ("TensorrtExecutionProvider", "CUDAExecutionProvider")


@dataclass(frozen=True)
class GpuOptions:
    """onnxruntime-gpu's provider options (settings cuda_* and tensorrt*)."""

    device_id: int = 0
    mem_limit_mb: int = 0  # 0: no limit
    cudnn_conv_algo_search: str = "EXHAUSTIVE"
    tensorrt: bool = False
    tensorrt_fp16: bool = True
    tensorrt_cache_dir: Path | None = None

    def providers(self, available: list[str], requested: list[str] | None) -> list:
        """The provider list for a session: names, or (name, options) for the GPU ones."""
        names = requested or [*(["TensorrtExecutionProvider"] if self.tensorrt else []), "CUDAExecutionProvider", "CPUExecutionProvider"]
        out: list = []
        for name in names:
            if name not in available and name != "CPUExecutionProvider":
                continue
            if name == "CUDAExecutionProvider":
                opts = {"device_id": str(self.device_id), "cudnn_conv_algo_search": self.cudnn_conv_algo_search, "arena_extend_strategy": "kSameAsRequested"}
                if self.mem_limit_mb:
                    opts["gpu_mem_limit"] = str(self.mem_limit_mb * 1024 * 1024)
                out.append((name, opts))
            elif name == "TensorrtExecutionProvider":
                opts = {"device_id": str(self.device_id), "trt_fp16_enable": str(self.tensorrt_fp16), "trt_engine_cache_enable": "True"}
                if self.tensorrt_cache_dir is not None:
                    self.tensorrt_cache_dir.mkdir(parents=True, exist_ok=True)
                    opts["trt_engine_cache_path"] = str(self.tensorrt_cache_dir)
                out.append((name, opts))
            else:
                out.append(name)
        return out


class OnnxEmbedder:
    """onnxruntime sessions of one model; `embed` may be called from several threads at once.

    `session_threads` gives the intra-op thread count of each worker session: concurrent calls
    take the first free one. `solo_threads`, when set, adds one more session with that many
    threads for calls that say they run `alone`: a lone image then uses every core (lowest
    latency), while under load narrow sessions side by side use the cores better (2 cores,
    BulkCheck: 18.3 ms of model CPU per image on two 1-thread sessions against 19.1 when a
    2-thread session overlapped a 1-thread one: parallel sections stall when a core is taken).
    """

    def __init__(self, spec: ModelSpec, *, providers: list[str] | None = None, session_threads: list[int] | None = None, solo_threads: int = 0, gpu: GpuOptions = GpuOptions(), io_binding: bool | None = None):
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

        available = ort.get_available_providers()
        if any(p in available for p in _GPU_PROVIDERS) and hasattr(ort, "preload_dlls"):
            # onnxruntime-gpu >= 1.21 finds CUDA and cuDNN in the nvidia-* wheels (the gpu
            # extra installs them): no system CUDA needed. Failing that, the CPU serves.
            try:
                ort.preload_dlls()
            except Exception as exc:  # noqa: BLE001 - a missing library only means no GPU
                log.warning("could not preload the CUDA/cuDNN libraries: %s", exc)
        requested = gpu.providers(available, providers)
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
        on_gpu = self.on_gpu = any(p in self._providers for p in _GPU_PROVIDERS)
        self.on_cpu = not on_gpu
        self._solo = self._session_for(ort, path, solo_threads, requested) if solo_threads and not on_gpu else None
        # I/O binding on a GPU: the output is allocated once per call where it is needed and
        # copied back in one piece, instead of through the generic run path.
        self._io_binding = on_gpu if io_binding is None else io_binding
        self._solo_lock = threading.Lock()
        log.info("model %s loaded from %s; execution providers in use: %s", spec.name, path, self._providers)
        names = [p if isinstance(p, str) else p[0] for p in requested]
        if any(p in names for p in _GPU_PROVIDERS) and not on_gpu:
            log.warning("CUDA was requested but is not usable here; running on CPU")
        if on_gpu and _quantized(path):
            log.warning("model %s is int8 (QDQ): under the CUDA provider parts of it may run on the CPU; a float or fp16 export (model/) suits GPUs better", spec.name)
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


    def _check_io(self) -> None:
        names_in = {i.name for i in self._session.get_inputs()}
        names_out = {o.name for o in self._session.get_outputs()}
        if self.spec.input.name not in names_in:
            raise ValueError(f"spec input {self.spec.input.name!r} not in model inputs {sorted(names_in)}")
        if self.spec.output.name not in names_out:
            raise ValueError(f"spec output {self.spec.output.name!r} not in model outputs {sorted(names_out)}")

    def _run_bound(self, session, feed: dict) -> np.ndarray:
        binding = session.io_binding()
        for name, value in feed.items():
            binding.bind_cpu_input(name, value)
        binding.bind_output(self.spec.output.name, "cpu")
        session.run_with_iobinding(binding)
        return binding.copy_outputs_to_cpu()[0]

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
            if self._io_binding:
                out = self._run_bound(session, feed)
            else:
                (out,) = session.run([self.spec.output.name], feed)
        finally:
            if solo:
                self._solo_lock.release()
            else:
                self._free.put((rank, session))
        return as_embeddings(out, len(images), self.spec)


def _quantized(path: Path) -> bool:
    """Whether the graph holds QuantizeLinear nodes (int8 QDQ), read without running it."""
    try:
        import onnx
    except ImportError:
        return False
    try:
        model = onnx.load(str(path), load_external_data=False)
    except Exception:  # noqa: BLE001 - only a hint for a log line
        return False
    return any(n.op_type == "QuantizeLinear" for n in model.graph.node)
