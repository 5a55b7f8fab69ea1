"""A real Seldon MLServer serving a model spec's .onnx file over the KServe v2 gRPC protocol,
the protocol of NVIDIA Triton (which cannot be installed here): the Triton embedder's tests and
benchmarks/triton_path.py reach it with tritonclient, as they would reach Triton.

MLServer lives in a venv of its own (it pins protobuf < 7): $DEDUP_MLSERVER names its `mlserver`
command; run.sh test builds .venv-mlserver from model/mlserver/requirements.txt. It listens on
127.0.0.1 only, on free ports, and is stopped by its PID.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "model"))
import triton_repository  # noqa: E402

from milvus_server import stop_process  # noqa: E402

START_TIMEOUT_S = 120


def mlserver_command() -> str:
    cmd = os.environ.get("DEDUP_MLSERVER") or str(ROOT / ".venv-mlserver" / "bin" / "mlserver")
    if not Path(cmd).is_file():
        raise RuntimeError(f"MLServer not found at {cmd}: `./run.sh test` builds .venv-mlserver (or set DEDUP_MLSERVER)")
    return cmd


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class MLServer:
    """`mlserver start` over a model repository written by model/triton_repository.py."""

    def __init__(self, repo: Path, spec, *, grpc_port: int | None = None, threads: int = 0):
        self.repo = repo
        self.spec = spec
        self.grpc_port = grpc_port or free_port()
        self.threads = threads  # onnxruntime threads in MLServer (0: its default, every core)
        self.proc: subprocess.Popen | None = None
        self.output: list[str] = []
        triton_repository.write(spec, repo, kind="KIND_CPU")
        (repo / "settings.json").write_text(json.dumps({
            "host": "127.0.0.1",
            "grpc_port": self.grpc_port,
            "http_port": free_port(),
            "metrics_port": free_port(),
            "parallel_workers": 0,  # inference in the server process, as Triton's backend runs it
            "grpc_max_message_length": 256 * 1024 * 1024,  # the default 4 MiB holds 16 images
            "debug": False,
        }))

    @property
    def url(self) -> str:
        return f"127.0.0.1:{self.grpc_port}"

    def start(self) -> "MLServer":
        env = {**os.environ, "PYTHONPATH": str(ROOT / "model" / "mlserver"), "ONNX_EMBEDDING_THREADS": str(self.threads)}
        env.pop("VIRTUAL_ENV", None)
        self.proc = subprocess.Popen([mlserver_command(), "start", str(self.repo)], cwd=self.repo, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env)
        threading.Thread(target=self._pump, daemon=True).start()
        if not self.wait_ready(START_TIMEOUT_S):
            self.stop()
            raise RuntimeError("MLServer did not become ready:\n" + "".join(self.output[-40:]))
        return self

    def _pump(self) -> None:
        assert self.proc and self.proc.stdout
        for line in self.proc.stdout:
            self.output.append(line)

    def wait_ready(self, timeout: float) -> bool:
        import tritonclient.grpc as grpcclient
        from tritonclient.utils import InferenceServerException

        deadline = time.monotonic() + timeout
        with grpcclient.InferenceServerClient(self.url) as client:
            while time.monotonic() < deadline:
                if self.proc is not None and self.proc.poll() is not None:
                    return False
                try:
                    if client.is_model_ready(self.spec.name, client_timeout=2):
                        return True
                except InferenceServerException:
                    pass
                time.sleep(0.2)
        return False

    def stop(self) -> int | None:
        return stop_process(self.proc, timeout=30) if self.proc else None
