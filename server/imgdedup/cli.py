"""The `dedup` command: serve, index, check, clusters, info."""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import sys
from pathlib import Path

import grpc


EXIT_CODES = """exit codes:
  0  done (also when a reader such as `head` closed the output early)
  1  failed: the server is unreachable or answered an error, is not SERVING (health), or there was
     nothing to do
  2  usage: unknown flags, invalid settings
  3  partly done: some images failed (index, check); each is reported"""

EXAMPLES = {
    "serve": """examples:
  dedup serve                                    # 127.0.0.1:50051, Milvus Lite in ./dedup-data
  dedup serve --port 6000 --data-dir /srv/dedup --metrics-port 9100
  dedup serve --milvus-uri http://milvus:19530 --workers 0
  dedup serve --embedder triton --triton-url triton:8001
  DEDUP_MAX_BATCH_SIZE=16 dedup serve --config dedup.toml

Every setting is a flag here, an environment variable DEDUP_<NAME> and a key of the TOML file;
flags win over the environment, which wins over the file.""",
    "index": "example:\n  dedup index ./photos --server 127.0.0.1:50051     # store every image under ./photos",
    "check": "example:\n  dedup check new.jpg other.png --json             # is each a copy of a stored image?",
    "clusters": "example:\n  dedup clusters --min-size 3 | head -40",
    "info": "example:\n  dedup info --server dedup.internal:50051 --tls-ca ca.pem",
    "namespaces": "example:\n  dedup namespaces --token \"$OPS_TOKEN\"",
    "delete-namespace": "example:\n  dedup delete-namespace listings-staging --confirm listings-staging",
    "health": "example (a container HEALTHCHECK):\n  dedup health --timeout 2 || exit 1",
    "report": "example:\n  dedup index ./photos && dedup report --images ./photos --out ./report && xdg-open report/index.html",
}

# Short names kept for the flags the server had before every setting became one.
SHORTCUTS = {"tls-cert-file": "tls-cert", "tls-key-file": "tls-key", "tls-client-ca-file": "tls-client-ca", "writer-address": "writer"}


