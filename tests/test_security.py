"""TLS, mutual TLS and bearer tokens against real server processes on 127.0.0.1.

Three servers for the whole module: mutual TLS; TLS with tokens from a file; plaintext with tokens
from DEDUP_AUTH_TOKENS (and DEBUG logging, to show the log never holds a token). The test PKI
(a CA, a server certificate for 127.0.0.1 / localhost, a client certificate, and a client
certificate from another CA) is made here with `cryptography`.
"""

from __future__ import annotations

import datetime
import ipaddress
import json
import secrets
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

import grpc
import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection_pb2, reflection_pb2_grpc

from conftest import ServerProcess, channel_for, encode, rgb
from imgdedup import cli
from imgdedup._proto.dedup.v1 import dedup_pb2 as pb
from imgdedup._proto.dedup.v1 import dedup_pb2_grpc as pb_grpc
from imgdedup.client import DedupClient
from imgdedup.config import Settings
from imgdedup.transport.auth import BearerTokenInterceptor, TokenConfigError, load_tokens
from imgdedup.transport.server import server_credentials

pytestmark = pytest.mark.store_neutral  # TLS, mTLS and tokens of our own transport: run in the Lite pass, not again on the Milvus server


FAST = 10.0  # seconds: a refused handshake or call fails at once; this only bounds a hang


# -- test PKI -------------------------------------------------------------------------------
def _name(cn: str) -> x509.Name:
    return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, cn)])


def _cert(subject: str, key, issuer_name: x509.Name, issuer_key, *, ca: bool = False, san=None, eku=None) -> x509.Certificate:
    now = datetime.datetime.now(datetime.timezone.utc)
    b = (
        x509.CertificateBuilder()
        .subject_name(_name(subject))
        .issuer_name(issuer_name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(hours=1))
        .not_valid_after(now + datetime.timedelta(days=2))
        .add_extension(x509.BasicConstraints(ca=ca, path_length=None), critical=True)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
    )
    if ca:
        b = b.add_extension(
            x509.KeyUsage(digital_signature=True, key_cert_sign=True, crl_sign=True, content_commitment=False, key_encipherment=False,
                          data_encipherment=False, key_agreement=False, encipher_only=False, decipher_only=False),
            critical=True,
        )
    else:
        b = b.add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(issuer_key.public_key()), critical=False)
    if san:
        b = b.add_extension(x509.SubjectAlternativeName(san), critical=False)
    if eku:
        b = b.add_extension(x509.ExtendedKeyUsage(eku), critical=False)
    return b.sign(issuer_key, hashes.SHA256())


def _write(d: Path, name: str, cert: x509.Certificate, key) -> tuple[Path, Path]:
    cert_path, key_path = d / f"{name}.crt", d / f"{name}.key"
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()))
    return cert_path, key_path


@pytest.fixture(scope="module")
def pki(tmp_path_factory) -> SimpleNamespace:
    d = tmp_path_factory.mktemp("pki")
    new_key = lambda: ec.generate_private_key(ec.SECP256R1())  # noqa: E731

    ca_key, other_ca_key = new_key(), new_key()
    ca = _cert("imgdedup test CA", ca_key, _name("imgdedup test CA"), ca_key, ca=True)
    other_ca = _cert("some other CA", other_ca_key, _name("some other CA"), other_ca_key, ca=True)
    server_key, client_key, stranger_key = new_key(), new_key(), new_key()
    server = _cert(
        "dedup server", server_key, ca.subject, ca_key,
        san=[x509.IPAddress(ipaddress.ip_address("127.0.0.1")), x509.DNSName("localhost")],
        eku=[ExtendedKeyUsageOID.SERVER_AUTH],
    )
    client = _cert("good client", client_key, ca.subject, ca_key, eku=[ExtendedKeyUsageOID.CLIENT_AUTH])
    stranger = _cert("stranger", stranger_key, other_ca.subject, other_ca_key, eku=[ExtendedKeyUsageOID.CLIENT_AUTH])

    ns = SimpleNamespace()
    ns.ca, _ = _write(d, "ca", ca, ca_key)
    ns.other_ca, _ = _write(d, "other-ca", other_ca, other_ca_key)
    ns.server_cert, ns.server_key = _write(d, "server", server, server_key)
    ns.client_cert, ns.client_key = _write(d, "client", client, client_key)
    ns.stranger_cert, ns.stranger_key = _write(d, "stranger", stranger, stranger_key)
    return ns


