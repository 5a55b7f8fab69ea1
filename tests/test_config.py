"""Settings come from flags, then DEDUP_* environment variables, then a TOML file."""

from __future__ import annotations

from pathlib import Path

import pytest

from imgdedup.config import Settings

pytestmark = pytest.mark.store_neutral  # settings, in this process: run in the Lite pass, not again on the Milvus server


def test_precedence_flags_over_env_over_file(tmp_path, monkeypatch):
    config = tmp_path / "dedup.toml"
    config.write_text('port = 6000\nmax_batch_size = 4\ndata_dir = "/srv/dedup"\nmodel = "sscd_disc_mixup"\n')
    monkeypatch.setenv("DEDUP_MAX_BATCH_SIZE", "16")
    monkeypatch.setenv("DEDUP_MILVUS_TOKEN", "secret-token")
    s = Settings.load(config, port=7000, host=None)
    assert s.port == 7000  # flag
    assert s.max_batch_size == 16  # env over file
    assert s.data_dir == Path("/srv/dedup")  # file over default
    assert s.host == "127.0.0.1"  # default (None flags are ignored)
    assert "secret-token" not in repr(s)  # secrets never printed
    assert s.resolved_milvus_uri() == "/srv/dedup/milvus.db"


def test_bad_settings_are_refused(tmp_path):
    with pytest.raises(Exception):
        Settings.load(None, threshold=1.5)
    with pytest.raises(FileNotFoundError):
        Settings.load(tmp_path / "missing.toml")
    bad = tmp_path / "bad.toml"
    bad.write_text("no_such_setting = 1\n")
    with pytest.raises(Exception, match="no_such_setting"):
        Settings.load(bad)


@pytest.mark.parametrize(
    ("settings", "says"),
    [
        ({"writer_election": "http://127.0.0.1:2379"}, "needs writer_listen"),
        ({"writer_election": "http://127.0.0.1:2379", "writer_listen": "127.0.0.1:7000", "writer_address": "10.0.0.2:7000"}, "exclude each other"),
        ({"writer_election": "127.0.0.1:2379", "writer_listen": "127.0.0.1:7000"}, "http://host:2379"),
        ({"writer_election": "http://127.0.0.1:2379", "writer_listen": "0.0.0.0:7000"}, "set writer_advertise"),
        ({"writer_advertise": "10.0.0.1:7000"}, "goes with writer_election"),
        ({"index_type": "HNSW"}, "needs a Milvus server"),
        ({"index_type": "IVF_SQ8", "milvus_uri": "/data/milvus.db"}, "needs a Milvus server"),
    ],
)
def test_settings_that_cannot_work_are_refused(settings, says):
    with pytest.raises(ValueError, match=says):
        Settings.load(None, **settings)


def test_writer_election_settings_that_can_work_are_taken():
    s = Settings.load(None, writer_election="http://etcd:2379", writer_listen="0.0.0.0:7000", writer_advertise="replica-a:7000")
    assert s.writer_advertise == "replica-a:7000"
    s = Settings.load(None, writer_election="http://etcd:2379", writer_listen="10.0.0.1:7000")
    assert s.writer_advertise is None and s.writer_lease_ttl_s == 10.0  # advertises writer_listen


def test_hnsw_is_taken_with_a_milvus_server():
    s = Settings.load(None, index_type="HNSW", milvus_uri="http://milvus:19530")
    assert (s.hnsw_m, s.hnsw_ef_construction, s.search_ef) == (32, 200, 128)
