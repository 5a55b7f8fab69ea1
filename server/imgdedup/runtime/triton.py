"""Remote embedding on NVIDIA Triton Inference Server (or any KServe v2 gRPC server), through
the `tritonclient` package.

The server's own dynamic batcher still forms the batches; each batch goes to Triton as one
uint8 NHWC tensor of the spec's shape (the compact form: no float conversion on our side, the
graph normalises), and Triton may batch again across the dedup servers that share it. At start
the model's metadata is checked against the spec, so a wrong model fails the start, not the
first request. `ready()` asks Triton whether the model is ready; the server's health follows it.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from imgdedup.runtime.base import InferenceError, as_embeddings, to_model_input
from imgdedup.runtime.spec import ModelSpec

log = logging.getLogger(__name__)

# The KServe v2 datatype of each spec dtype.
_DATATYPES = {"uint8": "UINT8", "float32": "FP32", "float16": "FP16"}
# gRPC codes after which the same request may succeed: the server restarts, the model reloads.
_RETRYABLE = {"StatusCode.UNAVAILABLE", "StatusCode.DEADLINE_EXCEEDED"}


@dataclass(frozen=True)
class TritonOptions:
    url: str  # host:port of Triton's gRPC endpoint
    model: str
    model_version: str = ""
    timeout_s: float = 10.0  # per request
    retries: int = 2  # more tries after a retryable failure, with backoff
    start_timeout_s: float = 300.0  # how long the start waits for the model to be ready
    headers: dict[str, str] = field(default_factory=dict)  # sent with every call (auth, routing)
    tls: bool = False
    tls_ca_file: Path | None = None  # default: the system's roots
    tls_cert_file: Path | None = None  # client certificate, for mutual TLS
    tls_key_file: Path | None = None


class TritonEmbedder:
    """Embeddings from a model served by Triton. Thread-safe: tritonclient's gRPC client takes
    concurrent `infer` calls on one channel."""

    # Triton batches again across its clients: our batches stay CPU-sized.
    on_gpu = False
    on_cpu = False  # Triton's, wherever it runs

    def __init__(self, spec: ModelSpec, options: TritonOptions):
        try:
            import tritonclient.grpc as grpcclient
            from tritonclient.utils import InferenceServerException
        except ImportError as exc:
            raise RuntimeError("tritonclient is not installed: install the package with the [triton] extra") from exc
        self.spec = spec
        self.options = options
        self._grpcclient = grpcclient
        self._exception = InferenceServerException
        if options.tls_cert_file is not None and options.tls_key_file is None or options.tls_key_file is not None and options.tls_cert_file is None:
            raise ValueError("the Triton client certificate needs both triton_tls_cert_file and triton_tls_key_file")
        tls = options.tls or any(f is not None for f in (options.tls_ca_file, options.tls_cert_file))
        self._client = grpcclient.InferenceServerClient(
            options.url,
            ssl=tls,
            root_certificates=str(options.tls_ca_file) if options.tls_ca_file else None,
            private_key=str(options.tls_key_file) if options.tls_key_file else None,
            certificate_chain=str(options.tls_cert_file) if options.tls_cert_file else None,
            channel_args=[
                ("grpc.max_send_message_length", -1),
                ("grpc.max_receive_message_length", -1),
                # Reconnect within seconds of Triton's return (gRPC's backoff grows to 2 min).
                ("grpc.initial_reconnect_backoff_ms", 200),
                ("grpc.max_reconnect_backoff_ms", 2000),
            ],
        )
        self._headers = dict(options.headers) or None
        try:
            self._wait_until_ready()
            self._check_metadata()
            # The first request may be slow (Triton loads lazily, a TensorRT engine builds):
            # pay for it now, like the in-process embedder's first run.
            size = spec.input_size
            self.embed(np.zeros((1, size, size, 3), np.uint8))
        except BaseException:
            self._client.close()
            raise
        log.info("model %s served by Triton at %s as %r%s", spec.name, options.url, options.model, f" version {options.model_version}" if options.model_version else "")

    @property
    def providers(self) -> list[str]:
        return [f"triton:{self.options.url}/{self.options.model}"]

    def ready(self) -> bool:
        try:
            return bool(self._client.is_model_ready(self.options.model, self.options.model_version, headers=self._headers, client_timeout=min(self.options.timeout_s, 5.0)))
        except self._exception as exc:
            log.debug("Triton readiness check failed: %s", exc)
            return False

    def close(self) -> None:
        self._client.close()

    # -- start -----------------------------------------------------------------------------
    def _wait_until_ready(self) -> None:
        deadline = time.monotonic() + self.options.start_timeout_s
        delay, said = 0.2, False
        while True:
            if self.ready():
                return
            if time.monotonic() >= deadline:
                raise RuntimeError(f"model {self.options.model!r} on Triton at {self.options.url} not ready after {self.options.start_timeout_s:.0f} s")
            if not said:
                log.warning("waiting for model %r on Triton at %s to be ready", self.options.model, self.options.url)
                said = True
            time.sleep(delay)
            delay = min(delay * 2, 2.0)

    def _check_metadata(self) -> None:
        """The served model must take the spec's input and give the spec's output."""
        where = f"model {self.options.model!r} on Triton at {self.options.url}"
        meta = self._client.get_model_metadata(self.options.model, self.options.model_version, headers=self._headers, client_timeout=self.options.timeout_s)
        inputs = {t.name: t for t in meta.inputs}
        outputs = {t.name: t for t in meta.outputs}
        inp, out = self.spec.input, self.spec.output
        if inp.name not in inputs:
            raise ValueError(f"{where} has no input {inp.name!r} (it has {sorted(inputs)})")
        if out.name not in outputs:
            raise ValueError(f"{where} has no output {out.name!r} (it has {sorted(outputs)})")
        got = inputs[inp.name]
        if got.datatype != _DATATYPES[inp.dtype]:
            raise ValueError(f"{where}: input {inp.name!r} is {got.datatype}; the spec sends {_DATATYPES[inp.dtype]}")
        size = self.spec.input_size
        channels_last = inp.layout == "NHWC"
        want = [3, size, size] if not channels_last else [size, size, 3]
        shape = list(got.shape)[-3:]  # without the batch dimension (present unless max_batch_size is 0)
        if len(shape) != 3 or any(s not in (-1, w) for s, w in zip(shape, want)) or (shape[2 if channels_last else 0] not in (-1, 3)):
            raise ValueError(f"{where}: input {inp.name!r} has shape {list(got.shape)}; the spec sends [N, {', '.join(map(str, want))}] ({inp.layout})")
        out_shape = list(outputs[out.name].shape)
        if out_shape and out_shape[-1] not in (-1, out.dim):
            raise ValueError(f"{where}: output {out.name!r} has shape {out_shape}; the spec says dim {out.dim}")

    # -- inference -------------------------------------------------------------------------
    def embed(self, images: np.ndarray, *, alone: bool = False) -> np.ndarray:
        x = to_model_input(images, self.spec)
        g = self._grpcclient
        tensor = g.InferInput(self.spec.input.name, list(x.shape), _DATATYPES[self.spec.input.dtype])
        tensor.set_data_from_numpy(x)  # raw bytes: the compact form
        wanted = [g.InferRequestedOutput(self.spec.output.name)]
        delay = 0.1
        for attempt in range(self.options.retries + 1):
            try:
                result = self._client.infer(self.options.model, [tensor], model_version=self.options.model_version, outputs=wanted, headers=self._headers, client_timeout=self.options.timeout_s)
                break
            except self._exception as exc:
                status = exc.status() or ""
                if status in _RETRYABLE and attempt < self.options.retries:
                    log.warning("Triton inference failed (%s), retrying in %.1f s: %s", status, delay, exc.message())
                    time.sleep(delay)
                    delay *= 2
                    continue
                raise _as_inference_error(exc, self.options) from exc
        out = result.as_numpy(self.spec.output.name)
        if out is None:
            raise InferenceError(f"Triton returned no output {self.spec.output.name!r}")
        return as_embeddings(out, len(images), self.spec, who="Triton")


def _as_inference_error(exc, options: TritonOptions) -> InferenceError:
    status = exc.status() or ""
    message = f"Triton at {options.url}, model {options.model!r}: {status.removeprefix('StatusCode.') or 'error'}: {exc.message()}"
    if status in _RETRYABLE or status == "StatusCode.NOT_FOUND":  # NOT_FOUND: the model is (re)loading
        return InferenceError(message, kind="unavailable")
    if status == "StatusCode.RESOURCE_EXHAUSTED":
        return InferenceError(message, kind="overloaded")
    return InferenceError(message)
