"""Bearer-token authentication: a server interceptor that guards DedupService.

Clients send the metadata `authorization: Bearer <token>`. Tokens come from `auth_tokens_file`
(one per line; blank lines and lines starting with '#' are ignored) and/or `auth_tokens`
(comma-separated, DEDUP_AUTH_TOKENS). Health checking and server reflection stay open; every
other method needs a valid token when tokens are configured.

Only SHA-256 digests of the tokens are kept; a presented token is hashed and compared with
hmac.compare_digest against every configured digest, without stopping at the first match, so the
time taken tells nothing about which token (or which prefix) matched. Tokens never reach a log
line or an error message.
"""

from __future__ import annotations

import hashlib
import hmac
import logging
from pathlib import Path
from typing import Iterable

import grpc

from imgdedup.config import Settings

log = logging.getLogger(__name__)

# Services reachable without a token: load balancers and tools need them before they hold one.
OPEN_SERVICES = frozenset({
    "grpc.health.v1.Health",
    "grpc.reflection.v1alpha.ServerReflection",
    "grpc.reflection.v1.ServerReflection",
})

MISSING = "missing bearer token: send metadata 'authorization: Bearer <token>'"
MALFORMED = "malformed authorization metadata: expected 'Bearer <token>'"
INVALID = "invalid bearer token"


class TokenConfigError(ValueError):
    """Tokens are configured but unusable (the message never contains a token)."""


def _valid_token(token: str) -> bool:
    # gRPC metadata values are printable ASCII; whitespace would not survive "Bearer <token>".
    return bool(token) and all(0x21 <= ord(ch) <= 0x7E for ch in token)


def load_tokens(settings: Settings) -> list[str]:
    """The configured tokens; [] when authentication is off. Fails closed: a configured source
    that holds no token, or an unreadable file, is an error rather than an open server."""
    tokens: list[str] = []
    if settings.auth_tokens_file is not None:
        path = Path(settings.auth_tokens_file)
        try:
            text = path.read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError) as exc:
            raise TokenConfigError(f"cannot read auth_tokens_file {path}: {type(exc).__name__}") from None
        found = 0
        for lineno, line in enumerate(text.splitlines(), 1):
            line = line.strip()
            if not line or line.startswith("#"):
                continue
            if not _valid_token(line):
                raise TokenConfigError(f"{path}, line {lineno}: a token must be printable ASCII without spaces")
            tokens.append(line)
            found += 1
        if not found:
            raise TokenConfigError(f"auth_tokens_file {path} holds no token")
    if settings.auth_tokens is not None:
        found = 0
        for i, part in enumerate(settings.auth_tokens.get_secret_value().split(","), 1):
            part = part.strip()
            if not part:
                continue
            if not _valid_token(part):
                raise TokenConfigError(f"auth_tokens, item {i}: a token must be printable ASCII without spaces")
            tokens.append(part)
            found += 1
        if not found:
            raise TokenConfigError("auth_tokens is set but holds no token")
    return tokens


def _digest(token: str | bytes) -> bytes:
    return hashlib.sha256(token.encode("utf-8") if isinstance(token, str) else token).digest()


def _rejecting_handler(handler: grpc.RpcMethodHandler, message: str) -> grpc.RpcMethodHandler:
    """A handler of the same kind as `handler` that ends the call with UNAUTHENTICATED."""

    async def reject(request_or_iterator, context: grpc.aio.ServicerContext):
        await context.abort(grpc.StatusCode.UNAUTHENTICATED, message)

    kw = dict(request_deserializer=handler.request_deserializer, response_serializer=handler.response_serializer)
    if handler.request_streaming and handler.response_streaming:
        return grpc.stream_stream_rpc_method_handler(reject, **kw)
    if handler.request_streaming:
        return grpc.stream_unary_rpc_method_handler(reject, **kw)
    if handler.response_streaming:
        return grpc.unary_stream_rpc_method_handler(reject, **kw)
    return grpc.unary_unary_rpc_method_handler(reject, **kw)


class BearerTokenInterceptor(grpc.aio.ServerInterceptor):
    def __init__(self, tokens: Iterable[str]):
        self._digests = tuple(_digest(t) for t in tokens)
        if not self._digests:
            raise TokenConfigError("no tokens given")

    def __repr__(self) -> str:
        return f"BearerTokenInterceptor(<{len(self._digests)} tokens>)"

    def _matches(self, presented: str) -> bool:
        digest = _digest(presented)
        ok = False
        for expected in self._digests:  # no early exit
            ok |= hmac.compare_digest(digest, expected)
        return ok

    def _check(self, metadata) -> str | None:
        """None when the call carries a valid token, else the reason (never the token)."""
        values = [v for k, v in (metadata or ()) if k == "authorization"]
        if not values:
            return MISSING
        if len(values) > 1:
            return MALFORMED
        value = values[0]
        if isinstance(value, bytes):
            return MALFORMED
        scheme, _, token = value.strip().partition(" ")
        token = token.strip()
        if scheme.lower() != "bearer" or not token:
            return MALFORMED
        return None if self._matches(token) else INVALID

    async def intercept_service(self, continuation, handler_call_details: grpc.HandlerCallDetails):
        method = handler_call_details.method or ""
        service = method.lstrip("/").partition("/")[0]
        if service in OPEN_SERVICES:
            return await continuation(handler_call_details)
        reason = self._check(handler_call_details.invocation_metadata)
        handler = await continuation(handler_call_details)
        if reason is None or handler is None:
            return handler
        log.info("rejected %s: %s", method, reason)
        return _rejecting_handler(handler, reason)
