"""Another ONNX model plugs in through a spec file alone: float32 NCHW, normalised outside the
graph, unnormalised output. The model is a small random-weight conv net built here with `onnx`
(a stand-in for a user-exported ResNet-50, which needs torch to export)."""

from __future__ import annotations

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

from conftest import ServerProcess, channel_for, check, encode, rgb
from imgdedup._proto.dedup.v1 import dedup_pb2 as pb
from imgdedup._proto.dedup.v1 import dedup_pb2_grpc as pb_grpc

SPEC = """
name = "tiny_conv"
[source]
path = "tiny.onnx"
[input]
name = "pixels"
layout = "NCHW"
dtype = "float32"
[input.resize]
mode = "short_side"
size = 64
[input.normalize]
mean = [0.485, 0.456, 0.406]
std = [0.229, 0.224, 0.225]
[output]
name = "features"
dim = 16
[search]
default_threshold = 0.97
"""


def _tiny_model(path):
    rng = np.random.default_rng(0)
    w = numpy_helper.from_array(rng.standard_normal((16, 3, 5, 5)).astype(np.float32), "w")
    nodes = [
        helper.make_node("Conv", ["pixels", "w"], ["c"], strides=[2, 2]),
        helper.make_node("Relu", ["c"], ["r"]),
        helper.make_node("GlobalAveragePool", ["r"], ["p"]),
        helper.make_node("Flatten", ["p"], ["features"]),
    ]
    graph = helper.make_graph(
        nodes,
        "tiny",
        [helper.make_tensor_value_info("pixels", TensorProto.FLOAT, ["batch", 3, "h", "w"])],
        [helper.make_tensor_value_info("features", TensorProto.FLOAT, ["batch", 16])],
        initializer=[w],
    )
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), path)


@pytest.mark.store_neutral  # the model's spec and runtime
def test_a_float_nchw_model_serves_from_its_spec_alone(tmp_path):
    _tiny_model(tmp_path / "tiny.onnx")
    (tmp_path / "tiny.toml").write_text(SPEC)
    srv = ServerProcess(tmp_path / "data", "--model", str(tmp_path / "tiny.toml")).start()
    try:
        with channel_for(srv.target) as channel:
            stub = pb_grpc.DedupServiceStub(channel)
            info = stub.GetInfo(pb.GetInfoRequest())
            assert (info.model_name, info.embedding_dim, info.input_size) == ("tiny_conv", 16, 64)
            assert abs(info.default_threshold - 0.97) < 1e-6
            a = rgb("astronaut")
            stored = check(stub, encode(a), image_id="a", add=True)
            assert stored.stored
            same = check(stub, encode(a, ".png"))
            assert same.is_duplicate and same.matches[0].image_id == "a"
            assert 0.97 <= same.matches[0].similarity <= 1.0001  # outputs were L2-normalised
    finally:
        srv.stop()


@pytest.mark.store_neutral  # the model's spec and the settings
def test_a_cluster_mode_the_model_cannot_serve_is_refused_at_start(tmp_path):
    """The tiny model has no [search.kinds]: a `copies` cluster mode would have no threshold."""
    _tiny_model(tmp_path / "tiny.onnx")
    (tmp_path / "tiny.toml").write_text(SPEC)
    srv = ServerProcess(tmp_path / "data", "--model", str(tmp_path / "tiny.toml"), env={"DEDUP_CLUSTER_MODES": '{"*": "copies"}'})
    with pytest.raises(RuntimeError, match="cluster_modes other than 'duplicates' need the model's calibration"):
        srv.start()
    assert srv.proc is not None and srv.proc.wait(60) != 0
