"""Server settings: command-line flags > DEDUP_* environment variables > TOML config file > defaults."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, ClassVar, Literal

from pydantic import BaseModel, ConfigDict, Field, SecretStr, ValidationInfo, field_validator, model_validator
from pydantic_settings import BaseSettings, PydanticBaseSettingsSource, SettingsConfigDict, TomlConfigSettingsSource

from imgdedup.storage.milvus import is_lite_uri


class NamespaceQuota(BaseModel):
    """The limits of one namespace (core/quotas.py); a limit left out is no limit."""

    model_config = ConfigDict(extra="forbid")

    max_images: int | None = Field(None, ge=0, description="images the namespace may store; a check that would store one more gets RESOURCE_EXHAUSTED")
    images_per_second: float | None = Field(None, gt=0, description="checks (BulkCheck: items) per second, shared by every process that checks through one index writer (fronts, replicas: core/rate_shares.py)")
    burst: float | None = Field(None, ge=1, description="checks that may come at once after a quiet spell (the bucket's size); default: one second's worth, at least 1")


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="DEDUP_", extra="forbid")
    _config_file: ClassVar[Path | None] = None
    _cli: ClassVar[PydanticBaseSettingsSource | None] = None

    # Network
    host: str = Field("127.0.0.1", description="address to listen on")
    port: int = Field(50051, ge=0, le=65535, description="port (0: any free port, printed at start)")
    max_message_bytes: int = Field(64 * 1024 * 1024, ge=1024, description="largest gRPC message accepted")

    # Storage
    data_dir: Path = Field(Path("./dedup-data"), description="where the embedded Milvus Lite file lives")
    milvus_uri: str | None = Field(None, description="Milvus server URI (http://host:19530); default: Milvus Lite in data_dir")
    milvus_token: SecretStr | None = Field(None, description="Milvus token (user:password or API key)")
    collection_prefix: str = Field("dedup", pattern=r"^[A-Za-z_][A-Za-z0-9_]{0,200}$", description="collections are <prefix>_images, <prefix>_views, <prefix>_clusters")
    milvus_timeout_s: float = Field(10.0, gt=0, description="deadline of one Milvus call")
    index_type: Literal["IVF_FLAT", "FLAT", "AUTOINDEX", "IVF_SQ8", "HNSW"] = Field("IVF_FLAT", description="vector index of a new collection: IVF_FLAT, FLAT, AUTOINDEX; on a Milvus server also IVF_SQ8 and HNSW (past ~100k images: README, Capacity)")
    index_nlist: int = Field(128, ge=1, description="IVF lists of a new collection's vector index")
    search_nprobe: int = Field(32, ge=1, description="IVF lists a search visits (recall against speed)")
    hnsw_m: int = Field(32, ge=2, le=2048, description="HNSW: links per node of a new collection's index (32: at 1M SSCD-like vectors 16 missed a fifth of the copies at cosine 0.6-0.95; README, Capacity)")
    hnsw_ef_construction: int = Field(200, ge=1, description="HNSW: candidates kept while building a new collection's index (build time against recall)")
    search_ef: int = Field(128, ge=1, description="HNSW: candidates a search keeps (at least the results asked for; recall against speed)")

    # Scale-out (docs/scale-out.md)
    workers: int = Field(1, ge=0, le=256, description="front processes sharing the port (SO_REUSEPORT), each decoding and embedding; the parent is the collection's one index writer (so Milvus Lite works too). 0: one per core")
    writer_address: str | None = Field(None, description="this server is a front of another's index writer at this address (host:port, or unix:PATH), the writer_listen of the replica that writes the collection; it then opens no Milvus itself")
    writer_listen: str | None = Field(None, description="also serve this server's index writer at this address (host:port, or unix:PATH) to replicas started with writer_address; TLS and tokens as for the public port")
    writer_token: SecretStr | None = Field(None, description="bearer token sent to the writer_address (one of the writer's auth tokens)")
    writer_tls_ca_file: Path | None = Field(None, description="CA (PEM) of the writer's certificate: the connection to writer_address uses TLS")
    writer_timeout_s: float = Field(30.0, gt=0, description="deadline of the unary calls to writer_address (deletes, cluster reads)")
    writer_election: str | None = Field(None, description="etcd endpoint (http://host:2379; a Milvus server's own etcd will do) holding the writer lease: the replica that holds it writes the collection and serves its writer on writer_listen, the others are fronts of it, and one of them takes over when it stops renewing (docs/scale-out.md)")
    writer_lease_ttl_s: float = Field(10.0, ge=2, le=300, description="writer_election: seconds a writer that stopped renewing keeps the lease (how long writes wait when it dies); renewed every third of it")
    writer_advertise: str | None = Field(None, description="writer_election: the address other replicas reach this one's writer at (host:port); default writer_listen")

    # Model
    model: str = Field("sscd_disc_mixup", description="built-in model spec name, or path to a spec .toml")
    providers: list[str] | None = Field(None, description="onnxruntime execution providers; default: CUDA if usable, then CPU")
    intra_op_threads: int = Field(0, ge=0, description="onnxruntime threads per session; 0: cores / inference_workers each, plus one session on every core for inferences that run alone")
    inference_workers: int = Field(2, ge=1, le=64, description="inferences that may run at once, each on its own session")
    threshold: float | None = Field(None, gt=0, le=1, description="default duplicate threshold; default: the model spec's")
    false_matches_per_query: float = Field(0.01, ge=0, le=1, description="the default threshold rises with a namespace's stored images so that a query meets at most this many unrelated images on average, by the model spec's tail fit (docs/matching.md); 0: the threshold stays fixed")
    # onnxruntime on a GPU (onnxruntime-gpu: the gpu extra)
    cuda_device_id: int = Field(0, ge=0, description="the GPU onnxruntime's CUDA (and TensorRT) provider runs on")
    cuda_mem_limit_mb: int = Field(0, ge=0, description="CUDA provider memory arena limit (gpu_mem_limit); 0: no limit")
    cudnn_conv_algo_search: Literal["EXHAUSTIVE", "HEURISTIC", "DEFAULT"] = Field("EXHAUSTIVE", description="how cuDNN picks convolution kernels: EXHAUSTIVE benchmarks them once per shape (fastest afterwards)")
    tensorrt: bool = Field(False, description="put onnxruntime's TensorRT provider before CUDA (fp16, engine cache in tensorrt_cache_dir)")
    tensorrt_fp16: bool = Field(True, description="TensorRT builds fp16 engines")
    tensorrt_cache_dir: Path | None = Field(None, description="TensorRT engine cache; default: data_dir/tensorrt-cache")

    # Where embeddings are computed: in process (onnxruntime), or on NVIDIA Triton (README "Triton")
    embedder: Literal["onnxruntime", "triton", "torch"] = Field("onnxruntime", description="onnxruntime: in this process; triton: on the Triton (KServe v2 gRPC) server at triton_url; torch: PyTorch in this process (TorchScript or torchvision specs)")
    torch_device: str = Field("auto", description="embedder torch: auto (CUDA if torch sees a GPU), cpu, cuda, cuda:N")
    torch_half: bool | None = Field(None, description="embedder torch: fp16 weights and activations; default: on CUDA only")
    torch_compile: bool = Field(False, description="embedder torch: torch.compile the model (slower start)")
    triton_url: str | None = Field(None, description="Triton's gRPC endpoint, host:port (embedder triton)")
    triton_model: str | None = Field(None, description="the model's name on Triton; default: the model spec's name")
    triton_model_version: str = Field("", description="the model version on Triton; empty: Triton's policy picks")
    triton_timeout_s: float = Field(10.0, gt=0, description="deadline of one inference request to Triton")
    triton_retries: int = Field(2, ge=0, le=10, description="retries of a request Triton answered UNAVAILABLE or let time out, with backoff")
    triton_start_timeout_s: float = Field(300.0, gt=0, description="how long the start waits for the model on Triton to be ready")
    triton_headers: dict[str, str] = Field(default_factory=dict, description="headers (gRPC metadata) sent with every Triton call; env: JSON")
    triton_tls: bool = Field(False, description="TLS to Triton with the system's root certificates (implied by the triton_tls_* files)")
    triton_tls_ca_file: Path | None = Field(None, description="CA (PEM) of Triton's certificate; turns TLS on")
    triton_tls_cert_file: Path | None = Field(None, description="client certificate (PEM) for mutual TLS with Triton")
    triton_tls_key_file: Path | None = Field(None, description="private key (PEM) of triton_tls_cert_file")

    # Batching and limits
    max_batch_size: int | None = Field(None, ge=1, le=1024, description="largest batch the dynamic batcher forms; default: 8 when the model runs on the CPU, 32 on a GPU")
    max_queue_delay_ms: float | None = Field(None, ge=0, description="longest a request waits for company; default: 2 on the CPU, 4 on a GPU")
    max_queue_size: int = Field(1024, ge=1, description="images waiting for the model, or for the index writer, per priority, before RESOURCE_EXHAUSTED")
    max_commit_batch: int = Field(64, ge=1, description="images the index writer searches and stores in one batch")
    bulk_write_delay_ms: float = Field(10.0, ge=0, le=60_000, description="longest a write of bulk (stream) images waits for more of the stream that are on their way, up to max_commit_batch: larger writes cost less per image; an interactive image ends the wait; 0: no wait")
    link_support: float = Field(0.6, ge=0.0, le=1.0, description="an image that matches several clusters merges only those in which it is near (similarity >= 0.30) this share of the members, up to 8 of them (core/linking.py, docs/matching.md); 0: merge every cluster it matches (single linkage)")
    content_views: bool = Field(True, description="also embed the main content of images on a plain background (screenshots, padded photos) and match on it")
    inset_views: bool = Field(True, description="also embed a picture pasted into an image (a photo pasted onto another photo) when the image has no content view, and cluster the image with that picture (core/insets.py, docs/matching.md)")
    digest_cache: bool = Field(True, description="keep hashes of stored images' bytes and ids in memory, so only likely exact duplicates and re-sent ids query Milvus; turn off when several servers write one collection")
    decode_workers: int = Field(default_factory=lambda: max(1, os.cpu_count() or 1), ge=1, description="threads that decode and resize images; default: one per core")
    decode_processes: bool | None = Field(None, description="decode in processes of their own, one per decoding thread (decode_workers of each priority), away from the server's interpreter lock: one process then keeps more cores busy, and a codec that crashes takes only its process down (core/decoding.py). Default: on when the model runs off this host's CPU (on a GPU, or on Triton), where the work around the model sets the speed; off when it runs on the CPU, whose cores it keeps busy itself")
    bulk_max_in_flight: int = Field(32, ge=1, description="images of one BulkCheck stream being processed at once")
    low_priority_nice: int = Field(10, ge=0, le=19, description="OS niceness added to the threads that decode and embed low-priority (bulk) images, so the kernel gives the cores to interactive work first (Linux: per thread); 0: off")
    bulk_max_items: int = Field(1_000_000, ge=1, description="images per BulkCheck stream; later ones get RESOURCE_EXHAUSTED")
    max_image_bytes: int = Field(48 * 1024 * 1024, ge=1, description="largest image accepted, in bytes")
    max_pixels: int = Field(60_000_000, ge=1, description="largest decoded image (width x height), checked before decoding")
    default_top_k: int = Field(5, ge=1, description="matches per answer when the request says none")
    max_top_k: int = Field(100, ge=1, description="most matches a request may ask for")

    # Tenants (docs/namespaces.md)
    quotas: dict[str, NamespaceQuota] = Field(default_factory=dict, description="limits per namespace, by name, '*' for every namespace not named (TOML: [quotas.NAME] tables; env and flag: JSON)")
    cluster_modes: dict[str, Literal["duplicates", "copies", "near_duplicates"]] = Field(default_factory=dict, description="what links images into a namespace's clusters, by name, '*' for every namespace not named: duplicates (the threshold, the default), copies (at least the model's copy_similarity: other shots of a scene stay apart) or near_duplicates (the operating point of near_duplicate_threshold: other shots of a scene join); docs/matching.md (TOML: a [cluster_modes] table; env and flag: JSON)")

    # Security
    tls_cert_file: Path | None = Field(None, description="server certificate chain (PEM); with tls_key_file turns TLS on")
    tls_key_file: Path | None = Field(None, description="private key (PEM) of tls_cert_file")
    tls_client_ca_file: Path | None = Field(None, description="CA certificates (PEM); when set, clients must present a certificate they signed (mutual TLS)")
    auth_tokens_file: Path | None = Field(None, description="bearer tokens, one per line ('#' comment lines and blank lines ignored)")
    auth_tokens: SecretStr | None = Field(None, description="bearer tokens, comma-separated (DEDUP_AUTH_TOKENS)")

    # Operations
    log_level: str = Field("INFO", description="DEBUG (a line per RPC), INFO, WARNING, ERROR")
    log_format: Literal["text", "json"] = Field("text", description="json: one JSON object per line, with the request id (and trace id) of the RPC it belongs to")
    otlp_endpoint: str | None = Field(None, description="export OpenTelemetry traces over OTLP/gRPC to this collector (http://host:4317); needs the otel extra")
    otlp_insecure: bool = Field(True, description="plaintext to the OTLP collector (false: TLS with the system's roots)")
    otel_service_name: str = Field("imgdedup", description="service.name of the exported traces")
    metrics_port: int = Field(0, ge=0, le=65535, description="Prometheus /metrics HTTP port on `host`; 0: off")
    grace_period_s: float = Field(10.0, ge=0, description="on SIGTERM, how long running calls may take to finish")
    storage_check_interval_s: float = Field(2.0, gt=0, description="how often Milvus is pinged; health follows it")
    flush_interval_s: float = Field(30.0, gt=0, description="how often Milvus is asked to persist what was written; until it has, the writer keeps those writes in memory and makes them again after Milvus comes back (docs/scale-out.md)")
    max_concurrent_streams: int = Field(100, ge=1, description="concurrent RPCs per client connection (HTTP/2)")

    @field_validator("quotas", "cluster_modes")
    @classmethod
    def _namespace_names(cls, by_name: dict[str, Any], info: ValidationInfo) -> dict[str, Any]:
        from imgdedup.core.namespaces import valid_name  # (core imports this module)

        bad = [name for name in by_name if name != "*" and not valid_name(name)]
        if bad:
            raise ValueError(f"{info.field_name} for invalid namespace names: {bad} (1-64 characters of a-z, 0-9, '_', '-'; or '*')")
        return by_name

    def default_threshold(self, spec: Any) -> float:
        """The calibrated duplicate (and cluster) threshold: `threshold`, else the model spec's;
        the base a namespace's operating point rises from (core/operating_point.py)."""
        return self.threshold or spec.search.default_threshold

    @model_validator(mode="after")
    def _index_needs(self) -> "Settings":
        if self.index_type in ("IVF_SQ8", "HNSW") and is_lite_uri(self.milvus_uri or ""):
            raise ValueError(f"index_type {self.index_type} needs a Milvus server (milvus_uri); Milvus Lite takes IVF_FLAT, FLAT and AUTOINDEX")
        return self

    @model_validator(mode="after")
    def _election_needs(self) -> "Settings":
        if self.writer_election is None:
            if self.writer_advertise is not None:
                raise ValueError("writer_advertise goes with writer_election")
            return self
        if not self.writer_listen:
            raise ValueError("writer_election needs writer_listen (where this replica serves its writer when it holds the lease)")
        if self.writer_address:
            raise ValueError("writer_election and writer_address exclude each other: the lease says who the writer is")
        if not self.writer_election.startswith(("http://", "https://")):
            raise ValueError("writer_election is etcd's URL, http://host:2379")
        advertised = self.writer_advertise or self.writer_listen
        if advertised.startswith("unix:") or advertised.rpartition(":")[0] in ("", "0.0.0.0", "[::]"):
            raise ValueError(f"other replicas cannot reach {advertised!r}: set writer_advertise to this replica's host:port")
        return self

    @model_validator(mode="after")
    def _embedder_needs(self) -> "Settings":
        if self.embedder == "triton" and not self.triton_url:
            raise ValueError("embedder triton needs triton_url (host:port of Triton's gRPC endpoint)")
        if (self.triton_tls_cert_file is None) != (self.triton_tls_key_file is None):
            raise ValueError("triton_tls_cert_file and triton_tls_key_file go together")
        return self

    def decoding_in_processes(self, model_on_cpu: bool) -> bool:
        """decode_processes as set, else whether the model runs off this host's CPU."""
        return self.decode_processes if self.decode_processes is not None else not model_on_cpu

    def batching(self, on_gpu: bool) -> tuple[int, float]:
        """(max_batch_size, max_queue_delay_s): as set, else what suits where the model runs
        (a GPU's throughput grows with the batch up to dozens; a CPU's barely beyond a few)."""
        size = self.max_batch_size or (32 if on_gpu else 8)
        delay_ms = self.max_queue_delay_ms if self.max_queue_delay_ms is not None else (4.0 if on_gpu else 2.0)
        return size, delay_ms / 1000.0

    def resolved_milvus_uri(self) -> str:
        return self.milvus_uri or str((self.data_dir / "milvus.db").resolve())

    @classmethod
    def load(cls, config_file: str | Path | None = None, *, cli: PydanticBaseSettingsSource | None = None, **overrides: Any) -> "Settings":
        """Build settings: `overrides` (those not None) > `cli` (parsed command-line flags: a
        pydantic-settings CliSettingsSource) > DEDUP_* environment > the TOML file > defaults."""
        path = config_file or os.environ.get("DEDUP_CONFIG")
        cls._config_file = Path(path) if path else None
        if cls._config_file is not None and not cls._config_file.is_file():
            raise FileNotFoundError(f"config file not found: {cls._config_file}")
        cls._cli = cli
        try:
            return cls(**{k: v for k, v in overrides.items() if v is not None})
        finally:
            cls._config_file = None
            cls._cli = None

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        sources: list[PydanticBaseSettingsSource] = [init_settings, *([cls._cli] if cls._cli is not None else []), env_settings]
        if cls._config_file is not None:
            sources.append(TomlConfigSettingsSource(settings_cls, toml_file=cls._config_file))
        return tuple(sources)
