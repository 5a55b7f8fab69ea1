"""OpenTelemetry traces (the `otel` extra): a server span for each RPC, continuing the caller's
trace from its W3C `traceparent` metadata, with a child span for each stage of a check (decode,
embed, index); exported over OTLP/gRPC to `otlp_endpoint`. Without an endpoint the spans are
OpenTelemetry's no-ops (the API is a dependency; the SDK and exporter are the extra).
"""

from __future__ import annotations

import logging
import os
import socket

from opentelemetry import trace

log = logging.getLogger(__name__)
tracer = trace.get_tracer("imgdedup")
_provider = None


def setup(settings) -> list:
    """Configure exporting when settings.otlp_endpoint is set; returns the server interceptors
    that open a span per RPC (none when tracing is off)."""
    global _provider
    if not settings.otlp_endpoint:
        return []
    try:
        from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import OTLPSpanExporter
        from opentelemetry.instrumentation.grpc import aio_server_interceptor
        from opentelemetry.sdk.resources import Resource
        from opentelemetry.sdk.trace import TracerProvider
        from opentelemetry.sdk.trace.export import BatchSpanProcessor
    except ImportError as exc:
        raise SystemExit(f"otlp_endpoint is set but OpenTelemetry's SDK is not installed ({exc.name}): install the package with the [otel] extra") from None
    if _provider is None:
        resource = Resource.create({"service.name": settings.otel_service_name, "service.instance.id": f"{socket.gethostname()}:{os.getpid()}"})
        _provider = TracerProvider(resource=resource)
        _provider.add_span_processor(BatchSpanProcessor(OTLPSpanExporter(endpoint=settings.otlp_endpoint, insecure=settings.otlp_insecure)))
        trace.set_tracer_provider(_provider)
        log.info("traces exported over OTLP to %s", settings.otlp_endpoint)
    return [aio_server_interceptor()]


def shutdown() -> None:
    """Export what is buffered (at most a few seconds)."""
    if _provider is not None:
        _provider.shutdown()
