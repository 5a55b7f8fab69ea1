"""The model runtime's sessions and the server's named threads (real model, real server)."""

from __future__ import annotations

import os
import sys
from pathlib import Path

import cv2
import numpy as np
import pytest

from conftest import check, encode, rgb
from imgdedup.runtime import create_embedder, load_spec

pytestmark = pytest.mark.store_neutral  # the embedders and their threads: run in the Lite pass, not again on the Milvus server


def test_the_all_core_session_and_the_worker_sessions_give_the_same_embeddings():
    # A lone inference runs on its own all-core session, batches under load on narrower ones:
    # an image must embed the same wherever it ran, or a copy could miss its original.
    spec = load_spec("sscd_disc_mixup")
    embedder = create_embedder(spec, workers=2, intra_op_threads=0)
    size = spec.input_size
    images = np.stack([cv2.resize(rgb(name), (size, size)) for name in ("astronaut", "coffee", "chelsea")])
    alone = embedder.embed(images, alone=True)
    busy = embedder.embed(images)
    single = np.concatenate([embedder.embed(images[i: i + 1], alone=True) for i in range(len(images))])
    assert alone.shape == (3, spec.output.dim)
    assert np.allclose(alone, busy, atol=1e-5) and np.allclose(alone, single, atol=1e-5)
    assert np.allclose(np.linalg.norm(alone, axis=1), 1.0, atol=1e-4)
    # Different photos stay apart, so the comparison above is not trivially true.
    assert float(alone[0] @ alone[1]) < 0.5


def test_the_io_bound_run_gives_the_same_embeddings():
    # The GPU path runs through onnxruntime's I/O binding; it works on the CPU provider too,
    # which is how it is shown here to give what the plain run gives.
    from imgdedup.runtime.onnx import OnnxEmbedder

    spec = load_spec("sscd_disc_mixup")
    size = spec.input_size
    images = np.stack([cv2.resize(rgb(name), (size, size)) for name in ("astronaut", "coffee")])
    plain = OnnxEmbedder(spec, session_threads=[2], io_binding=False).embed(images)
    bound = OnnxEmbedder(spec, session_threads=[2], io_binding=True).embed(images)
    assert np.array_equal(plain, bound) and plain.shape == (2, spec.output.dim)


def test_gpu_provider_options_and_batch_defaults(tmp_path):
    from imgdedup.config import Settings
    from imgdedup.runtime import gpu_options

    s = Settings(cuda_device_id=1, cuda_mem_limit_mb=2048, cudnn_conv_algo_search="HEURISTIC", tensorrt=True, data_dir=tmp_path)
    every = ["TensorrtExecutionProvider", "CUDAExecutionProvider", "CPUExecutionProvider"]
    trt, cuda, cpu = gpu_options(s).providers(every, None)
    assert trt[0] == "TensorrtExecutionProvider" and trt[1]["device_id"] == "1" and trt[1]["trt_engine_cache_path"] == str(tmp_path / "tensorrt-cache")
    assert cuda == ("CUDAExecutionProvider", {"device_id": "1", "cudnn_conv_algo_search": "HEURISTIC", "arena_extend_strategy": "kSameAsRequested", "gpu_mem_limit": str(2048 << 20)})
    assert cpu == "CPUExecutionProvider"
    assert gpu_options(s).providers(["CPUExecutionProvider"], None) == ["CPUExecutionProvider"]  # onnxruntime (CPU)
    assert Settings().batching(on_gpu=False) == (8, 0.002) and Settings().batching(on_gpu=True) == (32, 0.004)
    assert Settings(max_batch_size=16, max_queue_delay_ms=0).batching(on_gpu=True) == (16, 0.0)
    # Decoding processes: by default where the model leaves the CPU to the work around it.
    assert Settings().decoding_in_processes(model_on_cpu=True) is False
    assert Settings().decoding_in_processes(model_on_cpu=False) is True
    assert Settings(decode_processes=True).decoding_in_processes(model_on_cpu=True) is True
    assert Settings(decode_processes=False).decoding_in_processes(model_on_cpu=False) is False


@pytest.mark.single_process  # reads one process's metrics, threads or children
@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="OS thread names are read from /proc (Linux)")
def test_server_threads_carry_their_stage_names_into_the_os(server, stub):
    check(stub, encode(rgb("rocket")))  # every stage has run once
    pid = server.proc.pid
    names = {Path(f"/proc/{pid}/task/{tid}/comm").read_text().strip() for tid in os.listdir(f"/proc/{pid}/task")}
    # (view-search_0 runs only for a namespace with more views than the writer keeps in memory.)
    for stage in ("decode_0", "index-writer_0", "embed_0"):
        assert stage in names, sorted(names)
