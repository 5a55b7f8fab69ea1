"""Traces, logs and metrics from a real server: OpenTelemetry spans exported over OTLP/gRPC to a
real OTLP receiver started here (the collector's TraceService from opentelemetry-proto, recording
what it is sent), continuing the caller's trace; JSON log lines that carry the request id the
server returns in x-request-id; per-stage histograms and gauges in /metrics."""

from __future__ import annotations

import json
import threading
import time
import urllib.request
from concurrent import futures

import grpc
import pytest
from opentelemetry.proto.collector.trace.v1 import trace_service_pb2, trace_service_pb2_grpc

from conftest import ServerProcess, WORKERS, channel_for, encode, free_port, rgb, wait_until
from imgdedup._proto.dedup.v1 import dedup_pb2 as pb
from imgdedup._proto.dedup.v1 import dedup_pb2_grpc as pb_grpc

pytestmark = pytest.mark.store_neutral  # traces, request ids and metrics of our own processes: run in the Lite pass, not again on the Milvus server


TRACE_ID = "4bf92f3577b34da6a3ce929d0e0e4736"
PARENT_ID = "00f067aa0ba902b7"


class Receiver(trace_service_pb2_grpc.TraceServiceServicer):
    """An OTLP trace receiver: keeps every span it is sent."""

    def __init__(self):
        self.spans = []
        self.lock = threading.Lock()

    def Export(self, request, context):
        with self.lock:
            for resource_spans in request.resource_spans:
                service = {a.key: a.value.string_value for a in resource_spans.resource.attributes}.get("service.name")
                for scope in resource_spans.scope_spans:
                    self.spans += [(service, s) for s in scope.spans]
        return trace_service_pb2.ExportTraceServiceResponse()

    def of_trace(self, trace_hex: str) -> list:
        with self.lock:
            return [s for _, s in self.spans if s.trace_id.hex() == trace_hex]


@pytest.fixture(scope="module")
def receiver():
    rec = Receiver()
    server = grpc.server(futures.ThreadPoolExecutor(4))
    trace_service_pb2_grpc.add_TraceServiceServicer_to_server(rec, server)
    port = server.add_insecure_port("127.0.0.1:0")
    server.start()
    yield rec, f"http://127.0.0.1:{port}"
    server.stop(0)


@pytest.fixture(scope="module")
def observed(tmp_path_factory, receiver):
    rec, endpoint = receiver
    metrics_port = free_port()
    env = {"DEDUP_OTLP_ENDPOINT": endpoint, "OTEL_BSP_SCHEDULE_DELAY": "200", "DEDUP_LOG_FORMAT": "json", "DEDUP_LOG_LEVEL": "DEBUG", "DEDUP_METRICS_PORT": str(metrics_port)}
    srv = ServerProcess(tmp_path_factory.mktemp("observed"), env=env).start()
    try:
        yield srv, rec, metrics_port
    finally:
        assert srv.stop() == 0, "".join(srv.output[-30:])


def test_a_check_continues_the_callers_trace_with_a_span_per_stage(observed):
    srv, rec, _ = observed
    with channel_for(srv.target) as channel:
        stub = pb_grpc.DedupServiceStub(channel)
        metadata = (("traceparent", f"00-{TRACE_ID}-{PARENT_ID}-01"),)
        stub.CheckDuplicate(pb.CheckDuplicateRequest(image_id="traced", image=encode(rgb("astronaut")), add_to_index=True), metadata=metadata, timeout=60)
    want = {"/dedup.v1.DedupService/CheckDuplicate", "decode", "embed", "index"}
    assert wait_until(lambda: want <= {s.name for s in rec.of_trace(TRACE_ID)}, timeout=30), [s.name for s in rec.of_trace(TRACE_ID)]
    spans = {s.name: s for s in rec.of_trace(TRACE_ID)}
    rpc = spans["/dedup.v1.DedupService/CheckDuplicate"]
    assert rpc.parent_span_id.hex() == PARENT_ID and rpc.kind == rpc.SPAN_KIND_SERVER
    for stage in ("decode", "embed", "index"):
        assert spans[stage].parent_span_id == rpc.span_id, stage
        assert rpc.start_time_unix_nano <= spans[stage].start_time_unix_nano <= spans[stage].end_time_unix_nano <= rpc.end_time_unix_nano
    assert spans["decode"].end_time_unix_nano <= spans["embed"].start_time_unix_nano <= spans["embed"].end_time_unix_nano <= spans["index"].start_time_unix_nano
    attrs = {a.key: a.value for a in spans["index"].attributes}
    assert attrs["dedup.stored"].bool_value is True


