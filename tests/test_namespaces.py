"""Namespaces (tenants): every read and write stays inside its namespace, through real servers
(Milvus Lite files, or the real Milvus server in the server pass) and the real model."""

from __future__ import annotations

import threading

import cv2
import grpc
import numpy as np
import pytest
from google.rpc import error_details_pb2
from grpc_status import rpc_status
from hypothesis import HealthCheck, given, settings, strategies as st

from conftest import MILVUS, ServerProcess, channel_for, check, encode, rgb
from imgdedup._proto.dedup.v1 import dedup_pb2 as pb
from imgdedup._proto.dedup.v1 import dedup_pb2_grpc as pb_grpc

PHOTOS = ["astronaut", "chelsea", "coffee", "rocket", "camera", "hubble_deep_field"]


def _edits(name: str) -> list[tuple[str, bytes]]:
    """A photo and three copies a duplicate check must find."""
    a = rgb(name)
    h, w = a.shape[:2]
    return [
        (f"{name}", encode(a)),
        (f"{name}-flip", encode(np.ascontiguousarray(a[:, ::-1]))),
        (f"{name}-small", encode(cv2.resize(a, (w // 2, h // 2), interpolation=cv2.INTER_AREA), quality=70)),
        (f"{name}-crop", encode(np.ascontiguousarray(a[h // 10: h - h // 10, w // 10: w - w // 10]))),
    ]


def _error(exc: grpc.RpcError) -> tuple[grpc.StatusCode, list]:
    status = rpc_status.from_call(exc)
    details = []
    for d in status.details if status else ():
        for kind in (error_details_pb2.BadRequest, error_details_pb2.ErrorInfo, error_details_pb2.PreconditionFailure):
            if d.Is(kind.DESCRIPTOR):
                msg = kind()
                d.Unpack(msg)
                details.append(msg)
    return exc.code(), details


def _clusters(stub, namespace: str, min_size: int = 1) -> set[frozenset[str]]:
    out, token = set(), ""
    while True:
        resp = stub.ListClusters(pb.ListClustersRequest(namespace=namespace, page_size=3, page_token=token, min_size=min_size))
        out |= {frozenset(m.image_id for m in c.members) for c in resp.clusters}
        token = resp.next_page_token
        if not token:
            return out


@pytest.fixture(scope="module")
def ns_server(tmp_path_factory):
    srv = ServerProcess(tmp_path_factory.mktemp("ns-data")).start()
    yield srv
    srv.stop()


@pytest.fixture(scope="module")
def ns_stub(ns_server):
    with channel_for(ns_server.target) as channel:
        yield pb_grpc.DedupServiceStub(channel)


def test_the_same_id_and_photo_in_two_namespaces_are_two_images(ns_stub):
    stub = ns_stub
    chelsea, astronaut = encode(rgb("chelsea")), encode(rgb("astronaut"))
    copy_of_chelsea = encode(cv2.resize(rgb("chelsea"), (225, 150)), quality=60)
    a = check(stub, chelsea, image_id="x", add=True, namespace="team-a")
    b = check(stub, astronaut, image_id="x", add=True, namespace="team-b")
    assert a.stored and b.stored and not a.is_duplicate and not b.is_duplicate
    # The same bytes again, in a third namespace: new there (no exact duplicate, no match).
    c = check(stub, chelsea, image_id="x", add=True, namespace="team-c")
    assert c.stored and not c.is_duplicate and not c.exact_duplicate
    # In team-a the copy finds its photo; in team-b (same id, another photo) it finds nothing.
    in_a = check(stub, copy_of_chelsea, namespace="team-a")
    assert [m.image_id for m in in_a.matches] == ["x"] and in_a.matches[0].cluster_id == a.cluster_id
    assert not check(stub, copy_of_chelsea, namespace="team-b").is_duplicate
    assert check(stub, copy_of_chelsea, namespace="team-c").matches[0].cluster_id == c.cluster_id
    assert not check(stub, copy_of_chelsea).is_duplicate  # the default namespace holds nothing
    # Exact bytes are exact duplicates only where they are stored.
    assert check(stub, chelsea, namespace="team-a").exact_duplicate
    assert not check(stub, chelsea, namespace="team-b").exact_duplicate
    # Counts, clusters and cluster ids are per namespace.
    for ns, cid in (("team-a", a.cluster_id), ("team-b", b.cluster_id), ("team-c", c.cluster_id)):
        info = stub.GetInfo(pb.GetInfoRequest(namespace=ns))
        assert (info.indexed_images, info.namespace) == (1, ns)
        assert stub.GetCluster(pb.GetClusterRequest(namespace=ns, cluster_id=cid)).members[0].image_id == "x"
    assert stub.GetInfo(pb.GetInfoRequest()).indexed_images == 0
    with pytest.raises(grpc.RpcError) as err:
        stub.GetCluster(pb.GetClusterRequest(namespace="team-b", cluster_id=a.cluster_id))
    assert err.value.code() == grpc.StatusCode.NOT_FOUND
    # A delete in one namespace leaves the other's image of the same id.
    gone = stub.DeleteImages(pb.DeleteImagesRequest(namespace="team-b", image_ids=["x"]))
    assert list(gone.deleted_ids) == ["x"]
    assert stub.GetInfo(pb.GetInfoRequest(namespace="team-a")).indexed_images == 1
    assert check(stub, copy_of_chelsea, namespace="team-a").is_duplicate
    assert list(stub.DeleteImages(pb.DeleteImagesRequest(namespace="team-b", image_ids=["x"])).not_found_ids) == ["x"]
    names = {n.name: n for n in stub.ListNamespaces(pb.ListNamespacesRequest()).namespaces}
    assert {"team-a", "team-b", "team-c"} <= set(names)
    assert names["team-a"].indexed_images == 1 and names["team-b"].indexed_images == 0


def test_bad_namespace_names_are_refused_with_the_field_named(ns_stub):
    image = encode(rgb("rocket"))
    for bad in ("Team", "a b", "x" * 65, "ümlaut", "a/b", "dot.name"):
        with pytest.raises(grpc.RpcError) as err:
            check(ns_stub, image, namespace=bad)
        code, details = _error(err.value)
        assert code == grpc.StatusCode.INVALID_ARGUMENT
        violations = [v for d in details if isinstance(d, error_details_pb2.BadRequest) for v in d.field_violations]
        assert violations and violations[0].field == "namespace" and violations[0].reason == "INVALID_NAMESPACE"
        with pytest.raises(grpc.RpcError) as err:
            ns_stub.ListClusters(pb.ListClustersRequest(namespace=bad))
        assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    # In a stream the bad item fails alone; the stream goes on.
    items = [
        pb.BulkCheckRequest(image_id="ok-1", image=image, namespace="stream-ns", add_to_index=True),
        pb.BulkCheckRequest(image_id="bad", image=image, namespace="Bad Name", add_to_index=True),
        pb.BulkCheckRequest(image_id="ok-2", image=encode(rgb("rocket")[:, ::-1]), namespace="stream-ns", add_to_index=True),
    ]
    out = list(ns_stub.BulkCheck(iter(items), timeout=120))
    assert [r.HasField("error") for r in out] == [False, True, False]
    assert out[1].error.code == grpc.StatusCode.INVALID_ARGUMENT.value[0]
    assert out[2].result.matches[0].image_id == "ok-1"  # saw its stream's earlier item
    assert ns_stub.GetInfo(pb.GetInfoRequest(namespace="stream-ns")).indexed_images == 2


def test_page_tokens_are_tied_to_their_namespace(ns_stub):
    for name in ("camera", "coffee", "hubble_deep_field"):
        for image_id, data in _edits(name)[:2]:
            check(ns_stub, data, image_id=image_id, add=True, namespace="paged")
    first = ns_stub.ListClusters(pb.ListClustersRequest(namespace="paged", page_size=1))
    assert first.total_size == 3 and first.next_page_token
    with pytest.raises(grpc.RpcError) as err:
        ns_stub.ListClusters(pb.ListClustersRequest(namespace="team-a", page_size=1, page_token=first.next_page_token))
    code, details = _error(err.value)
    assert code == grpc.StatusCode.INVALID_ARGUMENT and "another namespace" in err.value.details()
    assert len(_clusters(ns_stub, "paged", min_size=2)) == 3


def test_concurrent_streams_in_three_namespaces_cluster_as_each_alone(ns_stub):
    """Three streams at once, each its own namespace and order of the same photos and copies:
    each namespace's clusters are what one stream alone gives (the photo and its copies), and
    nothing of one namespace appears in another."""
    items = [it for name in PHOTOS for it in _edits(name)]
    orders = {f"conc-{n}": items[n:] + items[:n] for n in range(3)}
    results: dict[str, list] = {}

    def stream(ns: str) -> None:
        reqs = [pb.BulkCheckRequest(image_id=f"{ns}/{i}", image=d, add_to_index=True, namespace=ns) for i, d in orders[ns]]
        results[ns] = list(ns_stub.BulkCheck(iter(reqs), timeout=600))

    threads = [threading.Thread(target=stream, args=(ns,)) for ns in orders]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=600)
    alone = "conc-alone"
    stream_alone = [pb.BulkCheckRequest(image_id=f"{alone}/{i}", image=d, add_to_index=True, namespace=alone) for i, d in items]
    results[alone] = list(ns_stub.BulkCheck(iter(stream_alone), timeout=600))
    expected = {frozenset(f"{alone}/{i}" for i, _ in _edits(name)) for name in PHOTOS}
    assert _clusters(ns_stub, alone) == expected
    for ns, responses in results.items():
        assert len(responses) == len(items) and not any(r.HasField("error") for r in responses)
        for r in responses:  # every match is of the stream's own namespace
            assert all(m.image_id.startswith(ns + "/") for m in r.result.matches), (ns, r.image_id, list(r.result.matches))
        got = _clusters(ns_stub, ns)
        assert {frozenset(i.split("/", 1)[1] for i in c) for c in got} == {frozenset(i.split("/", 1)[1] for i in c) for c in expected}


@settings(max_examples=12, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])
@given(
    spaces=st.lists(st.from_regex(r"[a-z0-9_-]{1,64}", fullmatch=True), min_size=2, max_size=3, unique=True),
    ids=st.lists(st.text(st.characters(min_codepoint=32, max_codepoint=0x2FFF, exclude_categories=("Cs", "Cc")), min_size=1, max_size=40), min_size=1, max_size=2, unique=True),
)
def test_generated_names_and_ids_never_leak(ns_stub, spaces, ids):
    """The same ids, in namespaces of any valid name, hold different photos; every check and
    listing in one namespace sees only its own."""
    photo_of = {ns: PHOTOS[n % len(PHOTOS)] for n, ns in enumerate(spaces)}
    for ns in spaces:
        for image_id in ids:
            check(ns_stub, encode(rgb(photo_of[ns])), image_id=image_id, add=True, namespace=ns)
    for ns in spaces:
        copy = encode(np.ascontiguousarray(rgb(photo_of[ns])[:, ::-1]), quality=75)
        found = check(ns_stub, copy, namespace=ns, top_k=10)
        own = {c for c in _clusters(ns_stub, ns)}
        own_clusters = {m.cluster_id for m in found.matches}
        assert {m.image_id for m in found.matches} <= set(ids)
        assert len(own_clusters) == 1 and sum(len(c) for c in own) == len(ids) == len(found.matches)
        for other in spaces:  # another namespace's photo: no match here
            if other != ns and photo_of[other] != photo_of[ns]:
                assert not check(ns_stub, encode(rgb(photo_of[other])[:, ::-1]), namespace=ns).is_duplicate
    for ns in spaces:
        assert ns_stub.DeleteNamespace(pb.DeleteNamespaceRequest(namespace=ns, confirm=ns)).deleted_images == len(ids)


def test_delete_namespace_needs_its_name_confirmed_and_keeps_the_others(ns_stub):
    for ns in ("doomed", "kept"):
        for image_id, data in _edits("coffee")[:2]:
            check(ns_stub, data, image_id=image_id, add=True, namespace=ns)
    with pytest.raises(grpc.RpcError) as err:
        ns_stub.DeleteNamespace(pb.DeleteNamespaceRequest(namespace="doomed", confirm="kept"))
    code, details = _error(err.value)
    assert code == grpc.StatusCode.FAILED_PRECONDITION and any(isinstance(d, error_details_pb2.PreconditionFailure) for d in details)
    assert ns_stub.GetInfo(pb.GetInfoRequest(namespace="doomed")).indexed_images == 2
    assert ns_stub.DeleteNamespace(pb.DeleteNamespaceRequest(namespace="doomed", confirm="doomed")).deleted_images == 2
    assert ns_stub.GetInfo(pb.GetInfoRequest(namespace="doomed")).indexed_images == 0
    assert not check(ns_stub, _edits("coffee")[2][1], namespace="doomed").is_duplicate
    assert "doomed" not in {n.name for n in ns_stub.ListNamespaces(pb.ListNamespacesRequest()).namespaces}
    kept = ns_stub.GetInfo(pb.GetInfoRequest(namespace="kept"))
    assert (kept.indexed_images, kept.clusters) == (2, 1)
    assert check(ns_stub, _edits("coffee")[2][1], namespace="kept").is_duplicate


def test_namespaces_survive_a_restart(tmp_path):
    srv = ServerProcess(tmp_path / "data").start()
    try:
        with channel_for(srv.target) as ch:
            stub = pb_grpc.DedupServiceStub(ch)
            check(stub, encode(rgb("astronaut")), image_id="a", add=True, namespace="one")
            check(stub, encode(rgb("chelsea")), image_id="a", add=True, namespace="two")
    finally:
        srv.stop()
    srv = ServerProcess(tmp_path / "data").start()
    try:
        with channel_for(srv.target) as ch:
            stub = pb_grpc.DedupServiceStub(ch)
            assert {n.name for n in stub.ListNamespaces(pb.ListNamespacesRequest()).namespaces} == {"one", "two"}
            copy = encode(rgb("astronaut")[:, ::-1])
            assert [m.image_id for m in check(stub, copy, namespace="one").matches] == ["a"]
            assert not check(stub, copy, namespace="two").is_duplicate
            # The digest sets were filled per namespace: exact bytes only where they are.
            assert check(stub, encode(rgb("chelsea")), namespace="two").exact_duplicate
            assert not check(stub, encode(rgb("chelsea")), namespace="one").exact_duplicate
    finally:
        srv.stop()


# -- scoped tokens -------------------------------------------------------------------------
@pytest.fixture(scope="module")
def scoped_server(tmp_path_factory):
    d = tmp_path_factory.mktemp("scoped")
    tokens = d / "tokens"
    tokens.write_text("# market only\nmarket-tok-1  namespaces=market,market-staging\nall-tok-2\n")
    srv = ServerProcess(d / "data", "--auth-tokens-file", str(tokens)).start()
    yield srv
    srv.stop()


def test_a_scoped_token_opens_only_its_namespaces(scoped_server):
    with channel_for(scoped_server.target) as ch:
        stub = pb_grpc.DedupServiceStub(ch)
        market = (("authorization", "Bearer market-tok-1"),)
        ops = (("authorization", "Bearer all-tok-2"),)
        image = encode(rgb("coffee"))
        ok = stub.CheckDuplicate(pb.CheckDuplicateRequest(image_id="c", image=image, add_to_index=True, namespace="market"), metadata=market, timeout=60)
        assert ok.stored
        for call in (
            lambda: stub.CheckDuplicate(pb.CheckDuplicateRequest(image=image, namespace="chat"), metadata=market, timeout=60),
            lambda: stub.CheckDuplicate(pb.CheckDuplicateRequest(image=image), metadata=market, timeout=60),  # default
            lambda: stub.ListClusters(pb.ListClustersRequest(namespace="chat"), metadata=market, timeout=60),
            lambda: stub.GetInfo(pb.GetInfoRequest(namespace="chat"), metadata=market, timeout=60),
            lambda: stub.DeleteImages(pb.DeleteImagesRequest(namespace="chat", image_ids=["c"]), metadata=market, timeout=60),
            lambda: stub.DeleteNamespace(pb.DeleteNamespaceRequest(namespace="chat", confirm="chat"), metadata=market, timeout=60),
        ):
            with pytest.raises(grpc.RpcError) as err:
                call()
            assert err.value.code() == grpc.StatusCode.PERMISSION_DENIED and "market-tok-1" not in err.value.details()
        # A stream with that token: the item of another namespace fails alone.
        items = [
            pb.BulkCheckRequest(image_id="m1", image=image, namespace="market-staging", add_to_index=True),
            pb.BulkCheckRequest(image_id="m2", image=image, namespace="chat", add_to_index=True),
            pb.BulkCheckRequest(image_id="m3", image=image, namespace="market", add_to_index=False),
        ]
        out = list(stub.BulkCheck(iter(items), metadata=market, timeout=120))
        assert [r.HasField("error") for r in out] == [False, True, False]
        assert out[1].error.code == grpc.StatusCode.PERMISSION_DENIED.value[0]
        assert out[2].result.exact_duplicate
        # The all-namespace token (a line without namespaces=) opens every namespace.
        assert stub.CheckDuplicate(pb.CheckDuplicateRequest(image_id="c", image=image, add_to_index=True, namespace="chat"), metadata=ops, timeout=60).stored
        seen_by_market = {n.name for n in stub.ListNamespaces(pb.ListNamespacesRequest(), metadata=market, timeout=60).namespaces}
        seen_by_ops = {n.name for n in stub.ListNamespaces(pb.ListNamespacesRequest(), metadata=ops, timeout=60).namespaces}
        assert seen_by_market == {"market", "market-staging"} and seen_by_ops == {"market", "market-staging", "chat"}


# -- the first layout ------------------------------------------------------------------------
def _rewrite_as_first_layout(data_dir, prefix: str, uri: str) -> dict[str, int]:
    """Turn a server's collections back into the first layout (no namespace field, names
    without _v2_, the schema the first release created), keeping every row: what a server of
    that release left behind, with real embeddings of the real model."""
    from pymilvus import DataType, MilvusClient

    client = MilvusClient(uri=uri, timeout=120)
    counts = {}
    try:
        for kind, key in (("images", "image_key"), ("views", "view_key"), ("clusters", "cluster_id")):
            new, old = f"{prefix}_v2_{kind}", f"{prefix}_{kind}"
            info = client.describe_collection(new)
            client.load_collection(new)
            # Keys first: Milvus Lite 2.5.1 fails to return vectors of a collection that never held a row.
            keys = client.query(new, filter=f'{key} != ""', output_fields=[key], limit=16384, consistency_level="Strong")
            rows = client.query(new, filter=f'{key} != ""', output_fields=["*"], limit=16384, consistency_level="Strong") if keys else []
            schema = MilvusClient.create_schema(auto_id=False, description=info.get("description", ""))
            for f in info["fields"]:
                if f["name"] == "namespace":
                    continue
                params = dict(f.get("params") or {})
                extra = {"max_length": int(params["max_length"])} if "max_length" in params else {}
                extra |= {"dim": int(params["dim"])} if "dim" in params else {}
                schema.add_field(f["name"], f["type"], is_primary=f.get("is_primary", False), **extra)
            index = MilvusClient.prepare_index_params()
            vector = "placeholder" if kind == "clusters" else "embedding"
            if kind == "clusters":
                index.add_index(vector, index_type="FLAT", metric_type="L2")
            else:
                index.add_index(vector, index_type="IVF_FLAT", metric_type="COSINE", params={"nlist": 128})
            client.create_collection(old, schema=schema, index_params=index, consistency_level="Strong")
            if rows:
                client.insert(old, [{k: v for k, v in r.items() if k != "namespace"} for r in rows])
            client.flush(old)
            counts[kind] = len(rows)
        for kind in ("images", "views", "clusters", "namespaces"):
            client.drop_collection(f"{prefix}_v2_{kind}")
    finally:
        client.close()
        if not uri.startswith("http"):  # end this process's Milvus Lite on the file: the server opens it next
            from milvus_lite.server_manager import server_manager_instance

            server_manager_instance.release_server(uri)
    return counts


def test_collections_of_the_first_layout_become_the_default_namespace(tmp_path):
    from conftest import backend_env

    data = tmp_path / "data"
    env = backend_env(data)
    prefix = env.get("DEDUP_COLLECTION_PREFIX", "dedup")
    uri = env.get("DEDUP_MILVUS_URI") or str((data / "milvus.db").resolve())
    srv = ServerProcess(data).start()
    try:
        with channel_for(srv.target) as ch:
            stub = pb_grpc.DedupServiceStub(ch)
            for name in ("astronaut", "coffee"):
                for image_id, d in _edits(name)[:2]:
                    check(stub, d, image_id=image_id, add=True)
            before = _clusters(stub, "")
    finally:
        srv.stop()
    assert len(before) == 2
    counts = _rewrite_as_first_layout(data, prefix, uri)
    assert counts["images"] == 4 and counts["clusters"] == 2
    srv = ServerProcess(data).start()
    try:
        assert any("copied the first layout" in line for line in srv.output)
        with channel_for(srv.target) as ch:
            stub = pb_grpc.DedupServiceStub(ch)
            assert stub.GetInfo(pb.GetInfoRequest()).indexed_images == 4
            assert _clusters(stub, "") == before
            found = check(stub, _edits("astronaut")[2][1])
            assert {m.image_id for m in found.matches} == {"astronaut", "astronaut-flip"}
            assert check(stub, _edits("coffee")[0][1]).exact_duplicate
            assert not check(stub, _edits("coffee")[2][1], namespace="other").is_duplicate
    finally:
        srv.stop()