def _tls_flags(pki) -> list[str]:
    return ["--tls-cert", str(pki.server_cert), "--tls-key", str(pki.server_key)]


def _code(call) -> grpc.StatusCode:
    with pytest.raises(grpc.RpcError) as info:
        call()
    return info.value.code()


def _rpc_error(call) -> grpc.RpcError:
    with pytest.raises(grpc.RpcError) as info:
        call()
    return info.value


# -- settings, token parsing, credentials (no server) ------------------------------------------
def test_tokens_from_file_and_env(tmp_path):
    f = tmp_path / "tokens"
    f.write_text("# service tokens\n\n  alpha-1  \n# revoked: old-token\nbeta_2\n")
    assert [t for t, _ in load_tokens(Settings(auth_tokens_file=f))] == ["alpha-1", "beta_2"]
    assert [t for t, _ in load_tokens(Settings(auth_tokens=" one, two ,,"))] == ["one", "two"]
    assert load_tokens(Settings(auth_tokens_file=f, auth_tokens="three")) == [("alpha-1", None), ("beta_2", None), ("three", None)]
    assert load_tokens(Settings()) == []


def test_token_config_fails_closed_without_echoing(tmp_path):
    empty = tmp_path / "empty"
    empty.write_text("# nothing here\n\n")
    with pytest.raises(TokenConfigError, match="holds no token"):
        load_tokens(Settings(auth_tokens_file=empty))
    with pytest.raises(TokenConfigError, match="holds no token"):
        load_tokens(Settings(auth_tokens=" , "))
    with pytest.raises(TokenConfigError, match="cannot read"):
        load_tokens(Settings(auth_tokens_file=tmp_path / "missing"))
    bad = tmp_path / "bad"
    bad.write_text("good-token\nhas a-secret-part\n")
    with pytest.raises(TokenConfigError, match="line 2") as info:
        load_tokens(Settings(auth_tokens_file=bad))
    assert "a-secret-part" not in str(info.value)


def test_secrets_stay_out_of_repr(monkeypatch):
    secret = "s3cret-" + secrets.token_hex(8)
    monkeypatch.setenv("DEDUP_AUTH_TOKENS", f"{secret},other-{secret}")
    s = Settings.load()
    assert s.auth_tokens is not None and s.auth_tokens.get_secret_value() == f"{secret},other-{secret}"
    for text in (repr(s), str(s), s.model_dump_json()):
        assert secret not in text
    interceptor = BearerTokenInterceptor(load_tokens(s))
    assert secret not in repr(interceptor) and secret not in repr(vars(interceptor))
    client = DedupClient("127.0.0.1:1", token=secret)
    try:
        assert secret not in repr(client) and secret not in repr(vars(client))
    finally:
        client.close()


def test_tls_settings_must_be_complete(pki):
    assert server_credentials(Settings()) is None
    assert server_credentials(Settings(tls_cert_file=pki.server_cert, tls_key_file=pki.server_key)) is not None
    with pytest.raises(SystemExit, match="both"):
        server_credentials(Settings(tls_cert_file=pki.server_cert))
    with pytest.raises(SystemExit, match="tls_client_ca_file needs"):
        server_credentials(Settings(tls_client_ca_file=pki.ca))
    with pytest.raises(SystemExit, match="cannot read"):
        server_credentials(Settings(tls_cert_file=pki.server_cert, tls_key_file=pki.server_key.with_name("nope.key")))
    with pytest.raises(SystemExit, match="not a PEM file with a PRIVATE KEY"):
        server_credentials(Settings(tls_cert_file=pki.server_cert, tls_key_file=pki.server_cert))
    with pytest.raises(ValueError, match="both"):
        DedupClient("127.0.0.1:1", tls_cert_file=pki.client_cert)


def test_serve_refuses_a_key_that_does_not_match_the_certificate(pki, tmp_path):
    cmd = [sys.executable, "-m", "imgdedup", "serve", "--port", "0", "--data-dir", str(tmp_path),
           "--tls-cert", str(pki.server_cert), "--tls-key", str(pki.client_key)]
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=120)
    assert done.returncode != 0
    assert "matching pair" in done.stderr and "dedup server ready" not in done.stdout


