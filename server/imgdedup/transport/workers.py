"""`dedup serve --workers N`: N front processes behind one port, over one index writer.

The parent opens the index (LocalIndex: Milvus Lite or a server) and serves it to the fronts
on a unix socket in the data dir (transport/writer_service.py); it alone opens Milvus, so
Milvus Lite, a single local process, works as with one process. Each front is a whole
`serve()` in its own process (spawned, not forked: gRPC and onnxruntime threads do not
survive a fork) with writer_address pointing at that socket: it decodes, hashes, embeds and
speaks gRPC on its own core, and listens on the public port with SO_REUSEPORT (gRPC's default
on Linux), so the kernel spreads new connections across the fronts. A front that dies is
started again; SIGTERM/SIGINT stops the fronts (each drains its calls), then the writer.

With writer_address set, the parent runs no writer: the fronts use that one (a replica).
With writer_election, the parent is this replica's one voice in the election: its index is an
ElectedIndex (transport/election.py), the LocalIndex while it holds the lease (serving other
replicas on writer_listen too), else a front of the elected writer that the fronts reach through
it (one more hop, on the unix socket). The fronts never see etcd.
Guarantees are those of one process (docs/scale-out.md): every write goes through the one
writer, in each front's order.
"""

from __future__ import annotations

import asyncio
import logging
import multiprocessing
import os
import shutil
import signal
import socket
import tempfile
import time
from pathlib import Path

from imgdedup.config import Settings
from imgdedup.core.threads import one_blas_thread
from imgdedup.logs import announce

log = logging.getLogger(__name__)
RESTART_DELAY_S = 1.0


def _front_main(settings: Settings, events, number: int, parent: int) -> None:
    """A front process (spawned): one serve() that reports its progress to the parent."""
    from imgdedup.logs import configure
    from imgdedup.transport.server import serve

    _end_with_parent(parent)
    configure(settings.log_level, settings.log_format)
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # the parent decides when fronts stop (Ctrl-C)

    def quiet(line: str) -> None:
        pass

    asyncio.run(serve(settings, announce=quiet, on_event=lambda what: events.put((number, what, os.getpid())), signals=(signal.SIGTERM,)))


def _end_with_parent(parent: int) -> None:
    """Linux: SIGTERM this front when the parent (the writer) dies, even by kill -9, so that no
    front outlives its writer; the front then drains and exits as on any SIGTERM."""
    try:
        import ctypes

        PR_SET_PDEATHSIG = 1
        ctypes.CDLL("libc.so.6", use_errno=True).prctl(PR_SET_PDEATHSIG, signal.SIGTERM)
    except (OSError, AttributeError):  # not Linux: fronts notice the writer's absence instead
        pass
    if os.getppid() != parent:  # the parent died before prctl (we were re-parented)
        os.kill(os.getpid(), signal.SIGTERM)


def _socket_path(settings: Settings) -> Path:
    """<data_dir>/writer.sock, or one in a fresh private temporary directory when that path is
    longer than a unix socket address may be (108 bytes on Linux)."""
    path = (settings.data_dir / "writer.sock").resolve()
    if len(str(path).encode()) > 100:
        path = Path(tempfile.mkdtemp(prefix="dedup-writer-")) / "writer.sock"
    return path


def _reserve_port(host: str, port: int) -> socket.socket:
    """Bind (not listen) the public port with SO_REUSEPORT, so a port 0 becomes a real one
    that every front then binds too."""
    family = socket.AF_INET6 if ":" in host.strip("[]") else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
    try:
        sock.bind((host.strip("[]"), port))
    except OSError as exc:
        sock.close()
        raise SystemExit(f"cannot listen on {host}:{port}: {exc.strerror}") from None
    return sock


