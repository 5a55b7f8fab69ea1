"""Map data-plane errors to gRPC statuses with google.rpc error details."""

from __future__ import annotations

import logging

import grpc
from google.protobuf import any_pb2, duration_pb2
from google.rpc import code_pb2, error_details_pb2, status_pb2

from imgdedup.core.errors import DecoderUnavailable, DedupError, FailedPrecondition, InferenceUnavailable, InvalidArgument, NotFound, NotReady, Overloaded, PermissionDenied, QuotaExceeded, StorageUnavailable

log = logging.getLogger(__name__)
DOMAIN = "imgdedup"


class ForwardedError(DedupError):
    """An error another process of this service answered (the index writer): its status, with
    its details, goes to the caller unchanged."""

    def __init__(self, status: status_pb2.Status):
        super().__init__(status.message)
        self.status = status


def to_status(exc: BaseException) -> status_pb2.Status:
    """A google.rpc.Status for any exception; unexpected ones become INTERNAL without internals."""
    details: list = []
    if isinstance(exc, ForwardedError):
        return exc.status
    if isinstance(exc, InvalidArgument):
        code = code_pb2.INVALID_ARGUMENT
        details.append(error_details_pb2.BadRequest(field_violations=[
            error_details_pb2.BadRequest.FieldViolation(field=exc.field, description=str(exc), reason=exc.reason)
        ]))
    elif isinstance(exc, NotFound):
        code = code_pb2.NOT_FOUND
        details.append(error_details_pb2.ResourceInfo(resource_type=exc.resource_type, resource_name=exc.name, description=str(exc)))
    elif isinstance(exc, PermissionDenied):
        code = code_pb2.PERMISSION_DENIED
    elif isinstance(exc, FailedPrecondition):
        code = code_pb2.FAILED_PRECONDITION
        details.append(error_details_pb2.PreconditionFailure(violations=[
            error_details_pb2.PreconditionFailure.Violation(type=exc.reason, subject=exc.subject, description=str(exc))
        ]))
    elif isinstance(exc, QuotaExceeded):
        code = code_pb2.RESOURCE_EXHAUSTED
        details.append(error_details_pb2.QuotaFailure(violations=[
            error_details_pb2.QuotaFailure.Violation(subject=f"namespace:{exc.namespace}", description=str(exc))
        ]))
        if exc.retry_after_s is not None:
            details.append(_retry_info(exc.retry_after_s))
    elif isinstance(exc, Overloaded):
        code = code_pb2.RESOURCE_EXHAUSTED
        details.append(_retry_info(exc.retry_after_s))
    elif isinstance(exc, (NotReady, StorageUnavailable, InferenceUnavailable, DecoderUnavailable)):
        code = code_pb2.UNAVAILABLE
        details.append(_retry_info(1.0))
    else:
        log.error("internal error", exc_info=exc)
        code = code_pb2.INTERNAL
        exc = DedupError("internal error; see the server log")
    reason = exc.reason if isinstance(exc, DedupError) else "INTERNAL"
    extra = {"namespace": exc.namespace, "quota": exc.quota, "limit": f"{exc.limit:g}"} if isinstance(exc, QuotaExceeded) else {}
    details.append(error_details_pb2.ErrorInfo(reason=reason, domain=DOMAIN, metadata=extra))
    packed = []
    for d in details:
        a = any_pb2.Any()
        a.Pack(d)
        packed.append(a)
    return status_pb2.Status(code=code, message=str(exc), details=packed)


def _retry_info(secs: float) -> error_details_pb2.RetryInfo:
    return error_details_pb2.RetryInfo(retry_delay=duration_pb2.Duration(seconds=int(secs), nanos=int((secs % 1) * 1e9)))


async def abort(context: grpc.aio.ServicerContext, exc: BaseException, metadata: tuple = ()) -> None:
    """End the call with `exc` as its status (and details); `metadata` joins the trailers."""
    from grpc_status import rpc_status

    status = rpc_status.to_status(to_status(exc))
    await context.abort(status.code, status.details, tuple(status.trailing_metadata) + tuple(metadata))
