"""The CPU container image, built and run with a real Docker engine (Debian's docker.io), in
run.sh's container pass (DEDUP_TEST_CONTAINER=1; the other passes do not collect this file).

No registry is reachable here, so the base image is made from Debian packages with mmdebstrap
(trixie, minbase) and imported under the name the Dockerfile uses (debian:trixie-slim); the
machine's extra CA certificates go into it, so pip inside the build trusts the proxy that re-signs
HTTPS here. The dockerd is this test's own (data root in a temporary folder, stopped by its PID),
started with --bridge=none and --iptables=false: it creates no bridge and leaves the host's
iptables as they were (checked at the end). The build and the container use the host's network;
the server in the container listens on 127.0.0.1 only.
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
    """A dockerd of the test's own."""

    def __init__(self, base: Path):
        self.base = base
        self.sock = base / "docker.sock"
        self.env = {**os.environ, "DOCKER_HOST": f"unix://{self.sock}", "DOCKER_BUILDKIT": "0"}
        self.log = open(base / "dockerd.log", "w")
        self.proc = subprocess.Popen(
            ["dockerd", "--data-root", str(base / "root"), "--exec-root", str(base / "exec"), "--pidfile", str(base / "dockerd.pid"),
             "-H", f"unix://{self.sock}", "--bridge=none", "--iptables=false", "--ip6tables=false"],
            stdout=self.log, stderr=subprocess.STDOUT, start_new_session=True,
        )
        if not wait_until(lambda: self.docker("version", check=False).returncode == 0, timeout=60):
            self.stop()
            raise RuntimeError("dockerd did not start: " + (base / "dockerd.log").read_text()[-3000:])

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
        eng.stop()
        # dockerd leaves mounts under its exec root (the default network namespace): unmount
        # them, deepest first, then remove the folder.
        mounts = [line.split()[1] for line in Path("/proc/self/mounts").read_text().splitlines() if line.split()[1].startswith(str(work))]
        for mount in sorted(mounts, reverse=True):
            subprocess.run(["umount", "-l", mount], check=False)
        shutil.rmtree(work, ignore_errors=True)
        assert not work.exists(), f"could not remove {work}"
        assert _iptables() == before, "the host's iptables changed"


def _health(engine: Engine) -> str:
    return engine.docker("inspect", "-f", "{{.State.Health.Status}}", "dedup-test", check=False).stdout.strip()


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
