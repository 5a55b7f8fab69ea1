"""The `dedup` command: serve, index, check, clusters, info."""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import os
import sys
from pathlib import Path

import grpc

LOG_FORMAT = "%(asctime)s %(levelname)s %(process)d %(name)s: %(message)s"
IMAGE_SUFFIXES = {".jpg", ".jpeg", ".png", ".webp", ".bmp", ".tif", ".tiff", ".gif", ".avif"}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="dedup", description="Image de-duplication server and client.")
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("serve", help="run the gRPC server")
    p.add_argument("--config", help="TOML config file (also DEDUP_CONFIG)")
    p.add_argument("--host")
    p.add_argument("--port", type=int)
    p.add_argument("--data-dir", type=Path)
    p.add_argument("--milvus-uri", help="Milvus server URI; default: Milvus Lite in the data dir")
    p.add_argument("--milvus-token")
    p.add_argument("--model", help="built-in model name or spec .toml path")
    p.add_argument("--threshold", type=float)
    p.add_argument("--embedder", choices=["onnxruntime", "triton", "torch"], help="where embeddings are computed: onnxruntime (default) or torch in process, or on Triton")
    p.add_argument("--triton-url", help="Triton's gRPC endpoint host:port (with --embedder triton)")
    p.add_argument("--triton-model", help="the model's name on Triton (default: the model spec's name)")
    p.add_argument("--max-batch-size", type=int)
    p.add_argument("--max-queue-delay-ms", type=float)
    p.add_argument("--log-level")
    p.add_argument("--metrics-port", type=int, help="serve Prometheus /metrics on this port (0: off)")
    p.add_argument("--tls-cert", type=Path, help="server certificate chain (PEM); with --tls-key turns TLS on")
    p.add_argument("--tls-key", type=Path, help="server private key (PEM)")
    p.add_argument("--tls-client-ca", type=Path, help="CA (PEM) for client certificates: requires mutual TLS")
    p.add_argument("--auth-tokens-file", type=Path, help="bearer tokens, one per line; DedupService calls then need one")
    p.add_argument("--workers", type=int, help="front processes sharing the port; the parent is the index writer (0: one per core; default 1)")
    p.add_argument("--writer", dest="writer_address", help="be a front of the index writer at this address (another replica's --writer-listen)")
    p.add_argument("--writer-listen", help="also serve this server's index writer at this address (host:port or unix:PATH) to other replicas")

    for name, help_ in (("index", "add every image under DIR through BulkCheck"), ("check", "check images without storing them"), ("clusters", "list clusters of duplicates"), ("info", "describe the server"), ("health", "exit 0 when the server is SERVING (for container health checks)")):
        c = sub.add_parser(name, help=help_)
        c.add_argument("--server", default="127.0.0.1:50051", help="server address (default 127.0.0.1:50051)")
        c.add_argument("--tls-ca", type=Path, help="CA (PEM) of the server's certificate; turns TLS on")
        c.add_argument("--tls-cert", type=Path, help="client certificate (PEM) for mutual TLS; turns TLS on")
        c.add_argument("--tls-key", type=Path, help="client private key (PEM)")
        c.add_argument("--tls-server-name", help="name to verify in the server's certificate")
        c.add_argument("--token", default=os.environ.get("DEDUP_TOKEN"), help="bearer token (default: env DEDUP_TOKEN, which keeps it out of ps)")
        if name == "index":
            c.add_argument("dir", type=Path)
            c.add_argument("--threshold", type=float)
        if name == "check":
            c.add_argument("files", nargs="+", type=Path)
            c.add_argument("--threshold", type=float)
            c.add_argument("--top-k", type=int)
            c.add_argument("--json", action="store_true")
        if name == "health":
            c.add_argument("--timeout", type=float, default=2.0, help="seconds to wait for the answer (default 2)")
        if name == "clusters":
            c.add_argument("--min-size", type=int, default=2)
            c.add_argument("--json", action="store_true")

    sub.add_parser("calibrate", help="choose a threshold from a labelled folder (dedup calibrate -h)", add_help=False)

    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] == ["calibrate"]:  # its own parser: runs offline, needs no server
        from imgdedup.calibrate import main as calibrate

        return calibrate(argv[1:])
    args = parser.parse_args(argv)
    try:
        return {"serve": _serve, "index": _index, "check": _check, "clusters": _clusters, "info": _info, "health": _health}[args.command](args)
    except grpc.RpcError as exc:
        print(f"error: {exc.code().name}: {exc.details()}", file=sys.stderr)
        return 1


def _serve(args: argparse.Namespace) -> int:
    from pydantic import ValidationError

    from imgdedup.config import Settings
    from imgdedup.transport.server import serve

    try:
        settings = _settings(args, Settings)
    except ValidationError as exc:
        problems = "; ".join(f"{'.'.join(map(str, e['loc'])) or 'settings'}: {e['msg'].removeprefix('Value error, ')}" for e in exc.errors())
        print(f"error: invalid settings: {problems}", file=sys.stderr)
        return 2
    logging.basicConfig(level=settings.log_level.upper(), format=LOG_FORMAT)
    if settings.workers != 1:
        from imgdedup.transport.workers import supervise

        asyncio.run(supervise(settings))
    else:
        asyncio.run(serve(settings))
    return 0