def test_the_request_id_comes_back_and_is_in_every_log_line_of_the_rpc(observed):
    srv, _, _ = observed
    with channel_for(srv.target) as channel:
        stub = pb_grpc.DedupServiceStub(channel)
        # Unary calls: in the trailers (headers sent early would stop a client's retries).
        _, call = stub.GetInfo.with_call(pb.GetInfoRequest(), metadata=(("x-request-id", "req-obs-1"),), timeout=30)
        assert dict(call.trailing_metadata())["x-request-id"] == "req-obs-1"
        assert "x-request-id" not in dict(call.initial_metadata())
        _, call = stub.GetInfo.with_call(pb.GetInfoRequest(), timeout=30)
        minted = dict(call.trailing_metadata())["x-request-id"]
        assert len(minted) == 32 and minted != "req-obs-1"
        with pytest.raises(grpc.RpcError) as err:
            stub.CheckDuplicate(pb.CheckDuplicateRequest(image=b""), metadata=(("x-request-id", "req-obs-2"),), timeout=30)
        trailers = dict(err.value.trailing_metadata())
        assert trailers["x-request-id"] == "req-obs-2" and "grpc-status-details-bin" in trailers  # the details stay
        assert "x-request-id" not in dict(err.value.initial_metadata())
        # A stream: at its start, in the headers.
        stream = stub.BulkCheck(iter([pb.BulkCheckRequest(image_id="s", image=encode(rgb("chelsea")))]), metadata=(("x-request-id", "req-obs-3"),), timeout=60)
        assert dict(stream.initial_metadata())["x-request-id"] == "req-obs-3"
        assert [r.WhichOneof("outcome") for r in stream] == ["result"]

    def lines():
        out = []
        for line in list(srv.output):
            try:
                out.append(json.loads(line))
            except ValueError:
                pass
        return out

    def mine(rid):
        return [e for e in lines() if e.get("request_id") == rid]

    assert wait_until(lambda: mine("req-obs-1") and mine("req-obs-2") and mine(minted), timeout=10)
    (info,) = [e for e in mine("req-obs-1") if e["logger"] == "imgdedup.transport.servicer"]
    assert info["level"] == "DEBUG" and info["message"].startswith("GetInfo OK in ")
    assert any("CheckDuplicate INVALID_ARGUMENT" in e["message"] for e in mine("req-obs-2"))
    assert all({"time", "level", "logger", "message", "pid"} <= e.keys() for e in lines())


def test_stage_histograms_gauges_and_the_model_in_metrics(observed):
    srv, _, metrics_port = observed
    with channel_for(srv.target) as channel:
        pb_grpc.DedupServiceStub(channel).CheckDuplicate(pb.CheckDuplicateRequest(image=encode(rgb("coffee")), add_to_index=True), timeout=60)
    time.sleep(0.2)
    # With --workers the metrics port is the writer's, and front k serves its own on port + 1 + k.
    ports = [metrics_port + 1 + k for k in range(WORKERS)] if WORKERS > 1 else [metrics_port]
    text = "".join(urllib.request.urlopen(f"http://127.0.0.1:{p}/metrics", timeout=10).read().decode() for p in ports)
    for stage in ("decode", "embed", "index"):
        assert f'dedup_stage_seconds_count{{stage="{stage}"}}' in text, stage
    if WORKERS == 1:  # one process: the writer's stages and gauges are here too
        for stage in ("search", "cluster", "insert"):
            assert f'dedup_stage_seconds_count{{stage="{stage}"}}' in text, stage
        assert 'dedup_queue_depth{queue="index"}' in text
    assert 'dedup_queue_depth{queue="embed_high"} 0.0' in text and 'dedup_queue_depth{queue="embed_low"} 0.0' in text
    assert "dedup_bulk_streams 0.0" in text
    assert 'dedup_model_info{embedder="onnxruntime",model="sscd_disc_mixup",providers="CPUExecutionProvider"} 1.0' in text
