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
Guarantees are those of one process (docs/scale-out.md): every write goes through the one
writer, in each front's order.
"""

from __future__ import annotations

import asyncio
import logging
import multiprocessing
import os
import signal
import socket
import time

from imgdedup.config import Settings

log = logging.getLogger(__name__)
RESTART_DELAY_S = 1.0


def _front_main(settings: Settings, events, number: int) -> None:
    """A front process (spawned): one serve() that reports its progress to the parent."""
    from imgdedup.cli import LOG_FORMAT
    from imgdedup.transport.server import serve

    _end_with_parent()
    logging.basicConfig(level=settings.log_level.upper(), format=LOG_FORMAT)
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # the parent decides when fronts stop

    def quiet(*args, **kwargs) -> None:
        pass

    asyncio.run(serve(settings, announce=quiet, on_event=lambda what: events.put((number, what, os.getpid()))))


def _end_with_parent() -> None:
    """Linux: SIGTERM this front when the parent (the writer) dies, even by kill -9, so that no
    front outlives its writer; the front then drains and exits as on any SIGTERM."""
    try:
        import ctypes

        PR_SET_PDEATHSIG = 1
        ctypes.CDLL("libc.so.6", use_errno=True).prctl(PR_SET_PDEATHSIG, signal.SIGTERM)
    except (OSError, AttributeError):  # not Linux: fronts notice the writer's absence instead
        pass
    if os.getppid() == 1:  # the parent died before prctl
        os.kill(os.getpid(), signal.SIGTERM)


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
    to decode on every core while another is idle."""
    cores = os.cpu_count() or 1
    update: dict = {"workers": 1, "writer_address": writer_address, "writer_listen": None, "port": port}
    explicit = settings.model_fields_set
    if "intra_op_threads" not in explicit and settings.intra_op_threads == 0:
        update["intra_op_threads"] = max(1, cores // (count * settings.inference_workers))
    if settings.metrics_port:
        update["metrics_port"] = settings.metrics_port + 1 + number  # the writer keeps metrics_port
    if writer_address.startswith("unix:"):
        update["writer_token"] = None
        update["writer_tls_ca_file"] = None
    return settings.model_copy(update=update)


async def supervise(settings: Settings) -> None:
    from imgdedup.core.local_index import LocalIndex
    from imgdedup.runtime import load_spec
    from imgdedup.transport.server import WriterServer, interceptors, server_credentials

    server_credentials(settings)  # refuse bad TLS or token settings here, not in every front
    interceptors(settings)
    count = settings.workers or (os.cpu_count() or 1)
    loop = asyncio.get_running_loop()
    stop = asyncio.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)

    index, writers = None, []
    if settings.writer_address:
        writer_address = settings.writer_address
    else:
        spec = load_spec(settings.model)
        index = await LocalIndex.open(settings, spec, settings.threshold or spec.search.default_threshold)
        path = (settings.data_dir / "writer.sock").resolve()
        path.unlink(missing_ok=True)
        writer_address = f"unix:{path}"
        writers.append(WriterServer(settings, index, writer_address, public=False))
        if settings.writer_listen:
            writers.append(WriterServer(settings, index, settings.writer_listen, public=True))
        for w in writers:
            await w.start()
        os.chmod(path, 0o600)  # only this user's fronts (the data dir's owner) may write
        if settings.metrics_port:
            from imgdedup.metrics import serve_metrics

            print(f"dedup metrics on http://{settings.host}:{serve_metrics(settings.host, settings.metrics_port)}/metrics", flush=True)

    reserved = _reserve_port(settings.host, settings.port)
    port = reserved.getsockname()[1]
    context = multiprocessing.get_context("spawn")
    events = context.Queue()
    fronts: dict[int, multiprocessing.Process] = {}

    def start_front(number: int) -> None:
        p = context.Process(
            target=_front_main,
            args=(front_settings(settings, writer_address, port, number, count), events, number),
            name=f"dedup-front-{number}",
            daemon=False,
        )
        p.start()
        fronts[number] = p
        log.info("front %d started (pid %d)", number, p.pid)

    for n in range(count):
        start_front(n)
    listening: set[int] = set()
    ready: set[int] = set()
    announced = all_ready = False
    monitor_state = {"serving": True}

    async def follow_writer_health() -> None:
        from grpc_health.v1 import health_pb2

        if index is None:
            return
        while True:
            await asyncio.sleep(settings.storage_check_interval_s)
            ok = await index.healthy()
            if ok != monitor_state["serving"]:
                monitor_state["serving"] = ok
                status = health_pb2.HealthCheckResponse.SERVING if ok else health_pb2.HealthCheckResponse.NOT_SERVING
                for w in writers:
                    for name in ("", "dedup.internal.v1.IndexWriterService"):
                        await w.health.set(name, status)

    health_task = loop.create_task(follow_writer_health())
    died: dict[int, float] = {}
    failed = ""
    try:
        while not stop.is_set():
            while not events.empty():
                number, what, pid = events.get_nowait()
                (listening if what == "listening" else ready).add(number)
            if not announced and len(listening) == count:
                reserved.close()  # every front has the port now
                print(f"dedup server listening on {settings.host}:{port}", flush=True)
                announced = True
            if announced and not all_ready and len(ready) == count:
                print(f"dedup server ready ({count} workers)", flush=True)
                all_ready = True
            for number, p in list(fronts.items()):
                if p.exitcode is not None and number not in died:
                    if number not in ready:  # it never started: neither would another
                        failed = f"front {number} (pid {p.pid}) failed to start (exit code {p.exitcode}); see its log above"
                        log.error("%s; stopping", failed)
                        stop.set()
                        break
                    log.error("front %d (pid %d) exited with %s; starting it again", number, p.pid, p.exitcode)
                    died[number] = time.monotonic()
                if number in died and time.monotonic() - died[number] >= RESTART_DELAY_S:
                    del died[number]
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
        health_task.cancel()
        for w in writers:
            await w.stop(settings.grace_period_s)
        if index is not None:
            await index.close()
        reserved.close()
        log.info("stopped")
    if failed:
        raise SystemExit(failed)