# -- mutual TLS -------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def mtls_server(tmp_path_factory, pki):
    srv = ServerProcess(tmp_path_factory.mktemp("mtls-data"), *_tls_flags(pki), "--tls-client-ca", str(pki.ca)).start()
    yield srv
    srv.stop()


def test_mtls_accepts_a_client_certificate_from_the_ca(mtls_server, pki):
    with DedupClient(mtls_server.target, tls_ca_file=pki.ca, tls_cert_file=pki.client_cert, tls_key_file=pki.client_key, timeout=FAST) as c:
        c.wait_ready(timeout=FAST)
        assert c.info().embedding_dim > 0
        assert c.check(encode(rgb("astronaut")), image_id="a", add_to_index=True).stored


def test_mtls_rejects_a_client_without_a_certificate(mtls_server, pki):
    with DedupClient(mtls_server.target, tls_ca_file=pki.ca, timeout=FAST) as c:
        assert _code(c.info) == grpc.StatusCode.UNAVAILABLE


def test_mtls_rejects_a_certificate_from_another_ca(mtls_server, pki):
    with DedupClient(mtls_server.target, tls_ca_file=pki.ca, tls_cert_file=pki.stranger_cert, tls_key_file=pki.stranger_key, timeout=FAST) as c:
        assert _code(c.info) == grpc.StatusCode.UNAVAILABLE


def test_the_health_command_works_over_mutual_tls(mtls_server, pki, capsys):
    # What the Docker HEALTHCHECK runs: `dedup health` with the client TLS flags (no token).
    flags = ["--server", mtls_server.target, "--tls-ca", str(pki.ca)]
    assert cli.main(["health", *flags, "--tls-cert", str(pki.client_cert), "--tls-key", str(pki.client_key)]) == 0
    assert capsys.readouterr().out.strip() == "SERVING"
    assert cli.main(["health", *flags]) == 1  # no client certificate: refused, exit 1
    assert "UNAVAILABLE" in capsys.readouterr().err


def test_mtls_rejects_plaintext_even_for_health(mtls_server):
    with channel_for(mtls_server.target) as ch:
        health = health_pb2_grpc.HealthStub(ch)
        assert _code(lambda: health.Check(health_pb2.HealthCheckRequest(), timeout=FAST)) == grpc.StatusCode.UNAVAILABLE


# -- TLS + tokens from a file -------------------------------------------------------------------
@pytest.fixture(scope="module")
def file_tokens():
    return SimpleNamespace(a="file-a-" + secrets.token_urlsafe(18), b="file-b-" + secrets.token_urlsafe(18), revoked="revoked-" + secrets.token_urlsafe(18))


@pytest.fixture(scope="module")
def tls_server(tmp_path_factory, pki, file_tokens):
    d = tmp_path_factory.mktemp("tls-data")
    tokens = d / "tokens.txt"
    tokens.write_text(f"# clients of the dedup service\n{file_tokens.a}\n\n# revoked: {file_tokens.revoked}\n  {file_tokens.b}  \n")
    srv = ServerProcess(d, *_tls_flags(pki), "--auth-tokens-file", str(tokens)).start()
    yield srv
    srv.stop()


def test_tls_works_and_plaintext_fails(tls_server, pki, file_tokens):
    with DedupClient(tls_server.target, tls_ca_file=pki.ca, token=file_tokens.a, timeout=FAST) as c:
        c.wait_ready(timeout=FAST)
        assert c.info().embedding_dim > 0
    with DedupClient(tls_server.target, token=file_tokens.a, timeout=FAST) as c:
        assert _code(c.info) == grpc.StatusCode.UNAVAILABLE


def test_tls_verifies_the_server(tls_server, pki, file_tokens):
    # The name checked can be overridden; a name the certificate lacks, or another CA, fails.
    with DedupClient(tls_server.target, tls_ca_file=pki.ca, tls_server_name="localhost", token=file_tokens.a, timeout=FAST) as c:
        assert c.info().embedding_dim > 0
    with DedupClient(tls_server.target, tls_ca_file=pki.ca, tls_server_name="dedup.example.com", token=file_tokens.a, timeout=FAST) as c:
        assert _code(c.info) == grpc.StatusCode.UNAVAILABLE
    with DedupClient(tls_server.target, tls_ca_file=pki.other_ca, token=file_tokens.a, timeout=FAST) as c:
        assert _code(c.info) == grpc.StatusCode.UNAVAILABLE


