"""Trace ids that follow one customer message from ingest through rules, retrieval, provider calls and
delivery: the plumbing every app logs under. (Where the lines of a trace are kept and shown is
monitoring's: `apps.monitoring.tracing`.)

- `trace_id_var`: the current trace id (a contextvar: it follows asyncio tasks and `aio.run` calls);
- `bind(trace_id)`: `with bind(message.trace_id): ...`;
- `TraceIdFilter`: `record.trace_id` on every log record ("-" when none), wired in settings.LOGGING;
- `JsonFormatter`: one JSON object per line when `LOG_JSON=true`.

Imported while logging is configured (before the app registry is ready): no models, no settings.
"""

import json
import logging
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from datetime import UTC, datetime

trace_id_var: ContextVar[str] = ContextVar("wxcs_trace_id", default="")
NO_TRACE = "-"


def new_trace_id() -> str:
    return uuid.uuid4().hex


def current_trace_id() -> str:
    return trace_id_var.get()


def normalize(trace_id) -> str:
    """UUIDs (objects or strings, with or without dashes) as 32 hex digits; anything else as is."""
    if isinstance(trace_id, uuid.UUID):
        return trace_id.hex
    try:
        return uuid.UUID(str(trace_id)).hex
    except ValueError:
        return str(trace_id)


@contextmanager
def bind(trace_id=None) -> Iterator[str]:
    """Run a block under `trace_id` (a str or UUID; None = a new one); restores the previous id after."""
    value = normalize(trace_id) if trace_id else new_trace_id()
    token = trace_id_var.set(value)
    try:
        yield value
    finally:
        trace_id_var.reset(token)


class TraceIdFilter(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        if not getattr(record, "trace_id", None):
            record.trace_id = trace_id_var.get() or NO_TRACE
        return True


def record_to_dict(record: logging.LogRecord) -> dict:
    data = {
        "ts": datetime.fromtimestamp(record.created, tz=UTC).isoformat(timespec="milliseconds"),
        "level": record.levelname,
        "logger": record.name,
        "message": record.getMessage(),
        "trace_id": getattr(record, "trace_id", NO_TRACE),
        "process": record.process,
    }
    if record.exc_info:
        data["exc"] = logging.Formatter().formatException(record.exc_info)
    return data


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        return json.dumps(record_to_dict(record), ensure_ascii=False, default=str)
