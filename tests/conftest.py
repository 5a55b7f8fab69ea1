"""Shared fixtures: a real server process on 127.0.0.1 with a real Milvus Lite file and the real
model, and real photos from scikit-image."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import threading
import time
import weakref
from contextlib import contextmanager
from pathlib import Path

import cv2
import grpc
import numpy as np
import pytest
from skimage import data

from imgdedup._proto.dedup.v1 import dedup_pb2 as pb
from imgdedup._proto.dedup.v1 import dedup_pb2_grpc as pb_grpc
from milvus_server import stop_process

ROOT = Path(__file__).resolve().parent.parent
START_TIMEOUT_S = 180

# Which Milvus the servers under test use: "lite" (a Milvus Lite file in each server's data dir)
# or "server" (one real Milvus standalone server for the session, started here; the session must
# run in a private network namespace: `scripts/netns-run`). `./run.sh test` runs both.
MILVUS = os.environ.get("DEDUP_TEST_MILVUS", "lite")
assert MILVUS in ("lite", "server"), f"DEDUP_TEST_MILVUS must be 'lite' or 'server', not {MILVUS!r}"
_milvus_server = None  # the session's MilvusServer (server mode)
_running: "weakref.WeakSet[ServerProcess]" = weakref.WeakSet()  # servers under test now, for failure reports
_started: list["ServerProcess"] = []  # servers started during the current test (stopped ones too)
# DEDUP_TEST_WORKERS=N: every server under test runs `--workers N` (N fronts over one index
# writer), to show the API's answers and guarantees do not change; run.sh test's third pass.
WORKERS = int(os.environ.get("DEDUP_TEST_WORKERS", "1"))
# DEDUP_TEST_TORCH=1: the torch pass (.venv-torch, run.sh), which runs test_torch.py; the other
# passes' venv has no torch, so they do not collect it.
collect_ignore = [] if os.environ.get("DEDUP_TEST_TORCH") else ["test_torch.py"]
# DEDUP_TEST_CONTAINER=1: the container pass (run.sh), which builds and runs the image with a
# Docker engine of its own; only that pass collects test_container.py.
if not os.environ.get("DEDUP_TEST_CONTAINER"):
    collect_ignore.append("test_container.py")


def pytest_configure(config):
    config.addinivalue_line("markers", "lite_only: exercises Milvus Lite itself (its child process, its file)")
    config.addinivalue_line("markers", "milvus_server: needs the real Milvus server (DEDUP_TEST_MILVUS=server)")
    config.addinivalue_line("markers", "store_neutral: what it tests happens before or beside the store (the model, its server, decoding, load): run in the Lite pass, not again on the Milvus server")
    config.addinivalue_line("markers", "single_process: inspects one server process's insides (its child processes, threads, metrics) or arranges processes itself; not run with DEDUP_TEST_WORKERS")


def pytest_report_header(config):
    workers = f"; every server with --workers {WORKERS}" if WORKERS > 1 else ""
    return f"Milvus under the servers: {'Milvus Lite files' if MILVUS == 'lite' else 'a Milvus standalone server (PyPI milvus)'}{workers}"


def pytest_runtest_setup(item):
    _started.clear()


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item, call):
    """A failing test's report carries the last lines of every server under test that is
    still running (fixtures' servers included) or that the test started, so a CI log says
    what the servers saw."""
    outcome = yield
    report = outcome.get_result()
    if report.failed:
        for srv in dict.fromkeys([*_running, *_started]):
            report.sections.append((f"server {srv.target} (pid {srv.proc.pid if srv.proc else '-'}) log, last 60 lines", "".join(srv.listening_lines) + "...\n" + "".join(srv.output[-60:])))


def pytest_collection_modifyitems(config, items):
    """Tests of one backend only are deselected (not skipped) in the other run; run.sh test
    runs both, so every test runs once."""
    other = {"milvus_server"} if MILVUS == "lite" else {"lite_only", "store_neutral"}
    if WORKERS > 1:
        other.add("single_process")
    keep = [i for i in items if not other & set(i.keywords)]
    dropped = [i for i in items if other & set(i.keywords)]
    if dropped:
        config.hook.pytest_deselected(items=dropped)
        items[:] = keep


@pytest.fixture(scope="session", autouse=True)
def milvus_backend(tmp_path_factory):
    """In server mode: the real Milvus server every ServerProcess of this session uses."""
    global _milvus_server
    if MILVUS == "lite":
        yield None
        return
    from milvus_server import MilvusServer

    _milvus_server = MilvusServer(tmp_path_factory.mktemp("milvus-server")).start()
    try:
        yield _milvus_server
    finally:
        _milvus_server.kill()  # its data is thrown away: a clean stop takes it ~30 s
        _milvus_server = None


def backend_env(data_dir: Path) -> dict[str, str]:
    """Settings that point a server at the session's Milvus: in server mode its URI and a
    collection prefix of this data dir's own (a fresh data dir is a fresh, empty index, and a
    server restarted on the same data dir finds its collections again, as with Milvus Lite)."""
    if MILVUS == "lite":
        return {}
    assert _milvus_server is not None
    import hashlib

    prefix = "t" + hashlib.blake2b(str(Path(data_dir).resolve()).encode(), digest_size=8).hexdigest()
    return {"DEDUP_MILVUS_URI": _milvus_server.uri, "DEDUP_COLLECTION_PREFIX": prefix}


def backend_settings(data_dir: Path):
    """In-process Settings on the session's Milvus (what backend_env gives a server process)."""
    from imgdedup.config import Settings

    env = backend_env(data_dir)
    return Settings(data_dir=data_dir, **({"milvus_uri": env["DEDUP_MILVUS_URI"], "collection_prefix": env["DEDUP_COLLECTION_PREFIX"]} if env else {}))


