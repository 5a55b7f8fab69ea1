"""The gRPC server process: DedupService, standard health checking and reflection.

The port opens at once with health NOT_SERVING; the model and the index (Milvus, or the index
writer of another process) load in the background and health turns SERVING only when both are
ready. SIGTERM/SIGINT: NOT_SERVING, drain, exit. `--workers N`: transport/workers.py.
"""

from __future__ import annotations

import asyncio
import logging
import signal

import grpc
from grpc_health.v1 import health, health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection

from imgdedup._proto.dedup.internal.v1 import writer_pb2_grpc
from imgdedup._proto.dedup.v1 import dedup_pb2, dedup_pb2_grpc
from imgdedup import tracing
from imgdedup.config import Settings
from imgdedup.core.backends import IndexBackend
from imgdedup.core.engine import DedupEngine, EngineSlot
from imgdedup.core.local_index import LocalIndex
from imgdedup.core.match_modes import ClusterModes
from imgdedup.core.threads import one_blas_thread
from imgdedup.logs import announce
from imgdedup.runtime import create_embedder, create_torch_embedder, create_triton_embedder, gpu_options, load_spec
from imgdedup.transport.auth import BearerTokenInterceptor, TokenConfigError, load_tokens
from imgdedup.transport.election import ElectedIndex
from imgdedup.transport.remote_index import RemoteIndex
from imgdedup.transport.servicer import DedupServicer
from imgdedup.transport.writer_service import KEEPALIVE_OPTIONS, IndexWriterServicer
from imgdedup.transport.writer_service import SERVICE_NAME as WRITER_SERVICE_NAME

log = logging.getLogger(__name__)
SERVICE_NAME = dedup_pb2.DESCRIPTOR.services_by_name["DedupService"].full_name


def _read_pem(setting: str, path, marker: bytes) -> bytes:
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise SystemExit(f"cannot read {setting} {path}: {exc.strerror or type(exc).__name__}") from None
    if b"-----BEGIN " not in data or marker not in data:
        raise SystemExit(f"{setting} {path} is not a PEM file with a {marker.decode().strip('- ')}")
    return data


def server_credentials(settings: Settings) -> grpc.ServerCredentials | None:
    """TLS credentials from the configured files (mutual TLS when tls_client_ca_file is set);
    None when TLS is not configured."""
    cert, key, client_ca = settings.tls_cert_file, settings.tls_key_file, settings.tls_client_ca_file
    if cert is None and key is None:
        if client_ca is not None:
            raise SystemExit("tls_client_ca_file needs tls_cert_file and tls_key_file")
        return None
    if cert is None or key is None:
        raise SystemExit("TLS needs both tls_cert_file and tls_key_file")
    root = _read_pem("tls_client_ca_file", client_ca, b"CERTIFICATE-----") if client_ca is not None else None
    return grpc.ssl_server_credentials(
        [(_read_pem("tls_key_file", key, b"PRIVATE KEY-----"), _read_pem("tls_cert_file", cert, b"CERTIFICATE-----"))],
        root_certificates=root,
        require_client_auth=root is not None,
    )


def interceptors(settings: Settings) -> list[grpc.aio.ServerInterceptor]:
    try:
        tokens = load_tokens(settings)
    except TokenConfigError as exc:
        raise SystemExit(str(exc)) from None
    return [BearerTokenInterceptor(tokens)] if tokens else []


def refuse_unservable(settings: Settings, spec) -> None:
    """Settings this model cannot serve stop a start before anything opens (in every process:
    a writer elected later would otherwise fail each term it wins)."""
    try:
        ClusterModes.from_settings(settings, spec)
    except ValueError as exc:
        raise SystemExit(f"startup failed: {exc}") from None


def index_label(settings: Settings) -> str:
    """What the health log calls the index when it does not answer."""
    if settings.writer_address:
        return f"the index writer at {settings.writer_address}"
    return "the elected index writer" if settings.writer_election else "Milvus"


