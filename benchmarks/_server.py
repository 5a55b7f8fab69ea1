"""Start a throw-away server process for a benchmark (loopback only), or use a given one."""

from __future__ import annotations

import contextlib
import os
import platform
import re
import signal
import subprocess
import sys
import tempfile
import threading
from pathlib import Path
from typing import Iterator


def cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return "unknown CPU"


def machine() -> str:
    return f"{os.cpu_count()} cores, {cpu_model()}, {platform.system()} {platform.machine()}, Python {platform.python_version()}"


def peak_rss_mib(pid: int) -> float | None:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    except OSError:
        return None
    return None


def _stat(path: str) -> tuple[int, float]:
    """(parent pid, CPU seconds: utime + stime) from a /proc .../stat file."""
    fields = Path(path).read_text().rsplit(")", 1)[1].split()
    return int(fields[1]), (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def cpu_by_thread(pid: int) -> dict[str, float]:
    """CPU seconds used so far by each named group of a process's threads (the server names its
    pools' OS threads: decode_0 -> "decode"); the main thread runs the event loop."""
    out: dict[str, float] = {}
    for tid in os.listdir(f"/proc/{pid}/task"):
        try:
            name = Path(f"/proc/{pid}/task/{tid}/comm").read_text().strip()
            _, seconds = _stat(f"/proc/{pid}/task/{tid}/stat")
        except OSError:  # the thread ended meanwhile
            continue
        group = "event loop (main thread)" if int(tid) == pid else re.sub(r"_\d+$", "", name)
        out[group] = out.get(group, 0.0) + seconds
    return out


def _processes() -> dict[int, tuple[int, float]]:
    """pid -> (parent pid, CPU seconds) of every process alive now."""
    out = {}
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                out[int(entry)] = _stat(f"/proc/{entry}/stat")
            except OSError:  # the process ended meanwhile
                continue
    return out


def cpu_of_children(pid: int) -> float:
    """CPU seconds used so far by a process's direct children (the Milvus Lite server)."""
    return sum(seconds for parent, seconds in _processes().values() if parent == pid)


def cpu_of_children_by_name(pid: int) -> dict[str, float]:
    """CPU seconds used so far by a process's direct children, by their OS name (digits after a
    last underscore dropped: decoder_0 -> decoder)."""
    out: dict[str, float] = {}
    for child, (parent, seconds) in _processes().items():
        if parent == pid:
            try:
                name = re.sub(r"_\d+$", "", Path(f"/proc/{child}/comm").read_text().strip())
            except OSError:  # ended meanwhile
                continue
            out[name] = out.get(name, 0.0) + seconds
    return out


def cpu_of_tree(pid: int) -> float:
    """CPU seconds used so far by a process and all its descendants (alive ones)."""
    procs = _processes()
    tree, grew = {pid}, True
    while grew:
        more = {p for p, (parent, _) in procs.items() if parent in tree} - tree
        grew = bool(more)
        tree |= more
    return sum(procs[p][1] for p in tree if p in procs)


def cpu_of_self() -> float:
    return _stat("/proc/self/stat")[1]


@contextlib.contextmanager
def server(target: str | None, *extra: str) -> Iterator[tuple[str, int | None]]:
    """Yield (target, pid): a new server on 127.0.0.1 with a temporary data dir, or `target`."""
    if target:
        yield target, None
        return
    with tempfile.TemporaryDirectory(prefix="dedup-bench-") as data_dir:
        cmd = [sys.executable, "-m", "imgdedup", "serve", "--port", "0", "--data-dir", data_dir, "--log-level", "WARNING", *extra]
        proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env={**os.environ, "PYTHONUNBUFFERED": "1"})
        port: list[int] = []
        ready = threading.Event()

        def pump() -> None:
            assert proc.stdout
            for line in proc.stdout:
                if m := re.search(r"listening on [\d.]+:(\d+)$", line.rstrip()):  # the port ends its line
                    port.append(int(m.group(1)))
                if "dedup server ready" in line:
                    ready.set()
                if "Traceback" in line or "startup failed" in line:
                    print(line, end="", file=sys.stderr)

        threading.Thread(target=pump, daemon=True).start()
        try:
            if not ready.wait(300):
                raise RuntimeError("benchmark server did not become ready")
            yield f"127.0.0.1:{port[0]}", proc.pid
        finally:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(60)
            except subprocess.TimeoutExpired:
                proc.kill()