def test_file_tokens(tls_server, pki, file_tokens):
    for token in (None, "wrong-token", file_tokens.revoked, file_tokens.a[:-1], file_tokens.a + "x"):
        with DedupClient(tls_server.target, tls_ca_file=pki.ca, token=token, timeout=FAST) as c:
            err = _rpc_error(c.info)
            assert err.code() == grpc.StatusCode.UNAUTHENTICATED, token
            assert ("missing bearer token" if token is None else "invalid bearer token") in err.details()
    for token in (file_tokens.a, file_tokens.b):
        with DedupClient(tls_server.target, tls_ca_file=pki.ca, token=token, timeout=FAST) as c:
            assert c.check(encode(rgb("coffee")), image_id="coffee", add_to_index=True).stored
            assert list(c.list_clusters(min_size=1))


def test_health_needs_no_token_over_tls(tls_server, pki):
    with DedupClient(tls_server.target, tls_ca_file=pki.ca, timeout=FAST) as c:
        c.wait_ready(timeout=FAST)  # the health service, on the same channel, no token
        assert _code(c.info) == grpc.StatusCode.UNAUTHENTICATED


def test_cli_tls_and_token_flags(tls_server, pki, file_tokens, monkeypatch, capsys):
    base = ["info", "--server", tls_server.target, "--tls-ca", str(pki.ca)]
    monkeypatch.delenv("DEDUP_TOKEN", raising=False)
    assert cli.main(base) == 1
    assert "UNAUTHENTICATED" in capsys.readouterr().err
    assert cli.main([*base, "--token", file_tokens.b]) == 0
    assert json.loads(capsys.readouterr().out)["embedding_dim"] > 0
    monkeypatch.setenv("DEDUP_TOKEN", file_tokens.a)
    assert cli.main(["clusters", "--json", "--server", tls_server.target, "--tls-ca", str(pki.ca)]) == 0
    assert isinstance(json.loads(capsys.readouterr().out), list)


# -- plaintext + tokens from DEDUP_AUTH_TOKENS ----------------------------------------------------
@pytest.fixture(scope="module")
def env_tokens():
    return SimpleNamespace(a="env-a-" + secrets.token_urlsafe(18), b="env-b-" + secrets.token_urlsafe(18))


@pytest.fixture(scope="module")
def env_server(tmp_path_factory, env_tokens):
    env = {"DEDUP_AUTH_TOKENS": f"{env_tokens.a}, {env_tokens.b}"}
    srv = ServerProcess(tmp_path_factory.mktemp("env-data"), "--log-level", "DEBUG", env=env).start()
    yield srv
    srv.stop()


@pytest.fixture(scope="module")
def env_channel(env_server):
    with channel_for(env_server.target) as ch:
        yield ch


