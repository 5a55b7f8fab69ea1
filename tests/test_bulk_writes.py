"""A stream's index writes gather the images on their way (bulk_write_delay_ms), and only those.

A write's Milvus calls cost less per image the more images share them, so a write of bulk images
waits a little for the rest of its stream's window; an image whose stream has nothing behind it
(a client that sends one image at a time) is written at once. The server under test waits up to
DELAY_MS, far longer than any of these writes take, so each fact shows plainly: the number of
writes (Prometheus counters), and whether an answer took the delay."""

from __future__ import annotations

import re
import time
import urllib.request

import pytest

from conftest import ServerProcess, channel_for, encode, free_port, rgb
from imgdedup._proto.dedup.v1 import dedup_pb2 as pb
from imgdedup._proto.dedup.v1 import dedup_pb2_grpc as pb_grpc

DELAY_MS = 20_000
PHOTOS = ("astronaut", "coffee", "chelsea", "rocket", "camera")


@pytest.fixture(scope="module")
def served(tmp_path_factory):
    port = free_port()
    env = {"DEDUP_BULK_WRITE_DELAY_MS": str(DELAY_MS), "DEDUP_MAX_COMMIT_BATCH": "64"}
    srv = ServerProcess(tmp_path_factory.mktemp("dedup-bulk-writes"), "--metrics-port", str(port), env=env).start()
    try:
        with channel_for(srv.target) as channel:
            yield pb_grpc.DedupServiceStub(channel), f"http://127.0.0.1:{port}/metrics"
    finally:
        assert srv.stop() == 0


def writes(metrics_url: str) -> tuple[int, int]:
    """(index writes, images they held) so far, from the index writer's metrics."""
    text = urllib.request.urlopen(metrics_url, timeout=10).read().decode()
    count = re.search(r"^dedup_index_write_batch_size_count ([0-9.e+]+)$", text, re.M)
    total = re.search(r"^dedup_index_write_batch_size_sum ([0-9.e+]+)$", text, re.M)
    return (int(float(count.group(1))), int(float(total.group(1)))) if count and total else (0, 0)


def images(prefix: str, n: int) -> list[tuple[str, bytes]]:
    """n distinct photos: the package's photos at several JPEG qualities and mirror images."""
    out = []
    for i in range(n):
        name = PHOTOS[i % len(PHOTOS)]
        img = rgb(name)[:, ::-1] if (i // len(PHOTOS)) % 2 else rgb(name)
        out.append((f"{prefix}{i}", encode(img, quality=70 + i)))
    return out


def test_a_streams_window_is_written_in_one_write(served):
    stub, metrics_url = served
    # bulk_max_in_flight (32) images: all on their way at once, in model batches of 8.
    sent = images("window-", 32)
    before = writes(metrics_url)
    responses = list(stub.BulkCheck(iter(pb.BulkCheckRequest(image_id=i, image=b, add_to_index=True) for i, b in sent), timeout=120))
    after = writes(metrics_url)
    assert [r.index for r in responses] == list(range(len(sent)))
    assert all(r.WhichOneof("outcome") == "result" and r.result.stored for r in responses)
    # The window in one write (two, if the server answered an early image before it had read
    # the later ones): the last image said that nothing more was coming, so the write went
    # without waiting out the delay (each answer came long before it). Without the wait, the
    # four model batches make four writes or more.
    assert after[1] - before[1] == len(sent)
    assert after[0] - before[0] <= 2, after[0] - before[0]
    assert max(r.result.timings.index_ms for r in responses) < DELAY_MS / 2


def test_a_stream_of_one_image_at_a_time_never_waits(served):
    stub, metrics_url = served
    sent = images("one-by-one-", 3)
    before = writes(metrics_url)
    requests: list[pb.BulkCheckRequest] = []
    answered = []

    def one_at_a_time():
        for image_id, data in sent:
            requests.append(pb.BulkCheckRequest(image_id=image_id, image=data, add_to_index=True))
            yield requests[-1]
            deadline = time.monotonic() + 60
            while len(answered) < len(requests) and time.monotonic() < deadline:
                time.sleep(0.005)  # the next image only after this one's answer

    for r in stub.BulkCheck(one_at_a_time(), timeout=120):
        answered.append(r)
    assert [r.index for r in answered] == [0, 1, 2]
    assert all(r.WhichOneof("outcome") == "result" and r.result.stored for r in answered)
    assert writes(metrics_url)[0] - before[0] == 3
    # A wait would have taken DELAY_MS: nothing was behind any of these images.
    assert max(r.result.timings.index_ms for r in answered) < DELAY_MS / 2, [r.result.timings.index_ms for r in answered]

