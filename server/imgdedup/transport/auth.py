"""Bearer-token authentication: a server interceptor that guards DedupService.

Clients send the metadata `authorization: Bearer <token>`. Tokens come from `auth_tokens_file`
and/or `auth_tokens` (comma-separated, DEDUP_AUTH_TOKENS). Health checking and server reflection
stay open; every other method needs a valid token when tokens are configured.

The tokens file holds one token per line; blank lines and lines starting with '#' are ignored.
A line may limit its token to some namespaces (core/namespaces.py):

    marketplace-7f3a9c  namespaces=listings,listings-staging
    ops-2b81d0

The first token opens only those two namespaces: a call that names another one gets
PERMISSION_DENIED, and ListNamespaces shows it only those. A line without `namespaces=` (every
line of a file written before namespaces existed) and every token of `auth_tokens` opens all.

Only SHA-256 digests of the tokens are kept; a presented token is hashed and compared with
hmac.compare_digest against every configured digest, without stopping at the first match, so the
time taken tells nothing about which token (or which prefix) matched. Tokens never reach a log
line or an error message.
"""

from __future__ import annotations

import hashlib
import hmac
import logging
import functools
from pathlib import Path
from typing import Iterable

import grpc

from imgdedup.config import Settings
from imgdedup.core.namespaces import SCOPE, valid_name

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


# A token and the namespaces it opens (None: all of them).
Token = tuple[str, frozenset[str] | None]


def _scope_of(fields: list[str], where: str) -> frozenset[str] | None:
    """The namespaces a tokens-file line names after its token (None: no list, all)."""
    if not fields:
        return None
    if len(fields) > 1 or not fields[0].startswith("namespaces="):
        raise TokenConfigError(f"{where}: after the token, only 'namespaces=NAME[,NAME...]' may follow")
    names = [n.strip() for n in fields[0].removeprefix("namespaces=").split(",") if n.strip()]
    bad = [n for n in names if not valid_name(n)]
    if not names or bad:
        raise TokenConfigError(f"{where}: namespaces= needs names of 1-64 characters of a-z, 0-9, '_' and '-'")
    return frozenset(names)


def load_tokens(settings: Settings) -> list[Token]:
    """The configured tokens with their scopes; [] when authentication is off. Fails closed: a
    configured source that holds no token, or an unreadable file, is an error rather than an
    open server."""
    tokens: list[Token] = []
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
            token, *rest = line.split()
            if not _valid_token(token):
                raise TokenConfigError(f"{path}, line {lineno}: a token must be printable ASCII without spaces")
            tokens.append((token, _scope_of(rest, f"{path}, line {lineno}")))
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
            tokens.append((part, None))
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


def _scoped_handler(handler: grpc.RpcMethodHandler, scope: frozenset[str]) -> grpc.RpcMethodHandler:
    """`handler` with the token's scope set (core/namespaces.py: SCOPE) while it runs."""
    kw = dict(request_deserializer=handler.request_deserializer, response_serializer=handler.response_serializer)
    if handler.response_streaming:
        inner = handler.stream_stream if handler.request_streaming else handler.unary_stream

        @functools.wraps(inner)
        async def streaming(request_or_iterator, context):
            SCOPE.set(scope)  # in this call's own task (and the tasks it starts)
            async for response in inner(request_or_iterator, context):
                yield response

        make = grpc.stream_stream_rpc_method_handler if handler.request_streaming else grpc.unary_stream_rpc_method_handler
        return make(streaming, **kw)
    inner = handler.stream_unary if handler.request_streaming else handler.unary_unary

    @functools.wraps(inner)
    async def unary(request_or_iterator, context):
        SCOPE.set(scope)
        return await inner(request_or_iterator, context)

    make = grpc.stream_unary_rpc_method_handler if handler.request_streaming else grpc.unary_unary_rpc_method_handler
    return make(unary, **kw)


class BearerTokenInterceptor(grpc.aio.ServerInterceptor):
    def __init__(self, tokens: Iterable[Token | str]):
        pairs = [(t, None) if isinstance(t, str) else t for t in tokens]
        self._digests = tuple((_digest(t), scope) for t, scope in pairs)
        if not self._digests:
            raise TokenConfigError("no tokens given")

    def __repr__(self) -> str:
        return f"BearerTokenInterceptor(<{len(self._digests)} tokens>)"

    def _matches(self, presented: str) -> tuple[bool, frozenset[str] | None]:
        """Whether the token is valid, and the namespaces it opens (None: all)."""
        digest = _digest(presented)
        ok, scope = False, None
        for expected, its_scope in self._digests:  # no early exit
            hit = hmac.compare_digest(digest, expected)
            if hit and not ok:
                ok, scope = True, its_scope
        return ok, scope

    def _check(self, metadata) -> tuple[str | None, frozenset[str] | None]:
        """(None, scope) when the call carries a valid token, else (the reason, never the
        token; None)."""
        values = [v for k, v in (metadata or ()) if k == "authorization"]
        if not values:
            return MISSING, None
        if len(values) > 1:
            return MALFORMED, None
        value = values[0]
        if isinstance(value, bytes):
            return MALFORMED, None
        scheme, _, token = value.strip().partition(" ")
        token = token.strip()
        if scheme.lower() != "bearer" or not token:
            return MALFORMED, None
        ok, scope = self._matches(token)
        return (None, scope) if ok else (INVALID, None)

    async def intercept_service(self, continuation, handler_call_details: grpc.HandlerCallDetails):
        method = handler_call_details.method or ""
        service = method.lstrip("/").partition("/")[0]
        if service in OPEN_SERVICES:
            return await continuation(handler_call_details)
        reason, scope = self._check(handler_call_details.invocation_metadata)
        handler = await continuation(handler_call_details)
        if handler is None:
            return handler
        if reason is None:
            return handler if scope is None else _scoped_handler(handler, scope)
        log.info("rejected %s: %s", method, reason)
        return _rejecting_handler(handler, reason)
