"""Prometheus metrics (served over HTTP when `metrics_port` is set; off by default).

Names follow Prometheus conventions: `_total` counters, `_seconds` histograms, base units.
"""

from __future__ import annotations

from prometheus_client import Counter, Gauge, Histogram, start_http_server

_LATENCY_BUCKETS = (0.005, 0.01, 0.015, 0.02, 0.03, 0.05, 0.075, 0.1, 0.15, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)
_QUEUE_BUCKETS = (0.0005, 0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.25, 0.5, 1.0, 5.0)
_SIZE_BUCKETS = (1, 2, 4, 8, 16, 32, 64, 128, 256)

REQUESTS = Counter("dedup_requests_total", "RPCs (BulkCheck: each item) by method and status code", ["method", "code"])
REQUEST_SECONDS = Histogram("dedup_request_seconds", "time to answer an RPC (BulkCheck: each item)", ["method"], buckets=_LATENCY_BUCKETS)
EMBED_BATCH_SIZE = Histogram("dedup_embed_batch_size", "images per model inference", buckets=_SIZE_BUCKETS)
EMBED_QUEUE_SECONDS = Histogram("dedup_embed_queue_seconds", "time an image waits for its inference to start, by priority (high, low)", ["priority"], buckets=_QUEUE_BUCKETS)
INFERENCE_SECONDS = Histogram("dedup_inference_seconds", "time of one model inference (one batch)", buckets=_LATENCY_BUCKETS)
WRITE_BATCH_SIZE = Histogram("dedup_index_write_batch_size", "images per index write (search + store)", buckets=_SIZE_BUCKETS)
WRITE_SECONDS = Histogram("dedup_index_write_seconds", "time of one index write batch", buckets=_LATENCY_BUCKETS)
EXACT_DUPLICATES = Counter("dedup_exact_duplicates_total", "checks answered from identical stored bytes (no decode, no model)")
EXTRA_VIEWS = Counter("dedup_extra_views_total", "extra views embedded besides whole images (the content of screenshots, padded photos: core/views.py; a picture pasted into an image: core/insets.py)")
COMPOSITES_MOVED = Counter("dedup_composites_moved_total", "stored composites that left their cluster for the cluster of the picture pasted into them, which came later (core/linking.py: LinkRule.follows)")
EMBED_DROPPED = Counter("dedup_embed_dropped_total", "images dropped before inference because their caller had gone (deadline passed or cancelled)")
SHED = Counter("dedup_shed_total", "requests refused because a queue was full", ["queue"])
# Where a check's time goes: decode (read, decode, resize, hash), embed (waiting for and running
# the model), index (waiting for and running the index writer); and, per write batch, the
# writer's own stages: search, cluster (matching and cluster rules), insert (Milvus writes).
STAGE_SECONDS = Histogram("dedup_stage_seconds", "time of one stage of a check (decode, embed, index) or of a write batch (search, cluster, insert)", ["stage"], buckets=_LATENCY_BUCKETS)
MODEL_INFO = Gauge("dedup_model_info", "the model served: always 1, its labels say which and where", ["model", "embedder", "providers"])
QUEUE_DEPTH = Gauge("dedup_queue_depth", "images waiting: for the model (embed_high, embed_low) or for the index writer (index)", ["queue"])
BULK_STREAMS = Gauge("dedup_bulk_streams", "BulkCheck streams open now")
# Per namespace (tenant): a label value per namespace that callers use.
NAMESPACE_CHECKS = Counter("dedup_namespace_checks_total", "checks (BulkCheck: items) by namespace, refused ones included", ["namespace"])
QUOTA_REFUSED = Counter("dedup_quota_refused_total", "checks refused by a namespace's quota (images_per_second, stored_images)", ["namespace", "quota"])
STORED_IMAGES = Gauge("dedup_stored_images", "images stored in the index (as the index writer counts them)")
UNFLUSHED_ROWS = Gauge("dedup_unflushed_rows", "rows written since Milvus last completed a flush, kept by the index writer to write again (storage/redo.py)")


def serve_metrics(host: str, port: int) -> int:
    """Start the /metrics HTTP endpoint in a background thread; returns the bound port."""
    server, _thread = start_http_server(port, addr=host)
    return server.server_port