def _settings(args: argparse.Namespace, Settings):
    return Settings.load(
        args.config,
        host=args.host,
        port=args.port,
        data_dir=args.data_dir,
        milvus_uri=args.milvus_uri,
        milvus_token=args.milvus_token,
        model=args.model,
        threshold=args.threshold,
        embedder=args.embedder,
        triton_url=args.triton_url,
        triton_model=args.triton_model,
        max_batch_size=args.max_batch_size,
        max_queue_delay_ms=args.max_queue_delay_ms,
        log_level=args.log_level,
        metrics_port=args.metrics_port,
        tls_cert_file=args.tls_cert,
        tls_key_file=args.tls_key,
        tls_client_ca_file=args.tls_client_ca,
        auth_tokens_file=args.auth_tokens_file,
        workers=args.workers,
        writer_address=args.writer_address,
        writer_listen=args.writer_listen,
    )


def _client(args: argparse.Namespace):
    from imgdedup.client import DedupClient

    try:
        return DedupClient(
            args.server,
            tls_ca_file=args.tls_ca,
            tls_cert_file=args.tls_cert,
            tls_key_file=args.tls_key,
            tls_server_name=args.tls_server_name,
            token=args.token,
        )
    except (OSError, ValueError) as exc:
        raise SystemExit(f"error: {exc}") from None


def _image_files(root: Path) -> list[Path]:
    return sorted(p for p in root.rglob("*") if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES)


def _index(args: argparse.Namespace) -> int:
    from tqdm import tqdm

    from imgdedup._proto.dedup.v1 import dedup_pb2 as pb

    files = _image_files(args.dir)
    if not files:
        print(f"no images under {args.dir}", file=sys.stderr)
        return 1

    def requests():
        for f in files:
            yield pb.BulkCheckRequest(image_id=str(f.relative_to(args.dir)), image=f.read_bytes(), add_to_index=True, threshold=args.threshold)

    stored = dups = errors = 0
    with _client(args) as client, tqdm(total=len(files), unit="img") as bar:
        for resp in client.bulk_check(requests()):
            bar.update()
            if resp.HasField("error"):
                errors += 1
                tqdm.write(f"{resp.image_id}: {resp.error.message}")
                continue
            stored += resp.result.stored
            dups += resp.result.is_duplicate
        clusters = sum(1 for _ in client.list_clusters(min_size=2))
    print(f"indexed {stored} of {len(files)} images: {dups} duplicates of earlier images, {errors} errors, {clusters} clusters with 2+ images")
    return 0 if errors == 0 else 2


def _check(args: argparse.Namespace) -> int:
    rows = []
    with _client(args) as client:
        for f in args.files:
            try:
                r = client.check(f.read_bytes(), image_id=str(f), threshold=args.threshold, top_k=args.top_k)
            except grpc.RpcError as exc:
                rows.append({"file": str(f), "error": exc.details()})
                continue
            rows.append({
                "file": str(f),
                "is_duplicate": r.is_duplicate,
                "matches": [{"image_id": m.image_id, "similarity": round(m.similarity, 4), "cluster_id": m.cluster_id} for m in r.matches],
            })
    if args.json:
        print(json.dumps(rows, indent=2))
    else:
        for row in rows:
            if "error" in row:
                print(f"{row['file']}: error: {row['error']}")
            elif row["is_duplicate"]:
                best = row["matches"][0]
                print(f"{row['file']}: DUPLICATE of {best['image_id']} (similarity {best['similarity']:.3f}, {len(row['matches'])} matches)")
            else:
                print(f"{row['file']}: unique")
    return 0 if all("error" not in r for r in rows) else 2


def _clusters(args: argparse.Namespace) -> int:
    with _client(args) as client:
        clusters = list(client.list_clusters(min_size=args.min_size))
    if args.json:
        print(json.dumps([
            {
                "cluster_id": c.cluster_id,
                "size": c.size,
                "representative_id": c.representative_id,
                "members": [{"image_id": m.image_id, "similarity": round(m.similarity, 4)} for m in c.members],
            }
            for c in clusters
        ], indent=2))
        return 0
    print(f"{'cluster_id':<30} {'size':>5}  representative / members")
    for c in clusters:
        print(f"{c.cluster_id:<30} {c.size:>5}  {c.representative_id}")
        for m in c.members[1:]:
            print(f"{'':<30} {'':>5}    {m.image_id} ({m.similarity:.3f})")
    print(f"{len(clusters)} clusters")
    return 0


def _info(args: argparse.Namespace) -> int:
    from google.protobuf.json_format import MessageToDict

    with _client(args) as client:
        print(json.dumps(MessageToDict(client.info(), preserving_proto_field_name=True, always_print_fields_with_no_presence=True), indent=2))
    return 0


def _health(args: argparse.Namespace) -> int:
    with _client(args) as client:
        status = client.health(timeout=args.timeout)
    print(status)
    return 0 if status == "SERVING" else 1


if __name__ == "__main__":
    sys.exit(main())