@pytest.fixture()
def milvus_store(tmp_path):
    """A MilvusStore connected to the session's Milvus (a Lite file of this test's own, or the
    session's server under a prefix of its own); closed at the end."""
    from imgdedup.core.local_index import open_store
    from imgdedup.runtime import load_spec

    settings = backend_settings(tmp_path)
    store = open_store(settings, load_spec(settings.model))
    store.connect()
    try:
        yield store
    finally:
        store.close()


class ServerProcess:
    """`python -m imgdedup serve` as a child process; stopped by its own PID."""

    def __init__(self, data_dir: Path, *extra: str, env: dict[str, str] | None = None, new_session: bool = False):
        self.data_dir = data_dir
        # new_session: the server and its Milvus Lite child get their own process group, so a
        # test can kill -9 both at once (os.killpg) as a machine crash would.
        self.new_session = new_session
        self.extra = extra
        workers = {"DEDUP_WORKERS": str(WORKERS)} if WORKERS > 1 else {}
        self.env = {**os.environ, "PYTHONUNBUFFERED": "1", **workers, **backend_env(data_dir), **(env or {})}
        self.proc: subprocess.Popen | None = None
        self.port: int | None = None
        self.output: list[str] = []
        self.listening_lines: list[str] = []
        self._ready = threading.Event()
        self._listening = threading.Event()
        self._drained = threading.Event()  # its output read to the end
        self.became_ready = False

    def start(self, wait_ready: bool = True, wait_listening: bool = True) -> "ServerProcess":
        """Start it; wait until it listens (unless wait_listening is False: a test of a server
        that must fail at start, which with --workers may fail before or after it listens)
        and, with wait_ready, until it is ready."""
        cmd = [sys.executable, "-m", "imgdedup", "serve", "--port", "0", "--data-dir", str(self.data_dir), *self.extra]
        self.proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=self.env, start_new_session=self.new_session)
        _running.add(self)
        _started.append(self)
        threading.Thread(target=self._pump, daemon=True).start()
        # Both events are also set when the process exits (_pump): a server that fails at start
        # fails the test at once, not after START_TIMEOUT_S.
        if not wait_listening:
            return self
        if not self._listening.wait(START_TIMEOUT_S) or self.port is None:
            self.stop()
            raise RuntimeError("server did not start listening:\n" + "".join(self.output))
        if wait_ready and (not self._ready.wait(START_TIMEOUT_S) or not self.became_ready):
            self.stop()
            raise RuntimeError("server did not become ready:\n" + "".join(self.output))
        return self

    def _pump(self) -> None:
        assert self.proc and self.proc.stdout
        for line in self.proc.stdout:
            self.output.append(line)
            if m := re.search(r"listening on 127\.0\.0\.1:(\d+)$", line.rstrip()):  # the port ends its line
                self.listening_lines.append(line)
                self.port = int(m.group(1))
                self._listening.set()
            if "dedup server ready" in line:
                self.became_ready = True
                self._ready.set()
        self._listening.set()  # exited: nobody need wait any more
        self._ready.set()
        self._drained.set()

    def exited(self, timeout: float) -> int:
        """Wait for it to exit and for its output to be read whole; its exit code."""
        assert self.proc is not None
        code = self.proc.wait(timeout)
        self._drained.wait(30)
        return code

    @property
    def target(self) -> str:
        return f"127.0.0.1:{self.port}"

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 60) -> int | None:
        _running.discard(self)
        return stop_process(self.proc, sig, timeout) if self.proc else None


def free_port() -> int:
    """A TCP port free on 127.0.0.1 now (for a server the test then starts on it)."""
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def channel_for(target: str) -> grpc.Channel:
    return grpc.insecure_channel(target, options=[("grpc.max_send_message_length", 256 * 1024 * 1024)])


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    srv = ServerProcess(tmp_path_factory.mktemp("dedup-data")).start()
    yield srv
    srv.stop()


@contextmanager
def serving(data_dir: Path, *args: str):
    """A server on data_dir started with `args`, as a stub; stopped at the end."""
    srv = ServerProcess(data_dir, *args).start()
    try:
        with channel_for(srv.target) as channel:
            yield pb_grpc.DedupServiceStub(channel)
    finally:
        srv.stop()


@pytest.fixture(scope="module")
def stub(server):
    with channel_for(server.target) as channel:
        yield pb_grpc.DedupServiceStub(channel)


# -- photos -------------------------------------------------------------------------------
def rgb(name: str) -> np.ndarray:
    img = getattr(data, name)()
    if img.ndim == 2:
        img = np.dstack([img] * 3)
    return np.ascontiguousarray(img[..., :3])


def encode(img: np.ndarray, ext: str = ".jpg", quality: int = 90) -> bytes:
    bgr = cv2.cvtColor(np.ascontiguousarray(img), cv2.COLOR_RGB2BGR) if img.ndim == 3 else img
    params = [cv2.IMWRITE_JPEG_QUALITY, quality] if ext == ".jpg" else []
    ok, buf = cv2.imencode(ext, bgr, params)
    assert ok
    return buf.tobytes()


def check(stub, image: bytes, image_id: str = "", add: bool = False, **kw) -> pb.CheckDuplicateResponse:
    return stub.CheckDuplicate(pb.CheckDuplicateRequest(image_id=image_id, image=image, add_to_index=add, **kw), timeout=60)


def wait_until(predicate, timeout: float = 30.0, interval: float = 0.05) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(interval)
    return False