async def follow_health(problem, targets, interval_s: float) -> None:
    """Readiness follows what checks need: every (health servicer, service names) in `targets`
    (a list, or a function that gives the current list: an elected writer's server comes and
    goes) is NOT_SERVING while `problem()` names something that does not answer (Milvus, the
    index writer, the model on Triton), SERVING once it names nothing."""
    serving, down = True, ""
    told: list = []  # the servicers told the current status
    while True:
        await asyncio.sleep(interval_s)
        try:
            what = await problem()
        except Exception as exc:  # noqa: BLE001 - a check that breaks is a problem, not the end of checking
            log.exception("health check failed")
            what = f"the health check ({type(exc).__name__})"
        changed = (what is None) != serving
        serving = what is None
        status = health_pb2.HealthCheckResponse.SERVING if serving else health_pb2.HealthCheckResponse.NOT_SERVING
        current = targets() if callable(targets) else targets
        if changed:
            told.clear()
        for servicer, names in current:
            if not any(servicer is t for t in told):
                told.append(servicer)
                for name in names:
                    await servicer.set(name, status)
        if changed:
            if serving:
                log.warning("health: SERVING (%s answers again)", down)
            else:
                down = what
                log.warning("health: NOT_SERVING (%s is not answering)", what)


def start_metrics(settings: Settings, announce=announce) -> None:
    """Serve Prometheus /metrics on metrics_port, if set, and say where."""
    if settings.metrics_port:
        from imgdedup.metrics import serve_metrics

        announce(f"dedup metrics on http://{settings.host}:{serve_metrics(settings.host, settings.metrics_port)}/metrics")


def grpc_options(settings: Settings) -> list[tuple[str, int]]:
    return [
        ("grpc.max_receive_message_length", settings.max_message_bytes),
        ("grpc.max_send_message_length", settings.max_message_bytes),
        ("grpc.max_concurrent_streams", settings.max_concurrent_streams),
    ]


class WriterServer:
    """The index writer's own gRPC server (transport/writer_service.py) on `address`: a unix
    socket for `--workers` fronts (no TLS, no tokens: the socket lives in the data dir), or
    writer_listen for other replicas (TLS and tokens as for the public port)."""

    def __init__(self, settings: Settings, index: IndexBackend, address: str, public: bool):
        self.address = address
        self.server = grpc.aio.server(interceptors=interceptors(settings) if public else [], options=grpc_options(settings) + KEEPALIVE_OPTIONS)
        writer_pb2_grpc.add_IndexWriterServiceServicer_to_server(IndexWriterServicer(index), self.server)
        self.health = health.aio.HealthServicer()
        health_pb2_grpc.add_HealthServicer_to_server(self.health, self.server)
        credentials = server_credentials(settings) if public else None
        try:
            self.port = self.server.add_secure_port(address, credentials) if credentials else self.server.add_insecure_port(address)
        except RuntimeError as exc:
            raise SystemExit(f"cannot listen on {address} for the index writer: {exc}") from None

    async def start(self) -> None:
        await self.server.start()
        for name in ("", WRITER_SERVICE_NAME):
            await self.health.set(name, health_pb2.HealthCheckResponse.SERVING)
        shown = self.address if self.address.startswith("unix:") else f"{self.address.rpartition(':')[0]}:{self.port}"
        announce(f"dedup index writer serving at {shown}")

    async def stop(self, grace_s: float) -> None:
        await self.health.enter_graceful_shutdown()
        await self.server.stop(grace_s)


def writer_health(writers: list[WriterServer], index: IndexBackend) -> list:
    """(health servicer, service names) of the writer servers serving now: the configured ones,
    and an elected writer's own while this process holds the lease (it comes and goes)."""
    elected = index.writer_server if isinstance(index, ElectedIndex) else None
    return [(w.health, ("", WRITER_SERVICE_NAME)) for w in writers + ([elected] if elected is not None else [])]


def make_embedder(settings: Settings):
    def make(model_spec):
        if settings.embedder == "triton":
            return create_triton_embedder(model_spec, settings)
        if settings.embedder == "torch":
            return create_torch_embedder(model_spec, settings)
        return create_embedder(model_spec, providers=settings.providers, workers=settings.inference_workers, intra_op_threads=settings.intra_op_threads, gpu=gpu_options(settings))

    return make


