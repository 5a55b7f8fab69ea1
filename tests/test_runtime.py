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


@pytest.mark.single_process  # reads one process's metrics, threads or children
@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="OS thread names are read from /proc (Linux)")
def test_server_threads_carry_their_stage_names_into_the_os(server, stub):
    check(stub, encode(rgb("rocket")))  # every stage has run once
    pid = server.proc.pid
    names = {Path(f"/proc/{pid}/task/{tid}/comm").read_text().strip() for tid in os.listdir(f"/proc/{pid}/task")}
    for stage in ("decode_0", "index-writer_0", "embed_0", "view-search_0"):
        assert stage in names, sorted(names)
