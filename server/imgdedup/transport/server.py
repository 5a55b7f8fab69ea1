"""The gRPC server process: DedupService, standard health checking and reflection.

The port opens at once with health NOT_SERVING; the model and Milvus load in the background and
health turns SERVING only when both are ready. SIGTERM/SIGINT: NOT_SERVING, drain, exit.
"""

from __future__ import annotations

import asyncio
import logging
import signal

import grpc
from grpc_health.v1 import health, health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection

from imgdedup._proto.dedup.v1 import dedup_pb2, dedup_pb2_grpc
from imgdedup.config import Settings
from imgdedup.core.engine import DedupEngine
from imgdedup.runtime import create_embedder, load_spec
from imgdedup.transport.servicer import DedupServicer

log = logging.getLogger(__name__)
SERVICE_NAME = dedup_pb2.DESCRIPTOR.services_by_name["DedupService"].full_name


async def serve(settings: Settings) -> None:
    spec = load_spec(settings.model)
    engine = DedupEngine(settings, spec)
    server = grpc.aio.server(
        options=[
            ("grpc.max_receive_message_length", settings.max_message_bytes),
            ("grpc.max_send_message_length", settings.max_message_bytes),
        ]
    )
    dedup_pb2_grpc.add_DedupServiceServicer_to_server(DedupServicer(engine), server)
    health_servicer = health.aio.HealthServicer()
    health_pb2_grpc.add_HealthServicer_to_server(health_servicer, server)
    reflection.enable_server_reflection(
        (SERVICE_NAME, health_pb2.DESCRIPTOR.services_by_name["Health"].full_name, reflection.SERVICE_NAME), server
    )
    for name in ("", SERVICE_NAME):
        await health_servicer.set(name, health_pb2.HealthCheckResponse.NOT_SERVING)

    port = server.add_insecure_port(f"{settings.host}:{settings.port}")
    await server.start()
    # Tests and scripts read this line to find a port chosen with --port 0.
    print(f"dedup server listening on {settings.host}:{port}", flush=True)

    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)

    def make_embedder(model_spec):
        return create_embedder(model_spec, providers=settings.providers, intra_op_threads=settings.intra_op_threads)

    startup = asyncio.create_task(engine.start(make_embedder))
    stopper = asyncio.create_task(stop.wait())
    await asyncio.wait({startup, stopper}, return_when=asyncio.FIRST_COMPLETED)
    if startup.done() and startup.exception() is None:
        for name in ("", SERVICE_NAME):
            await health_servicer.set(name, health_pb2.HealthCheckResponse.SERVING)
        print("dedup server ready", flush=True)
        await stop.wait()
    elif startup.done():
        log.error("startup failed: %s", startup.exception())
        await server.stop(0)
        raise SystemExit(f"startup failed: {startup.exception()}")

    log.info("shutting down: draining for up to %.0f s", settings.grace_period_s)
    await health_servicer.enter_graceful_shutdown()
    await server.stop(settings.grace_period_s)
    startup.cancel()
    await asyncio.gather(startup, return_exceptions=True)
    await engine.stop()
    log.info("stopped")
