"""Errors of the data plane. The transport layer maps each to a gRPC status with details."""

from __future__ import annotations


class DedupError(Exception):
    """Base class. `reason` is a stable UPPER_SNAKE code for machines (google.rpc.ErrorInfo)."""

    reason = "INTERNAL"

    def __init__(self, message: str, *, reason: str | None = None):
        super().__init__(message)
        if reason:
            self.reason = reason


class InvalidArgument(DedupError):
    """The request is malformed; `field` names the offending request field."""

    reason = "INVALID_ARGUMENT"

    def __init__(self, field: str, message: str, *, reason: str | None = None):
        super().__init__(message, reason=reason)
        self.field = field


class NotFound(DedupError):
    reason = "NOT_FOUND"

    def __init__(self, resource_type: str, name: str):
        super().__init__(f"{resource_type} {name!r} not found")
        self.resource_type = resource_type
        self.name = name


class PermissionDenied(DedupError):
    """The caller is authenticated but may not do this (e.g. its token opens other namespaces)."""

    reason = "PERMISSION_DENIED"


class FailedPrecondition(DedupError):
    """The request is well formed but the system is not in the state it needs (e.g. a delete's
    confirmation does not match); `subject` names what (google.rpc.PreconditionFailure)."""

    reason = "FAILED_PRECONDITION"

    def __init__(self, message: str, *, subject: str, reason: str | None = None):
        super().__init__(message, reason=reason)
        self.subject = subject


class Overloaded(DedupError):
    """Queues are full: the caller should retry after `retry_after_s`."""

    reason = "OVERLOADED"

    def __init__(self, message: str, retry_after_s: float = 0.5):
        super().__init__(message)
        self.retry_after_s = retry_after_s


class QuotaExceeded(DedupError):
    """A namespace is over one of its quotas (core/quotas.py): `quota` says which
    ("images_per_second" or "stored_images"), `limit` its value; `retry_after_s` when waiting
    helps (a rate), None when it does not (stored images: only deletes make room)."""

    reason = "QUOTA_EXCEEDED"

    def __init__(self, message: str, *, namespace: str, quota: str, limit: float, retry_after_s: float | None = None):
        super().__init__(message, reason="RATE_LIMITED" if retry_after_s is not None else "QUOTA_EXCEEDED")
        self.namespace = namespace
        self.quota = quota
        self.limit = limit
        self.retry_after_s = retry_after_s


class NotReady(DedupError):
    """The server is starting (model or storage not loaded yet) or shutting down."""

    reason = "NOT_READY"


class StorageUnavailable(DedupError):
    reason = "STORAGE_UNAVAILABLE"


class InferenceUnavailable(DedupError):
    """The inference backend (a Triton server) is down or reloading the model: retry later."""

    reason = "INFERENCE_UNAVAILABLE"


class DecoderUnavailable(DedupError):
    """The process decoding the image ended while it did (core/decoding.py): retry."""

    reason = "DECODER_UNAVAILABLE"
