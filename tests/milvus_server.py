"""A real Milvus standalone server for tests and benchmarks: the PyPI `milvus` package (2.3.x),
run as a child process and stopped by its own PID.

That server binds every interface (19530, 9091, etcd and the coordinators' ports), so it starts
only inside a private network namespace that holds nothing but loopback (and veth ends we made,
named `ddv*`): run the test session under `scripts/netns-run` (`unshare -n`, lo up).

    server = MilvusServer(tmp_dir).start()   # ~10 s
    server.uri                               # "http://127.0.0.1:19530"
    server.etcd_url                          # its embedded etcd: "http://127.0.0.1:2379"
    server.kill(); server.start()            # kill -9 and restart on the same data

    linked = MilvusServer(dir2, linked=True).start()   # in a namespace of its own, joined to this
    linked.cut(); linked.restore()                     # one by a veth pair: take the link down/up
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import time
import urllib.error
import urllib.request
from pathlib import Path

START_TIMEOUT_S = 120
OWN_LINK_PREFIX = "ddv"  # veth ends that tests create
# The two ends of the veth pair to a linked server: addresses inside namespaces made here only.
LINK_HOST, LINK_PEER = "10.211.0.1", "10.211.0.2"


def override_yaml(text: str, overrides: dict[str, object]) -> str:
    """Set dotted keys (`dataCoord.segment.maxSize`) of a milvus.yaml that already has them, by
    line (the file is plain block YAML, two spaces a level). Each part is looked for only inside
    its parent's block; a key that is not there, or that has keys under it, is an error."""
    lines = text.splitlines()

    def indent(line: str) -> int | None:  # None: blank or a comment
        body = line.lstrip(" ")
        return None if not body or body.startswith("#") else len(line) - len(body)

    for dotted, value in overrides.items():
        parts = dotted.split(".")
        begin, end, at = 0, len(lines), -1
        for depth, part in enumerate(parts):
            prefix = " " * (2 * depth) + part + ":"
            at = next((i for i in range(begin, end) if lines[i].startswith(prefix)), -1)
            if at < 0:
                raise KeyError(f"{dotted}: no {part!r} in milvus.yaml there")
            # Its block: the lines after it, up to the next one indented no deeper than it.
            begin = at + 1
            end = next((i for i in range(begin, end) if (n := indent(lines[i])) is not None and n <= 2 * depth), end)
        if any((n := indent(lines[i])) is not None and n > 2 * (len(parts) - 1) for i in range(begin, end)):
            raise KeyError(f"{dotted} has keys under it: set those")
        lines[at] = f"{' ' * (2 * (len(parts) - 1))}{parts[-1]}: {str(value).lower() if isinstance(value, bool) else value}"
    return "\n".join(lines) + "\n"


def isolated() -> bool:
    """True when this process's network namespace has only loopback (and our own veth ends)."""
    names = [name for _, name in socket.if_nameindex()]
    return all(n == "lo" or n.startswith(OWN_LINK_PREFIX) for n in names)