def main(argv: list[str] | None = None) -> int:
    from pydantic_settings import CliSettingsSource

    from imgdedup.config import Settings

    formatter = argparse.RawDescriptionHelpFormatter
    parser = argparse.ArgumentParser(prog="dedup", description="Image de-duplication server and client.", epilog=EXIT_CODES, formatter_class=formatter)
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("serve", help="run the gRPC server", description="Run the gRPC server.", epilog=EXAMPLES["serve"], formatter_class=formatter)
    p.add_argument("--config", help="TOML config file (also DEDUP_CONFIG)")
    # Every field of Settings, from the model itself (names in kebab case, booleans as
    # --x / --no-x, lists comma-separated, tables as JSON); help from its descriptions.
    settings_flags = CliSettingsSource(Settings, root_parser=p, cli_kebab_case=True, cli_implicit_flags=True, cli_hide_none_type=True, cli_shortcuts=SHORTCUTS, cli_prog_name="dedup serve")

    for name, help_ in (("index", "add every image under DIR through BulkCheck"), ("check", "check images without storing them"), ("clusters", "list clusters of duplicates"), ("info", "describe the server"), ("namespaces", "list the namespaces with their counts"), ("delete-namespace", "delete every image and cluster of one namespace"), ("health", "exit 0 when the server is SERVING (for container health checks)"), ("report", "write an HTML gallery of the clusters and a contact sheet per cluster")):
        c = sub.add_parser(name, help=help_, description=help_[0].upper() + help_[1:] + ".", epilog=EXAMPLES[name], formatter_class=formatter)
        c.add_argument("--server", default="127.0.0.1:50051", help="server address (default 127.0.0.1:50051)")
        c.add_argument("--tls-ca", type=Path, help="CA (PEM) of the server's certificate; turns TLS on")
        c.add_argument("--tls-cert", type=Path, help="client certificate (PEM) for mutual TLS; turns TLS on")
        c.add_argument("--tls-key", type=Path, help="client private key (PEM)")
        c.add_argument("--tls-server-name", help="name to verify in the server's certificate")
        c.add_argument("--token", default=os.environ.get("DEDUP_TOKEN"), help="bearer token (default: env DEDUP_TOKEN, which keeps it out of ps)")
        if name not in ("health", "namespaces", "delete-namespace"):
            c.add_argument("--namespace", default=os.environ.get("DEDUP_NAMESPACE", ""), help="the namespace (tenant) to work in (default: env DEDUP_NAMESPACE, else the server's 'default')")
        if name == "delete-namespace":
            c.add_argument("name", help="the namespace to delete")
            c.add_argument("--confirm", required=True, help="the namespace's name again")
        if name == "index":
            c.add_argument("dir", type=Path)
            c.add_argument("--threshold", type=float)
        if name == "check":
            c.add_argument("files", nargs="+", type=Path)
            c.add_argument("--threshold", type=float)
            c.add_argument("--top-k", type=int)
            c.add_argument("--match-mode", choices=["duplicates", "copies", "near-duplicates"], default="duplicates",
                           help="copies: only matches of kind copy; near-duplicates: other shots of the same scene too (docs/matching.md)")
            c.add_argument("--json", action="store_true")
        if name == "health":
            c.add_argument("--timeout", type=float, default=2.0, help="seconds to wait for the answer (default 2)")
        if name == "clusters":
            c.add_argument("--min-size", type=int, default=2)
            c.add_argument("--json", action="store_true")
        if name == "report":
            c.add_argument("--out", type=Path, required=True, help="folder to write (index.html, thumbs/, sheets/)")
            c.add_argument("--images", type=Path, help="folder the image ids are paths in (what `dedup index` was given); without it, no thumbnails")
            c.add_argument("--min-size", type=int, default=2)
            c.add_argument("--page-size", type=int, default=50, help="clusters per HTML page (default 50)")

    sub.add_parser("calibrate", help="choose a threshold from a labelled folder (dedup calibrate -h)", add_help=False)
    sub.add_parser("tail", help="fit the unrelated-pair tail of your own photos for the operating point (dedup tail -h)", add_help=False)

    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] == ["calibrate"]:  # its own parser: runs offline, needs no server
        from imgdedup.calibrate import main as calibrate

        return calibrate(argv[1:])
    if argv[:1] == ["tail"]:  # offline too
        from imgdedup.tail import main as tail

        return tail(argv[1:])
    args = parser.parse_args(argv)
    try:
        if args.command == "serve":
            return _serve(args, settings_flags)
        commands = {"index": _index, "check": _check, "clusters": _clusters, "info": _info, "health": _health, "report": _report, "namespaces": _namespaces, "delete-namespace": _delete_namespace}
        code = commands[args.command](args)
        sys.stdout.flush()  # here, where a closed pipe is caught, not at exit
        return code
    except grpc.RpcError as exc:
        print(f"error: {_sentence(exc, getattr(args, 'server', ''))}", file=sys.stderr)
        return 1
    except BrokenPipeError:
        # The reader (`| head`) has what it wanted: no traceback, and none again at exit.
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 0


def _sentence(exc: grpc.RpcError, server: str) -> str:
    """An RPC failure as a sentence that says what to do."""
    code, details = exc.code(), exc.details() or ""
    if code == grpc.StatusCode.UNAVAILABLE:
        return f"cannot reach the server at {server} (UNAVAILABLE: {details}). Is it running, and does it need --tls-ca?"
    if code == grpc.StatusCode.UNAUTHENTICATED:
        return f"the server refused the call (UNAUTHENTICATED: {details}). Pass a bearer token with --token or DEDUP_TOKEN."
    if code == grpc.StatusCode.DEADLINE_EXCEEDED:
        return f"the server at {server} did not answer in time (DEADLINE_EXCEEDED: {details})."
    return f"the server answered {code.name}: {details}"


def _serve(args: argparse.Namespace, settings_flags) -> int:
    from pydantic import ValidationError
    from pydantic_settings import SettingsError

    from imgdedup.config import Settings
    from imgdedup.transport.server import serve

    try:
        settings = Settings.load(args.config, cli=settings_flags(parsed_args=args))
    except ValidationError as exc:
        problems = "; ".join(f"{'.'.join(map(str, e['loc'])) or 'settings'}: {e['msg'].removeprefix('Value error, ')}" for e in exc.errors())
        print(f"error: invalid settings: {problems}", file=sys.stderr)
        return 2
    except (FileNotFoundError, ValueError, SettingsError) as exc:  # ValueError: a TOML syntax error too
        print(f"error: invalid settings: {exc}", file=sys.stderr)
        return 2
    from imgdedup.logs import configure

    configure(settings.log_level, settings.log_format)
    if settings.workers != 1:
        from imgdedup.transport.workers import supervise

        asyncio.run(supervise(settings))
    else:
        asyncio.run(serve(settings))
    return 0


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
            namespace=getattr(args, "namespace", ""),
        )
    except (OSError, ValueError) as exc:
        raise SystemExit(f"error: {exc}") from None


