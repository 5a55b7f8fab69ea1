"""Prometheus metrics: requests by method and code, batch sizes, queue and write times."""

from __future__ import annotations

import re
import urllib.request

import grpc
import pytest

from conftest import ServerProcess, channel_for, check, encode, free_port, rgb
from imgdedup._proto.dedup.v1 import dedup_pb2 as pb
from imgdedup._proto.dedup.v1 import dedup_pb2_grpc as pb_grpc


def _value(text: str, name: str, **labels: str) -> float:
    label_re = "".join(f'(?=[^}}]*{k}="{re.escape(v)}")' for k, v in labels.items())
    pattern = rf"^{re.escape(name)}(?:\{{{label_re}[^}}]*\}})? ([0-9.e+-]+)$" if labels else rf"^{re.escape(name)}(?:\{{[^}}]*\}})? ([0-9.e+-]+)$"
    values = [float(m.group(1)) for m in re.finditer(pattern, text, re.M)]
    assert values, f"{name} {labels} not in /metrics"
    return sum(values)


@pytest.mark.single_process  # reads one process's metrics, threads or children
def test_metrics_count_requests_batches_and_writes(tmp_path):
    port = free_port()
    srv = ServerProcess(tmp_path, "--metrics-port", str(port), env={"DEDUP_FLUSH_INTERVAL_S": "3600"}).start()
    try:
        with channel_for(srv.target) as channel:
            stub = pb_grpc.DedupServiceStub(channel)
            blob = encode(rgb("astronaut"))
            check(stub, blob, image_id="a", add=True)
            check(stub, blob)  # exact duplicate
            check(stub, encode(rgb("coffee")))
            with pytest.raises(grpc.RpcError):
                check(stub, b"not an image")
            reqs = [pb.BulkCheckRequest(image_id=f"b{i}", image=encode(rgb("rocket"), quality=70 + i)) for i in range(4)]
            assert len(list(stub.BulkCheck(iter(reqs)))) == 4
        text = urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10).read().decode()
    finally:
        srv.stop()
    assert _value(text, "dedup_requests_total", method="CheckDuplicate", code="OK") == 3
    assert _value(text, "dedup_requests_total", method="CheckDuplicate", code="INVALID_ARGUMENT") == 1
    assert _value(text, "dedup_requests_total", method="BulkCheck", code="OK") == 4
    assert _value(text, "dedup_exact_duplicates_total") == 1
    assert _value(text, "dedup_embed_batch_size_sum") == 6  # every image but the exact duplicate
    assert 1 <= _value(text, "dedup_embed_batch_size_count") <= 6
    assert _value(text, "dedup_index_write_batch_size_sum") == 7
    assert _value(text, "dedup_unflushed_rows") == 3  # no flush yet: the namespace's registration, image a and its cluster
    assert _value(text, "dedup_request_seconds_count", method="CheckDuplicate") == 4
