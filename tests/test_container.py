"""The CPU container image, built and run with a real Docker engine (Debian's docker.io), in
run.sh's container pass (DEDUP_TEST_CONTAINER=1; the other passes do not collect this file).

No registry is reachable here, so the base image is made from Debian packages with mmdebstrap
(trixie, minbase) and imported under the name the Dockerfile uses (debian:trixie-slim); the
machine's extra CA certificates go into it, so pip inside the build trusts the proxy that re-signs
HTTPS here. The dockerd is this test's own (data root in a temporary folder, stopped by its PID),
started with --bridge=none and --iptables=false: it creates no bridge and leaves the host's
iptables as they were (checked at the end). The builds and the first container use the host's
network; that server listens on 127.0.0.1 only.

compose.local.yaml (the server on a Milvus container built from the PyPI `milvus` package) runs
with the same engine restarted inside a private network namespace (`unshare -n`, loopback only):
there Docker makes its bridge, its iptables rules and the containers' networks, so Milvus binds
every interface of containers that nothing outside reaches, and the host's network is untouched.
The test's client joins that namespace (nsenter) to call the port Compose published on 127.0.0.1.
"""

from __future__ import annotations

import os
import re
import shutil
import signal
import subprocess
import time
from pathlib import Path

import pytest

from conftest import ROOT, encode, free_port, rgb, wait_until
from imgdedup.client import DedupClient

IMAGE = "imgdedup:test"


def _iptables() -> str:
    out = []
    for tool in ("iptables-save", "ip6tables-save"):
        if shutil.which(tool):
            done = subprocess.run([tool], capture_output=True, text=True)
            out.append("\n".join(line for line in done.stdout.splitlines() if not line.startswith("#")))
    return "\n".join(out)


class Engine:
    """A dockerd of the test's own: on the host's network with no bridge and no iptables rules,
    or (isolated=True) inside a new network namespace of its own, with both."""

    def __init__(self, base: Path):
        self.base = base
        self.sock = base / "docker.sock"
        self.env = {**os.environ, "DOCKER_HOST": f"unix://{self.sock}", "DOCKER_BUILDKIT": "0"}
        self.log = open(base / "dockerd.log", "a")
        self.isolated = False
        self.proc = self._start()

    def _start(self) -> subprocess.Popen:
        command = ["dockerd", "--data-root", str(self.base / "root"), "--exec-root", str(self.base / "exec"),
                   "--pidfile", str(self.base / "dockerd.pid"), "-H", f"unix://{self.sock}"]
        if self.isolated:  # unshare execs sh, which execs dockerd: the child's PID is dockerd's
            command = ["unshare", "--net", "--", "sh", "-c", 'ip link set lo up && exec "$0" "$@"', *command]
        else:
            command += ["--bridge=none", "--iptables=false", "--ip6tables=false"]
        proc = subprocess.Popen(command, stdout=self.log, stderr=subprocess.STDOUT, start_new_session=True)
        if not wait_until(lambda: self.docker("version", check=False).returncode == 0, timeout=60):
            self.proc = proc
            self.stop()
            raise RuntimeError("dockerd did not start: " + (self.base / "dockerd.log").read_text()[-3000:])
        return proc

    def restart(self, *, isolated: bool) -> None:
        """The same images and volumes, served by a dockerd on the host's network or isolated."""
        self.stop()
        self.log = open(self.base / "dockerd.log", "a")
        self.isolated = isolated
        self.proc = self._start()

    def in_namespace(self, *command: str, timeout: float = 120) -> subprocess.CompletedProcess:
        """Run a command of this machine inside the isolated engine's network namespace."""
        assert self.isolated
        return subprocess.run(["nsenter", f"--net=/proc/{self.proc.pid}/ns/net", "--", *command],
                              capture_output=True, text=True, timeout=timeout)

    def compose(self, *args: str, check: bool = True, timeout: float = 600, **env: str) -> subprocess.CompletedProcess:
        """docker-compose on compose.local.yaml (project dedupci) against this engine."""
        compose = shutil.which("docker-compose")
        assert compose, "docker-compose is missing (./run.sh test's container pass installs it)"
        done = subprocess.run([compose, "-p", "dedupci", "-f", str(ROOT / "compose.local.yaml"), *args],
                              env={**self.env, **env}, capture_output=True, text=True, timeout=timeout)
        if check and done.returncode != 0:
            raise AssertionError(f"docker-compose {' '.join(args[:2])} failed ({done.returncode}):\n{done.stdout[-3000:]}\n{done.stderr[-3000:]}")
        return done

    def docker(self, *args: str, check: bool = True, timeout: float = 900, **kw) -> subprocess.CompletedProcess:
        done = subprocess.run(["docker", *args], env=self.env, capture_output=True, text=True, timeout=timeout, **kw)
        if check and done.returncode != 0:
            raise AssertionError(f"docker {' '.join(args[:3])} failed ({done.returncode}):\n{done.stdout[-3000:]}\n{done.stderr[-3000:]}")
        return done

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(60)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.log.close()


