"""A KServe v2 runtime for Seldon MLServer that runs an embedding model's .onnx file with
onnxruntime, as NVIDIA Triton's onnxruntime backend would.

Triton cannot be installed on our development and CI machines; MLServer speaks the same gRPC
protocol (KServe v2), so the tests and benchmarks/triton_path.py serve the model through this runtime
and reach it with the server's Triton embedder (`--embedder triton`). It runs in MLServer's own
environment (mlserver, onnxruntime, numpy; not imgdedup) and is named in the model-settings.json
that model/triton_repository.py writes:

    "implementation": "onnx_embedding.OnnxEmbedding", "parameters": {"uri": "1/model.onnx"}

with this folder on MLServer's PYTHONPATH. The inputs are passed to the graph as they arrive
(raw tensors), the outputs are sent back raw. ONNX_EMBEDDING_THREADS sets onnxruntime's threads
per inference (default: its own choice, every core).
"""

from __future__ import annotations

import asyncio
import os

import numpy as np
import onnxruntime as ort
from mlserver import MLModel
from mlserver.codecs import NumpyCodec
from mlserver.types import InferenceRequest, InferenceResponse
from mlserver.utils import get_model_uri


class OnnxEmbedding(MLModel):
    async def load(self) -> bool:
        path = await get_model_uri(self.settings)  # parameters.uri, relative to the model's folder
        options = ort.SessionOptions()
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        threads = int(os.environ.get("ONNX_EMBEDDING_THREADS", "0"))
        if threads:
            options.intra_op_num_threads = threads
        options.add_session_config_entry("session.intra_op.allow_spinning", "0")
        self._session = ort.InferenceSession(path, sess_options=options, providers=["CPUExecutionProvider"])
        self._outputs = [o.name for o in self._session.get_outputs()]
        return True

    async def predict(self, payload: InferenceRequest) -> InferenceResponse:
        feed = {i.name: NumpyCodec.decode_input(i) for i in payload.inputs}
        wanted = [o.name for o in payload.outputs] if payload.outputs else self._outputs
        # On a thread: the event loop keeps serving gRPC, and concurrent requests run side by
        # side on the one session (onnxruntime's run is thread-safe), like Triton's instances.
        results = await asyncio.to_thread(self._session.run, wanted, feed)
        return InferenceResponse(
            model_name=self.name,
            model_version=self.version,
            outputs=[NumpyCodec.encode_output(name, np.asarray(r)) for name, r in zip(wanted, results)],
        )