def _index(args: argparse.Namespace) -> int:
    from tqdm import tqdm

    from imgdedup._proto.dedup.v1 import dedup_pb2 as pb
    from imgdedup.core.images import IMAGE_SUFFIXES, image_files

    files = image_files(args.dir)
    if not files:
        print(f"error: no images under {args.dir} (looked for {', '.join(sorted(IMAGE_SUFFIXES))})", file=sys.stderr)
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
    return 0 if errors == 0 else 3


def _check(args: argparse.Namespace) -> int:
    from tqdm import tqdm

    from imgdedup._proto.dedup.v1 import dedup_pb2 as pb

    rows = []
    mode = pb.MatchMode.Value("MATCH_MODE_" + args.match_mode.upper().replace("-", "_"))
    with _client(args) as client:
        for f in tqdm(args.files, unit="img", disable=len(args.files) < 20 or not sys.stderr.isatty()):
            try:
                r = client.check(f.read_bytes(), image_id=str(f), threshold=args.threshold, top_k=args.top_k, match_mode=mode)
            except grpc.RpcError as exc:
                rows.append({"file": str(f), "error": exc.details()})
                continue
            rows.append({
                "file": str(f),
                "is_duplicate": r.is_duplicate,
                "matches": [{"image_id": m.image_id, "similarity": round(m.similarity, 4), "cluster_id": m.cluster_id,
                             "kind": pb.MatchKind.Name(m.kind).removeprefix("MATCH_KIND_").lower()} for m in r.matches],
            })
    if args.json:
        print(json.dumps(rows, indent=2))
    else:
        for row in rows:
            if "error" in row:
                print(f"{row['file']}: error: {row['error']}")
            elif row["is_duplicate"]:
                best = row["matches"][0]
                print(f"{row['file']}: DUPLICATE of {best['image_id']} ({best['kind'].replace('_', '-')}, similarity {best['similarity']:.3f}, {len(row['matches'])} matches)")
            else:
                print(f"{row['file']}: unique")
    return 0 if all("error" not in r for r in rows) else 3


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


def _namespaces(args: argparse.Namespace) -> int:
    with _client(args) as client:
        found = client.namespaces()
    print(f"{'namespace':<40} {'images':>10} {'clusters':>9}")
    for n in found:
        print(f"{n.name:<40} {n.indexed_images:>10} {n.clusters:>9}")
    return 0


def _delete_namespace(args: argparse.Namespace) -> int:
    with _client(args) as client:
        deleted = client.delete_namespace(args.name, confirm=args.confirm)
    print(f"deleted namespace {args.name}: {deleted} images")
    return 0


def _report(args: argparse.Namespace) -> int:
    from tqdm import tqdm

    from imgdedup.report import build_report, clusters_from_server

    if args.page_size < 1:
        print("error: --page-size must be at least 1", file=sys.stderr)
        return 2
    if args.images is not None and not args.images.is_dir():
        print(f"error: --images {args.images} is not a folder", file=sys.stderr)
        return 2
    with _client(args) as client:
        clusters = clusters_from_server(client, min_size=args.min_size)
    with tqdm(total=len(clusters), unit="cluster", disable=not sys.stderr.isatty()) as bar:
        pages = build_report(clusters, args.out, images=args.images, page_size=args.page_size, progress=bar.update)
    print(f"wrote {pages[0]} ({len(clusters)} clusters, {len(pages)} page{'s' if len(pages) > 1 else ''}, a contact sheet each in {args.out / 'sheets'})")
    return 0


def _health(args: argparse.Namespace) -> int:
    with _client(args) as client:
        status = client.health(timeout=args.timeout)
    print(status)
    return 0 if status == "SERVING" else 1


if __name__ == "__main__":
    sys.exit(main())
