"""The write fence of an elected writer (core/local_index.py `may_write`, docs/scale-out.md
"Choosing the writer"), in process on a real Milvus Lite file: once `may_write` says no, queued
checks fail NOT_THE_WRITER, deletes are refused, and nothing more reaches the store.
tests/test_election.py shows the same through whole replicas on the Milvus server."""

from __future__ import annotations

import asyncio
import hashlib

import numpy as np
import pytest

from imgdedup.config import Settings
from imgdedup.core.index import PendingImage
from imgdedup.core.local_index import LocalIndex, NotTheWriter
from imgdedup.core.priority import Priority
from imgdedup.runtime import load_spec
from imgdedup.storage.milvus import DEFAULT_NAMESPACE

pytestmark = pytest.mark.lite_only  # a Lite file opened in this process


def _image(n: int, dim: int) -> PendingImage:
    vector = np.random.default_rng(n).standard_normal(dim).astype(np.float32)
    vector /= np.linalg.norm(vector)
    return PendingImage(image_id=f"img-{n}", vector=vector, add_to_index=True, threshold=None, top_k=5, pixels=100, sha256=hashlib.sha256(bytes([n])).hexdigest())


def test_once_the_lease_is_gone_nothing_more_is_written(tmp_path):
    async def run() -> None:
        spec = load_spec("sscd_disc_mixup")
        holds = [True]
        index = await LocalIndex.open(Settings(data_dir=tmp_path), spec, may_write=lambda: holds[0])
        try:
            first = await index.enqueue(_image(1, spec.output.dim), Priority.HIGH, None)
            assert first.stored
            holds[0] = False  # the lease ran out
            queued = [index.enqueue(_image(n, spec.output.dim), Priority.LOW, "stream") for n in range(2, 6)]
            for future in queued:
                with pytest.raises(NotTheWriter):
                    await future
            with pytest.raises(NotTheWriter):
                await index.delete(DEFAULT_NAMESPACE, ["img-1"])
            assert await index.counts(DEFAULT_NAMESPACE) == (1, 0)  # img-1 only, still there
            assert not index.dirty  # refused before writing: nothing half-written
        finally:
            await index.close()

    asyncio.run(run())
