"""Namespaces (tenants): the name rule, and which namespaces a caller may open.

A namespace is 1-64 characters of [a-z0-9_-]; the empty string means `default`, so clients
that never name one keep working. Every read and write of the index is within one namespace
(storage/milvus.py keeps them apart; docs/namespaces.md says how and why).

A caller's scope (the namespaces its bearer token opens, transport/auth.py) reaches the data
plane through a context variable, set for the call by the transport; None means all.
"""

from __future__ import annotations

import contextvars
import re

from imgdedup.core.errors import InvalidArgument, PermissionDenied
from imgdedup.storage.milvus import DEFAULT_NAMESPACE, MAX_NAMESPACE_CHARS

NAME = re.compile(rf"[a-z0-9_-]{{1,{MAX_NAMESPACE_CHARS}}}")

# The namespaces the current call may open (None: every one).
SCOPE: contextvars.ContextVar[frozenset[str] | None] = contextvars.ContextVar("dedup_namespace_scope", default=None)


def valid_name(name: str) -> bool:
    return NAME.fullmatch(name) is not None


def resolve(name: str, field: str = "namespace") -> str:
    """The namespace a request names: checked, `default` for empty, and open to the caller."""
    name = name or DEFAULT_NAMESPACE
    if not valid_name(name):
        shown = name if len(name) <= 80 else name[:80] + "..."
        raise InvalidArgument(field, f"namespace {shown!r} is not valid: use 1-{MAX_NAMESPACE_CHARS} characters of a-z, 0-9, '_' and '-' (or leave it empty for {DEFAULT_NAMESPACE!r})", reason="INVALID_NAMESPACE")
    scope = SCOPE.get()
    if scope is not None and name not in scope:
        raise PermissionDenied(f"this token does not open namespace {name!r}", reason="NAMESPACE_NOT_ALLOWED")
    return name


def visible(names: list[str]) -> list[str]:
    """The names the current call may see."""
    scope = SCOPE.get()
    return names if scope is None else [n for n in names if n in scope]