def _base_image(engine: Engine, work: Path) -> None:
    """debian:trixie-slim, made from Debian packages (and the machine's extra CA certificates)."""
    tar = work / "trixie.tar"
    hooks = []
    extra = sorted(Path("/usr/local/share/ca-certificates").glob("*.crt"))
    for cert in extra:
        hooks.append(f"--customize-hook=copy-in {cert} /usr/local/share/ca-certificates/")
    if extra:
        hooks.append('--customize-hook=chroot "$1" update-ca-certificates')
    subprocess.run(["mmdebstrap", "--variant=minbase", "--include=ca-certificates", *hooks, "trixie", str(tar)], check=True, capture_output=True, timeout=600)
    # pip trusts its own certificates unless told to use the system's (which now hold the extra CA)
    engine.docker("import", "--change", "ENV PIP_CERT=/etc/ssl/certs/ca-certificates.crt", str(tar), "debian:trixie-slim")
    tar.unlink()


@pytest.fixture(scope="module")
def engine(tmp_path_factory):
    for tool in ("dockerd", "docker", "mmdebstrap"):
        assert shutil.which(tool), f"{tool} is missing (./run.sh test's container pass installs docker.io and mmdebstrap)"
    before = _iptables()
    work = Path(f"/tmp/dedup-docker-{os.getpid()}")  # short: the socket path has a length limit
    work.mkdir()
    eng = Engine(work)
    try:
        _base_image(eng, work)
        started = time.perf_counter()
        eng.docker("build", "--network", "host", "--target", "cpu", "-t", IMAGE, str(ROOT), timeout=1500)
        size = eng.docker("image", "inspect", "-f", "{{.Size}}", IMAGE).stdout.strip()
        print(f"\nbuilt {IMAGE} in {time.perf_counter() - started:.0f} s: {int(size) / 1e6:.0f} MB")
        yield eng
    finally:
        eng.docker("rm", "-f", "dedup-test", check=False)
        if eng.isolated:
            eng.compose("down", "-v", "-t", "30", check=False, timeout=300)
        eng.stop()
        # dockerd leaves mounts under its exec root (the default network namespace): unmount
        # them, deepest first, then remove the folder.
        mounts = [line.split()[1] for line in Path("/proc/self/mounts").read_text().splitlines() if line.split()[1].startswith(str(work))]
        for mount in sorted(mounts, reverse=True):
            subprocess.run(["umount", "-l", mount], check=False)
        shutil.rmtree(work, ignore_errors=True)
        assert not work.exists(), f"could not remove {work}"
        assert _iptables() == before, "the host's iptables changed"


def _health(engine: Engine, container: str = "dedup-test") -> str:
    return engine.docker("inspect", "-f", "{{.State.Health.Status}}", container, check=False).stdout.strip()


def test_the_image_serves_keeps_its_data_across_a_restart_and_stops_cleanly(engine):
    config = engine.docker("image", "inspect", "-f", "{{.Config.User}} {{json .Config.Healthcheck.Test}} {{json .Config.Volumes}}", IMAGE).stdout
    assert config.startswith("10001 ") and "dedup health" in config and '"/data"' in config  # non-root, health via gRPC, a volume
    port = free_port()
    engine.docker("volume", "create", "dedup-test-data")
    engine.docker(
        "run", "-d", "--name", "dedup-test", "--network", "host", "-v", "dedup-test-data:/data",
        "--health-cmd", f"dedup health --server 127.0.0.1:{port} --timeout 3", "--health-interval", "2s", "--health-start-period", "120s",
        IMAGE, "dedup", "serve", "--host", "127.0.0.1", "--port", str(port), "--data-dir", "/data",
    )
    assert wait_until(lambda: _health(engine) == "healthy", timeout=180, interval=1), engine.docker("logs", "dedup-test", check=False).stdout[-3000:]
    with DedupClient(f"127.0.0.1:{port}") as client:
        stored = client.check(encode(rgb("astronaut")), image_id="astronaut", add_to_index=True)
        assert stored.stored
        assert client.check(encode(rgb("astronaut"), quality=75)).matches[0].image_id == "astronaut"

    t0 = time.perf_counter()
    engine.docker("stop", "-t", "30", "dedup-test")  # SIGTERM
    assert time.perf_counter() - t0 < 20
    assert engine.docker("inspect", "-f", "{{.State.ExitCode}}", "dedup-test").stdout.strip() == "0"
    assert "stopped" in engine.docker("logs", "dedup-test").stderr + engine.docker("logs", "dedup-test").stdout

    engine.docker("start", "dedup-test")
    assert wait_until(lambda: _health(engine) == "healthy", timeout=180, interval=1)
    with DedupClient(f"127.0.0.1:{port}") as client:
        assert client.info().indexed_images == 1  # the volume kept it
        again = client.check(encode(rgb("astronaut"), quality=70))
        assert again.is_duplicate and again.matches[0].image_id == "astronaut"
    served = engine.docker("exec", "dedup-test", "dedup", "health", "--server", f"127.0.0.1:{port}")
    assert served.stdout.strip() == "SERVING"
    engine.docker("rm", "-f", "dedup-test")
    engine.docker("volume", "rm", "dedup-test-data")