def front_settings(settings: Settings, writer_address: str, port: int, number: int, count: int) -> Settings:
    """A front's share of the machine: unless set explicitly, the model's threads are divided
    between the fronts instead of each taking every core (onnxruntime's threads spin). Decode
    threads are not: the kernel spreads connections unevenly, and a busy front should be able
    to decode on every core while another is idle. Each front starts with 1/count of every
    namespace's images-per-second quota (and of its burst, at least 1) until the writer allots
    it its part by demand (core/rate_shares.py): the kernel spreads connections, not calls, so
    one busy client may reach one front only (README "Quotas")."""
    cores = os.cpu_count() or 1
    update: dict = {"workers": 1, "writer_address": writer_address, "writer_listen": None, "writer_election": None, "writer_advertise": None, "port": port}
    explicit = settings.model_fields_set
    if "intra_op_threads" not in explicit and settings.intra_op_threads == 0:
        update["intra_op_threads"] = max(1, cores // (count * settings.inference_workers))
    if settings.metrics_port:
        update["metrics_port"] = settings.metrics_port + 1 + number  # the writer keeps metrics_port
    if count > 1 and settings.quotas:
        update["quotas"] = {
            name: q if q.images_per_second is None else q.model_copy(update={
                "images_per_second": q.images_per_second / count,
                "burst": max(1.0, (q.burst or q.images_per_second) / count),
            })
            for name, q in settings.quotas.items()
        }
    if writer_address.startswith("unix:"):
        update["writer_token"] = None
        update["writer_tls_ca_file"] = None
    return settings.model_copy(update=update)


async def supervise(settings: Settings) -> None:
    from imgdedup.core.local_index import LocalIndex
    from imgdedup.runtime import load_spec
    from imgdedup.transport.server import WriterServer, follow_health, index_label, interceptors, refuse_unservable, server_credentials, start_metrics, writer_health

    server_credentials(settings)  # refuse bad TLS or token settings here, not in every front
    interceptors(settings)
    one_blas_thread()  # the index writer's products (each front calls it in serve())
    count = settings.workers or (os.cpu_count() or 1)
    loop = asyncio.get_running_loop()
    stop = asyncio.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)

    reserved = _reserve_port(settings.host, settings.port)
    port = reserved.getsockname()[1]
    index, writers, socket_dir = None, [], None
    fronts: dict[int, multiprocessing.Process] = {}
    health_task = None
    failed = ""
    try:
        if settings.writer_address:
            writer_address = settings.writer_address
        else:
            spec = load_spec(settings.model)
            refuse_unservable(settings, spec)
            if settings.writer_election:
                index = await _elect(settings, spec, stop, lambda local: WriterServer(settings, local, settings.writer_listen, public=True))
                if index is None:  # stopped while electing
                    return
            else:
                index = await LocalIndex.open(settings, spec)
            path = _socket_path(settings)
            socket_dir = path.parent if path.parent != settings.data_dir.resolve() else None
            path.unlink(missing_ok=True)
            writer_address = f"unix:{path}"
            writers.append(WriterServer(settings, index, writer_address, public=False))
            if settings.writer_listen and not settings.writer_election:  # elected: ElectedIndex serves it
                writers.append(WriterServer(settings, index, settings.writer_listen, public=True))
            for w in writers:
                await w.start()
            os.chmod(path, 0o600)  # only this user's fronts (the data dir's owner) may write
            start_metrics(settings)
            health_task = loop.create_task(follow_health(lambda: _index_problem(index, index_label(settings)), lambda: writer_health(writers, index), settings.storage_check_interval_s))

        context = multiprocessing.get_context("spawn")
        events = context.Queue()

        def start_front(number: int) -> None:
            p = context.Process(
                target=_front_main,
                args=(front_settings(settings, writer_address, port, number, count), events, number, os.getpid()),
                name=f"dedup-front-{number}",
                daemon=False,
            )
            p.start()
            fronts[number] = p
            log.info("front %d started (pid %d)", number, p.pid)

        for n in range(count):
            start_front(n)
        listening: set[int] = set()  # front numbers that have the port
        ready_pids: set[int] = set()  # processes that got ready
        ever_ready: set[int] = set()  # front numbers that were ready once
        restart_at: dict[int, float] = {}
        failures: dict[int, int] = {}  # consecutive deaths before ready, per front number
        announced = all_ready = False
        while not stop.is_set():
            while not events.empty():
                number, what, pid = events.get_nowait()
                if what == "listening":
                    listening.add(number)
                else:
                    ready_pids.add(pid)
                    ever_ready.add(number)
                    failures.pop(number, None)
            if not announced and len(listening) == count:
                reserved.close()  # every front has the port now
                announce(f"dedup server listening on {settings.host}:{port}")
                announced = True
            if announced and not all_ready and len(ever_ready) == count:
                announce(f"dedup server ready ({count} workers)")
                all_ready = True
            for number, p in list(fronts.items()):
                if p.exitcode is None or number in restart_at:
                    continue
                if number not in ever_ready:  # it never started: neither would another
                    failed = f"front {number} (pid {p.pid}) failed to start (exit code {p.exitcode}); see its log above"
                    log.error("%s; stopping", failed)
                    stop.set()
                    break
                if p.pid not in ready_pids:
                    failures[number] = failures.get(number, 0) + 1
                delay = min(RESTART_DELAY_S * 2 ** failures.get(number, 0), 60.0)
                log.error("front %d (pid %d) exited with %s; starting it again in %.0f s", number, p.pid, p.exitcode, delay)
                restart_at[number] = time.monotonic() + delay
            for number, at in list(restart_at.items()):
                if time.monotonic() >= at and not stop.is_set():
                    del restart_at[number]
                    start_front(number)
            try:
                await asyncio.wait_for(stop.wait(), 0.2)
            except asyncio.TimeoutError:
                pass
    finally:
        log.info("stopping %d fronts", len(fronts))
        for p in fronts.values():
            if p.exitcode is None:
                p.terminate()  # SIGTERM: the front drains
        deadline = time.monotonic() + settings.grace_period_s + 30
        for p in fronts.values():
            while p.exitcode is None and time.monotonic() < deadline:
                await asyncio.sleep(0.05)
            if p.exitcode is None:
                p.kill()
        if health_task is not None:
            health_task.cancel()
        if isinstance(index, LocalIndex):  # an ElectedIndex drains its writer in close()
            await index.drained(settings.grace_period_s)  # replicas' fronts: what they queued
        for w in writers:
            await w.stop(0.5)
        if index is not None:
            await index.close()
        reserved.close()
        if socket_dir is not None:
            shutil.rmtree(socket_dir, ignore_errors=True)
        log.info("stopped")
    if failed:
        raise SystemExit(failed)


async def _elect(settings: Settings, spec, stop: asyncio.Event, make_writer_server):
    """ElectedIndex.open, given up on (it closes itself) when SIGTERM/SIGINT comes first: the
    election can wait for as long as etcd or the elected writer does not answer."""
    from imgdedup.transport.election import ElectedIndex

    opening = asyncio.ensure_future(ElectedIndex.open(settings, spec, make_writer_server))
    stopping = asyncio.ensure_future(stop.wait())
    await asyncio.wait({opening, stopping}, return_when=asyncio.FIRST_COMPLETED)
    stopping.cancel()
    if opening.done():
        return opening.result()
    opening.cancel()
    await asyncio.gather(opening, return_exceptions=True)
    log.info("stopped while electing the index writer")
    return None


async def _index_problem(index, label: str) -> str | None:
    return None if await index.healthy() else label
