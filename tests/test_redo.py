"""The store keeps every write Milvus acknowledged until a flush covers it, and makes them again,
in order, after a reconnect (storage/redo.py). Against a real Milvus (a Lite file of its own, or
the session's server); the loss is made for real, by deleting the rows with the store's own
pymilvus client behind its redo log."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest

from imgdedup.storage.milvus import ClusterRow, ImageRow, StorageError
from imgdedup.storage.redo import RedoLog

NS = "redo-ns"


@pytest.fixture()
def store(milvus_store):
    return milvus_store


def _rows(store, n: int) -> list[ImageRow]:
    rng = np.random.default_rng(3)
    vecs = rng.normal(size=(n, store.dim)).astype(np.float32)
    return [ImageRow(f"img-{i}", f"c-{i}", 100 + i, 1000 + i, f"{i:064x}", vecs[i] / np.linalg.norm(vecs[i]), NS) for i in range(n)]


def test_writes_are_made_again_in_order_after_milvus_lost_them(store):
    rows = _rows(store, 4)
    store.insert_images(rows)
    store.upsert_clusters([ClusterRow(r.cluster_id, 1, r.image_id, r.pixels, r.inserted_at_ms, NS) for r in rows])
    store.rewrite_images([dataclasses.replace(rows[1], cluster_id="c-0")])
    store.delete_images(NS, ["img-3"])
    # Milvus loses them all (as a 2.3.5 server did after kill -9), made here with the store's own
    # client, around its log.
    for name, key in ((store.images, "image_key"), (store.clusters, "cluster_id")):
        store._client.delete(name, filter=f'{key} != ""')
        assert store._client.query(name, filter=f'{key} != ""', output_fields=[key], consistency_level="Strong") == []

    assert store.reconnect() == 5  # the namespace's registration, the insert, the clusters, the rewrite, the delete
    found = store.get_images(NS, [r.image_id for r in rows], with_vectors=True)
    assert sorted(found) == ["img-0", "img-1", "img-2"]  # the delete, made again after the insert
    assert found["img-1"].cluster_id == "c-0"  # the later rewrite wins
    assert np.allclose(found["img-2"].vector, rows[2].vector, atol=1e-6)
    assert sorted(store.get_clusters(NS, [r.cluster_id for r in rows])) == ["c-0", "c-1", "c-2", "c-3"]
    # A flush covers them all: nothing is kept, nothing made again.
    assert store.unflushed_rows > 0
    store.flush()
    assert store.unflushed_rows == 0
    assert store.reconnect() == 0
    assert sorted(store.get_images(NS, [r.image_id for r in rows])) == ["img-0", "img-1", "img-2"]


def test_a_reconnect_that_cannot_replay_leaves_the_store_unconnected_until_one_can(store):
    """A store is never connected without having made its writes again: when the replay stops
    (here: the writer guard says this process no longer writes), the store is left unconnected,
    and the next reconnect makes them all again."""
    store.insert_images(_rows(store, 2))
    store._client.delete(store.images, filter='image_key != ""')

    class NotTheWriter(Exception):
        pass

    def refuse() -> None:
        raise NotTheWriter()

    with pytest.raises(NotTheWriter):
        store.reconnect(refuse)
    with pytest.raises(StorageError, match="not connected"):
        store.ping()
    assert store.reconnect() == 2  # the registration and the insert
    assert sorted(store.get_images(NS, ["img-0", "img-1"])) == ["img-0", "img-1"]


def test_a_flush_that_saw_milvus_fail_lets_nothing_go():
    """Milvus may have lost acknowledged writes before a flush that then completed on it (a
    restart between two of the flush's calls): after trouble, a flush forgets nothing."""
    log = RedoLog()
    log.record("insert", "a", [{"k": 1}])
    mark = log.mark()
    log.trouble()
    assert log.forget_until(mark) == 0 and log.rows == 1
    assert log.forget_until(log.mark()) == 1 and log.rows == 0


def test_the_log_keeps_later_writes_past_a_flush_and_lets_the_oldest_go_past_its_size():
    log = RedoLog(max_rows=5)
    log.record("insert", "a", [{"k": 1}, {"k": 2}])
    mark = log.mark()
    log.record("delete", "a", "k == 1")  # made while the flush ran: kept
    assert log.forget_until(mark) == 1
    assert [(w.method, w.kwargs) for w in log.writes()] == [("delete", {"filter": "k == 1"})]
    log.record("upsert", "a", [{"k": n} for n in range(5)])
    assert [w.method for w in log.writes()] == ["upsert"] and log.rows == 5 and log.dropped == 1


def test_a_milvus_that_went_away_and_came_back_is_reconnected_to_and_its_lost_writes_made_again(store):
    """A Milvus that restarts between two calls is noticed although pymilvus retries the failed
    call until it succeeds: every failed attempt counts (MilvusStore._watch_connection), ping()
    fails until a reconnect has made the unflushed writes again, and a flush meanwhile lets none
    go. Here the store's own Milvus Lite process is killed (a process this test's store started,
    by its PID); the reconnect starts it again on the same file."""
    if not store.is_lite:
        pytest.skip("kills the store's own Milvus Lite process (the Milvus server pass kills its server in test_milvus_server.py)")
    from milvus_lite.server_manager import server_manager_instance

    store.timeout = store.setup_timeout = 2.0  # how long pymilvus retries a call to the dead process
    rows = _rows(store, 3)
    store.insert_images(rows)
    store.ping()
    server_manager_instance._servers[str(store.uri)]._p.kill()  # noqa: SLF001 (the process we started)
    with pytest.raises(StorageError):
        store.ping()  # the call fails: trouble counted
    with pytest.raises(StorageError):
        store.flush()
    with pytest.raises(StorageError, match="reconnecting"):
        store.ping()  # and stays failed, without asking Milvus, until a reconnect made the writes again
    assert store.unflushed_rows == 4  # the registration and three rows
    assert store.reconnect() == 2  # the registration and the insert
    store.ping()
    assert sorted(store.get_images(NS, [r.image_id for r in rows])) == ["img-0", "img-1", "img-2"]