def test_the_compose_file_is_valid_and_publishes_on_loopback_only():
    # Debian's docker-compose (1.29, the Compose Specification) validates without a daemon;
    # official images cannot be pulled here, so the file is checked, not started.
    compose = shutil.which("docker-compose")
    assert compose, "docker-compose is missing (./run.sh test's container pass installs it)"
    path = ROOT / "compose.yaml"
    done = subprocess.run([compose, "-f", str(path), "--profile", "triton", "config"], capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    services = subprocess.run([compose, "-f", str(path), "--profile", "triton", "config", "--services"], capture_output=True, text=True, timeout=60).stdout.split()
    assert set(services) == {"etcd", "minio", "milvus", "dedup", "triton"}
    text = done.stdout  # the file as Compose resolved it (YAML)
    assert "DEDUP_MILVUS_URI: http://milvus:19530" in text
    # Every published port, in Compose's resolved short form HOST_IP:HOST:CONTAINER/tcp, on loopback.
    ports = re.findall(r"^\s*- (\S+:\d+:\d+/\w+)$", text, re.M)
    assert ports == ["127.0.0.1:50051:50051/tcp", "127.0.0.1:9100:9100/tcp"], text

    local = subprocess.run([compose, "-f", str(ROOT / "compose.local.yaml"), "config"], capture_output=True, text=True, timeout=60)
    assert local.returncode == 0, local.stderr
    assert re.findall(r"^\s*- (\S+:\d+:\d+/\w+)$", local.stdout, re.M) == ["127.0.0.1:50051:50051/tcp", "127.0.0.1:9100:9100/tcp"]


# Run inside the isolated engine's network namespace by the compose test: stores (or checks)
# the images named on the command line through the port Compose published, prints the answers.
_CLIENT = """
import json, sys
from imgdedup.client import DedupClient
store = sys.argv[1] == "store"
with DedupClient("127.0.0.1:50051") as client:
    info = client.info()
    out = {"info": {"backend": info.milvus_backend, "indexed": info.indexed_images}, "checks": []}
    for path in sys.argv[2:]:
        name = path.rsplit("/", 1)[-1].split(".")[0]
        answer = client.check(open(path, "rb").read(), image_id=name if store else "", add_to_index=store)
        out["checks"].append({"id": name, "stored": answer.stored, "matches": [m.image_id for m in answer.matches]})
print(json.dumps(out))
"""


def test_compose_local_serves_through_a_milvus_container(engine, tmp_path):
    """compose.local.yaml, started end to end: the server finds what it stored in the Milvus
    container, also after its own container and volume were replaced."""
    import json
    import sys

    engine.docker("build", "--network", "host", "-t", "imgdedup-milvus:test", str(ROOT / "deploy" / "milvus"), timeout=900)
    size = engine.docker("image", "inspect", "-f", "{{.Size}}", "imgdedup-milvus:test").stdout.strip()
    print(f"\nbuilt imgdedup-milvus:test: {int(size) / 1e6:.0f} MB")
    images = {"DEDUP_IMAGE": IMAGE, "DEDUP_MILVUS_IMAGE": "imgdedup-milvus:test"}
    engine.restart(isolated=True)
    assert os.readlink(f"/proc/{engine.proc.pid}/ns/net") != os.readlink("/proc/self/ns/net")  # a namespace of its own

    def up() -> None:
        engine.compose("up", "-d", "--no-build", **images)
        ok = wait_until(lambda: _health(engine, "dedupci_dedup_1") == "healthy", timeout=240, interval=1)
        assert ok, engine.compose("logs", "--tail", "40", **images).stdout[-4000:]

    def client(mode: str, *names: str) -> dict:
        done = engine.in_namespace(sys.executable, "-c", _CLIENT, mode, *(str(tmp_path / n) for n in names))
        assert done.returncode == 0, done.stderr[-3000:]
        return json.loads(done.stdout)

    (tmp_path / "astronaut.jpg").write_bytes(encode(rgb("astronaut")))
    (tmp_path / "coffee.jpg").write_bytes(encode(rgb("coffee")))
    (tmp_path / "astronaut-copy.jpg").write_bytes(encode(rgb("astronaut"), quality=70))
    up()
    # compose's own network: the server reached Milvus by its service name
    assert _health(engine, "dedupci_milvus_1") == "healthy"
    first = client("store", "astronaut.jpg", "coffee.jpg")
    assert first["info"] == {"backend": "milvus", "indexed": 0}
    assert [c["stored"] for c in first["checks"]] == [True, True]
    assert client("check", "astronaut-copy.jpg")["checks"][0]["matches"][:1] == ["astronaut"]

    # A new server container with a new (empty) /data volume: what it finds is in Milvus.
    engine.compose("rm", "--stop", "--force", "dedup", **images)
    engine.docker("volume", "rm", "dedupci_dedup")
    up()
    again = client("check", "astronaut-copy.jpg", "coffee.jpg")
    assert again["info"] == {"backend": "milvus", "indexed": 2}
    assert [c["matches"][:1] for c in again["checks"]] == [["astronaut"], ["coffee"]]

    engine.compose("down", "-v", "-t", "30", **images)
    engine.restart(isolated=False)