class MilvusServer:
    def __init__(self, base_dir: Path, *, port: int = 19530, linked: bool = False, config: dict[str, object] | None = None):
        if not isolated():
            raise RuntimeError(
                "the Milvus server binds all interfaces; run inside a private network namespace "
                "(scripts/netns-run ...), where only loopback exists"
            )
        from milvus import MilvusServerConfig, _initialize_data_files

        self.base_dir = Path(base_dir).resolve()
        overrides = config or {}
        config = MilvusServerConfig(data_dir=str(self.base_dir), proxy_port=port)
        config.resolve()  # writes configs/milvus.yaml, picks the coordinators' ports
        if overrides:  # e.g. {"dataCoord.segment.sealProportion": 1.0} for a benchmark
            path = self.base_dir / "configs" / "milvus.yaml"
            path.write_text(override_yaml(path.read_text(), overrides))
        _initialize_data_files(str(self.base_dir))  # unpacks the binaries into base_dir/bin
        self.port = port
        # Its embedded etcd (client URL on localhost): the store of the writer lease in tests.
        self.etcd_port = int(config.get("etcd_port"))
        # linked: the server runs in a network namespace of its own, reached over a veth pair
        # (ddv0 here, ddv1 there) whose link a test can take down, as a cut cable would.
        self.linked = linked
        self.host = LINK_PEER if linked else "127.0.0.1"
        self.health_port = 9091 if linked else _free_port(9091)
        self._exe = self.base_dir / "bin" / "milvus"
        self._env = {
            **os.environ,
            "DEPLOY_MODE": "STANDALONE",
            "METRICS_PORT": str(self.health_port),
            "MILVUS_RUN_DIR": str(self.base_dir / "run"),
            "LD_LIBRARY_PATH": f"{self._exe.parent}:{os.environ.get('LD_LIBRARY_PATH', '')}",
        }
        self.proc: subprocess.Popen | None = None
        self._log = None

    @property
    def uri(self) -> str:
        return f"http://{self.host}:{self.port}"

    @property
    def etcd_url(self) -> str:
        return f"http://127.0.0.1:{self.etcd_port}"

    def start(self) -> "MilvusServer":
        """Start (or restart, on the same data) and wait until it answers its health check."""
        if self.proc is not None and self.proc.poll() is None:
            return self
        self._log = open(self.base_dir / "logs" / "milvus-stdout.log", "a", encoding="utf-8")
        command = [str(self._exe), "run", "standalone"]
        if self.linked:
            # A new namespace: its end of the veth pair is configured before Milvus starts.
            script = (
                f"while ! ip link show ddv1 >/dev/null 2>&1; do sleep 0.05; done; ip link set lo up && "
                f"ip addr add {LINK_PEER}/30 dev ddv1 && ip link set ddv1 up && exec \"$0\" \"$@\""
            )
            command = ["unshare", "--net", "--", "bash", "-c", script, *command]
        self.proc = subprocess.Popen(command, cwd=self.base_dir, env=self._env, stdout=self._log, stderr=subprocess.STDOUT)
        if self.linked:
            _ip("link", "add", "ddv0", "type", "veth", "peer", "name", "ddv1", "netns", str(self.proc.pid))
            _ip("addr", "add", f"{LINK_HOST}/30", "dev", "ddv0")
            _ip("link", "set", "ddv0", "up")
        deadline = time.monotonic() + START_TIMEOUT_S
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"the Milvus server exited with {self.proc.returncode}; see {self.base_dir / 'logs'}")
            try:
                with urllib.request.urlopen(f"http://{self.host}:{self.health_port}/healthz", timeout=2) as resp:
                    if b"OK" in resp.read():
                        return self
            except (urllib.error.URLError, ConnectionError, TimeoutError):
                pass
            time.sleep(0.2)
        self.kill()
        raise RuntimeError(f"the Milvus server did not become healthy in {START_TIMEOUT_S} s")

    def cut(self) -> None:
        """Take this side of the link down: packets to the server go nowhere (no reset)."""
        _ip("link", "set", "ddv0", "down")

    def restore(self) -> None:
        _ip("link", "set", "ddv0", "up")

    def kill(self) -> None:
        """kill -9, as a crash would."""
        self.stop(signal.SIGKILL)

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 30) -> None:
        if self.proc is not None:
            stop_process(self.proc, sig, timeout)
        self.proc = None
        if self._log is not None:
            self._log.close()
            self._log = None


def stop_process(proc: subprocess.Popen, sig: int = signal.SIGTERM, timeout: float = 30) -> int:
    """Signal a child we started (by its PID) and wait for it; kill -9 after `timeout`."""
    if proc.poll() is None:
        proc.send_signal(sig)
        try:
            proc.wait(timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
    return proc.returncode


def _ip(*args: str) -> None:
    subprocess.run(["ip", *args], check=True, capture_output=True, timeout=10)


def _free_port(start: int) -> int:
    for port in range(start, start + 1000):
        with socket.socket() as s:
            try:
                s.bind(("127.0.0.1", port))
                return port
            except OSError:
                continue
    raise RuntimeError("no free port")