async def serve(settings: Settings, *, announce=announce, on_event=None, signals=(signal.SIGTERM, signal.SIGINT)) -> None:
    """One server process. `announce` prints the lines tests and scripts read; `on_event`
    (for `--workers`' fronts) hears "listening" and "ready"; `signals` stop it."""
    one_blas_thread()
    credentials = server_credentials(settings)
    auth = interceptors(settings)
    traced = tracing.setup(settings)  # first: the RPC's span covers the token check too
    spec = load_spec(settings.model)
    refuse_unservable(settings, spec)
    slot = EngineSlot(settings)
    server = grpc.aio.server(interceptors=traced + auth, options=grpc_options(settings))
    dedup_pb2_grpc.add_DedupServiceServicer_to_server(DedupServicer(slot), server)
    health_servicer = health.aio.HealthServicer()
    health_pb2_grpc.add_HealthServicer_to_server(health_servicer, server)
    reflection.enable_server_reflection(
        (SERVICE_NAME, health_pb2.DESCRIPTOR.services_by_name["Health"].full_name, reflection.SERVICE_NAME), server
    )
    for name in ("", SERVICE_NAME):
        await health_servicer.set(name, health_pb2.HealthCheckResponse.NOT_SERVING)

    address = f"{settings.host}:{settings.port}"
    try:
        port = server.add_secure_port(address, credentials) if credentials else server.add_insecure_port(address)
    except RuntimeError as exc:
        hint = " (is the port free? are tls_cert_file and tls_key_file a matching pair?)" if credentials else ""
        raise SystemExit(f"cannot listen on {address}: {exc}{hint}") from None
    log.info(
        "transport: %s; bearer tokens: %s",
        ("mutual TLS" if settings.tls_client_ca_file else "TLS") if credentials else "plaintext",
        "required" if auth else "off",
    )
    await server.start()
    # Tests and scripts read this line to find a port chosen with --port 0.
    announce(f"dedup server listening on {settings.host}:{port}")
    if on_event:
        on_event("listening")
    start_metrics(settings, announce)

    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in signals:
        loop.add_signal_handler(sig, stop.set)

    writers: list[WriterServer] = []

    async def open_index():
        if settings.writer_address:
            return await RemoteIndex.open(settings)
        if settings.writer_election:
            return await ElectedIndex.open(settings, spec, lambda index: WriterServer(settings, index, settings.writer_listen, public=True))
        index = await LocalIndex.open(settings, spec)
        if settings.writer_listen:
            writers.append(WriterServer(settings, index, settings.writer_listen, public=True))
            await writers[-1].start()
        return index

    startup = asyncio.create_task(DedupEngine.open(settings, spec, make_embedder(settings), open_index))
    stopper = asyncio.create_task(stop.wait())
    await asyncio.wait({startup, stopper}, return_when=asyncio.FIRST_COMPLETED)
    if startup.done() and startup.exception() is None:
        engine = startup.result()
        slot.fill(engine)
        for name in ("", SERVICE_NAME):
            await health_servicer.set(name, health_pb2.HealthCheckResponse.SERVING)
        announce("dedup server ready")
        if on_event:
            on_event("ready")
        def followers() -> list:
            return [(health_servicer, ("", SERVICE_NAME))] + writer_health(writers, engine.index)

        names = {"index": index_label(settings), "model": f"the model on Triton at {settings.triton_url}"}

        async def problem():
            part = await engine.health_problem()
            return names[part] if part else None

        monitor = asyncio.create_task(follow_health(problem, followers, settings.storage_check_interval_s))
        await stop.wait()
        monitor.cancel()
    elif startup.done():
        log.error("startup failed: %s", startup.exception())
        await server.stop(0)
        for w in writers:  # the index opened (and its writer served) before the model failed
            await w.stop(0)
        tracing.shutdown()
        raise SystemExit(f"startup failed: {startup.exception()}")

    log.info("shutting down: draining for up to %.0f s", settings.grace_period_s)
    await health_servicer.enter_graceful_shutdown()
    await server.stop(settings.grace_period_s)
    # A start still under way ends here, before the writers are stopped: none starts after.
    startup.cancel()
    await asyncio.gather(startup, return_exceptions=True)
    engine = slot.take()  # calls from now on get NOT_READY
    # Other replicas' fronts keep their Commit streams open (they never end on their own):
    # answer what is queued, then close.
    if engine is not None and writers and isinstance(engine.index, LocalIndex):
        await engine.index.drained(settings.grace_period_s)
    for w in writers:
        await w.stop(0.5)
    if engine is not None:
        await engine.close()
    tracing.shutdown()
    log.info("stopped")
