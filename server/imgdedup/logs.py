"""Log set-up: text (the default) or JSON lines, each record with the request id of the RPC it
belongs to (and its trace id when tracing is on).

A request id is the caller's `x-request-id` metadata, or a new one; the server returns it in
the response's initial metadata (`x-request-id`) so that a caller can quote it, and every log
line written while serving that RPC carries it.
"""

from __future__ import annotations

import json
import logging
import sys
import uuid
from contextvars import ContextVar

REQUEST_ID: ContextVar[str] = ContextVar("request_id", default="")
REQUEST_ID_KEY = "x-request-id"
TEXT_FORMAT = "%(asctime)s %(levelname)s %(process)d %(name)s: %(message)s%(request_suffix)s"


def announce(line: str) -> None:
    """Print a line that tests and scripts read ("listening on HOST:PORT", "ready") in one
    write: print() writes the text and its newline apart when stdout is unbuffered, and the
    fronts and Milvus Lite share that stream, so a log line could land between the two (a
    front's "2026-..." after the port once read as another port)."""
    sys.stdout.write(line + "\n")
    sys.stdout.flush()


def request_id(metadata) -> str:
    """The caller's x-request-id (printable, at most 128 characters), else a new one."""
    for key, value in metadata or ():
        if key == REQUEST_ID_KEY and isinstance(value, str) and 0 < len(value) <= 128 and value.isprintable():
            return value
    return uuid.uuid4().hex


class _Context(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        record.request_id = REQUEST_ID.get()
        record.request_suffix = f" [request {record.request_id}]" if record.request_id else ""
        record.trace_id = _trace_id()
        return True


def _trace_id() -> str:
    try:
        from opentelemetry import trace
    except ImportError:
        return ""
    ctx = trace.get_current_span().get_span_context()
    return f"{ctx.trace_id:032x}" if ctx.is_valid else ""


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        entry = {
            "time": self.formatTime(record, "%Y-%m-%dT%H:%M:%S") + f".{int(record.msecs):03d}Z",
            "level": record.levelname,
            "logger": record.name,
            "pid": record.process,
            "message": record.getMessage(),
        }
        for key in ("request_id", "trace_id"):
            if getattr(record, key, ""):
                entry[key] = getattr(record, key)
        if record.exc_info:
            entry["exception"] = self.formatException(record.exc_info)
        return json.dumps(entry, ensure_ascii=False)


def configure(level: str, fmt: str = "text") -> None:
    """Root logging for a server process: `fmt` "text" or "json"."""
    import time

    handler = logging.StreamHandler()
    handler.addFilter(_Context())
    if fmt == "json":
        formatter = JsonFormatter()
        formatter.converter = time.gmtime
    else:
        formatter = logging.Formatter(TEXT_FORMAT)
    handler.setFormatter(formatter)
    root = logging.getLogger()
    for h in list(root.handlers):
        root.removeHandler(h)
    root.addHandler(handler)
    root.setLevel(level.upper())