def test_env_tokens_guard_every_dedup_method(env_channel, env_tokens):
    stub = pb_grpc.DedupServiceStub(env_channel)
    image = encode(rgb("chelsea"))
    calls = {
        "CheckDuplicate": lambda md: stub.CheckDuplicate(pb.CheckDuplicateRequest(image=image), metadata=md, timeout=FAST),
        "BulkCheck": lambda md: list(stub.BulkCheck(iter([pb.BulkCheckRequest(image=image)]), metadata=md, timeout=FAST)),
        "ListClusters": lambda md: stub.ListClusters(pb.ListClustersRequest(), metadata=md, timeout=FAST),
        "GetCluster": lambda md: stub.GetCluster(pb.GetClusterRequest(cluster_id="nope"), metadata=md, timeout=FAST),
        "DeleteImages": lambda md: stub.DeleteImages(pb.DeleteImagesRequest(image_ids=["nope"]), metadata=md, timeout=FAST),
        "GetInfo": lambda md: stub.GetInfo(pb.GetInfoRequest(), metadata=md, timeout=FAST),
        "ListNamespaces": lambda md: stub.ListNamespaces(pb.ListNamespacesRequest(), metadata=md, timeout=FAST),
        "DeleteNamespace": lambda md: stub.DeleteNamespace(pb.DeleteNamespaceRequest(namespace="nope", confirm="no"), metadata=md, timeout=FAST),
    }
    assert set(calls) == set(pb.DESCRIPTOR.services_by_name["DedupService"].methods_by_name)
    wrong = "wrong-" + secrets.token_urlsafe(12)
    refused = {
        None: "missing bearer token",
        (("authorization", f"Bearer {wrong}"),): "invalid bearer token",
        (("authorization", f"Basic {env_tokens.a}"),): "malformed authorization",
        (("authorization", env_tokens.a),): "malformed authorization",
        (("x-api-key", env_tokens.a),): "missing bearer token",
    }
    for name, call in calls.items():
        for md, message in refused.items():
            err = _rpc_error(lambda: call(md))
            assert err.code() == grpc.StatusCode.UNAUTHENTICATED, (name, message)
            assert message in err.details() and wrong not in err.details() and env_tokens.a not in err.details()
    for token in (env_tokens.a, env_tokens.b):
        md = (("authorization", f"Bearer {token}"),)
        assert calls["CheckDuplicate"](md).width > 0
        assert not calls["BulkCheck"](md)[0].HasField("error")
        assert calls["GetInfo"](md).embedding_dim > 0
        assert _code(lambda: calls["GetCluster"](md)) == grpc.StatusCode.NOT_FOUND  # past the guard
        assert _code(lambda: calls["DeleteNamespace"](md)) == grpc.StatusCode.FAILED_PRECONDITION  # past it too
        assert calls["ListNamespaces"](md) is not None
        # The scheme is case-insensitive (RFC 6750 uses "Bearer"; some clients send "bearer").
        assert calls["ListClusters"]((("authorization", f"bearer {token}"),)).total_size >= 0


def test_env_token_through_the_client(env_server, env_tokens):
    with DedupClient(env_server.target, token=env_tokens.b, timeout=FAST) as c:
        assert c.check(encode(rgb("rocket")), image_id="rocket", add_to_index=True).stored
        responses = list(c.bulk_check([pb.BulkCheckRequest(image_id="rocket-2", image=encode(rgb("rocket"), quality=70), add_to_index=True)], timeout=FAST))
        assert responses[0].result.is_duplicate


def test_health_and_reflection_need_no_token(env_channel):
    health = health_pb2_grpc.HealthStub(env_channel)
    for service in ("", "dedup.v1.DedupService"):
        assert health.Check(health_pb2.HealthCheckRequest(service=service), timeout=FAST).status == health_pb2.HealthCheckResponse.SERVING
    refl = reflection_pb2_grpc.ServerReflectionStub(env_channel)
    (resp,) = list(refl.ServerReflectionInfo(iter([reflection_pb2.ServerReflectionRequest(list_services="")]), timeout=FAST))
    assert "dedup.v1.DedupService" in {s.name for s in resp.list_services_response.service}


# -- logs ---------------------------------------------------------------------------------------
def test_logs_never_hold_a_token(env_server, tls_server, pki, env_tokens, file_tokens):
    """Last in the module: stops both token servers (after one more right and wrong call each)
    so that their whole log, shutdown included, is checked."""
    wrong = "wrong-" + secrets.token_urlsafe(12)
    for srv, tls, good in ((env_server, {}, env_tokens.a), (tls_server, {"tls_ca_file": pki.ca}, file_tokens.a)):
        for token in (good, wrong):
            with DedupClient(srv.target, token=token, timeout=FAST, **tls) as c:
                try:
                    c.info()
                except grpc.RpcError as exc:
                    assert exc.code() == grpc.StatusCode.UNAUTHENTICATED and token == wrong
        assert srv.stop() == 0
    log = "".join(env_server.output) + "".join(tls_server.output)
    assert "rejected /dedup.v1.DedupService/GetInfo" in log  # the rejections are logged, without tokens
    assert "bearer tokens: required" in log and "transport: TLS" in log
    for secret in (wrong, *vars(env_tokens).values(), *vars(file_tokens).values()):
        assert secret not in log
