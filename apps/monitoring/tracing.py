"""Trace ids that follow one customer message from ingest through rules, retrieval, provider calls and delivery.

- `trace_id_var`: the current trace id (a contextvar, so it follows asyncio tasks and `aio.run` calls
  that copy the context);
- `bind(trace_id)`: context manager that sets it for a block (`with bind(message.trace_id): ...`);
- `TraceIdFilter`: puts `record.trace_id` on every log record ("-" when none), wired in settings.LOGGING;
- `JsonFormatter`: one JSON object per line when `LOG_JSON=true`;
- `TraceStoreHandler`: keeps the log lines of each trace in a bounded Redis list (TRACE_MAX_EVENTS,
  TRACE_TTL), written in the background by `writer` (TRACE_FLUSH_SECONDS), read back by
  `events(trace_id)` for the admin trace view.

This module is imported while logging is configured (before the app registry is ready): no models here.
"""

import atexit
import json
import logging
import os
import threading
import time
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


def trace_key(trace_id: str) -> str:
    return f"monitoring:trace:{trace_id}"


_guard = threading.local()


class TraceStoreHandler(logging.Handler):
    """Queues records that carry a trace id for that trace's bounded list in the cache's Redis; the
    process's trace writer stores them in the background (see TraceWriter)."""

    def emit(self, record: logging.LogRecord) -> None:
        trace_id = getattr(record, "trace_id", NO_TRACE)
        if trace_id == NO_TRACE or getattr(_guard, "busy", False) or record.name.startswith(("redis", "django_redis")):
            return
        try:
            writer.put(normalize(trace_id), json.dumps(record_to_dict(record), ensure_ascii=False, default=str))
        except Exception:  # logging must never break the caller
            self.handleError(record)


class TraceWriter:
    """One background thread per process writes the queued trace lines every TRACE_FLUSH_SECONDS, all
    traces in one Redis pipeline: a decision's log line costs an append to a list instead of a Redis
    round trip on the hot path. Bounded (TRACE_BUFFER_MAX, oldest dropped) so a Redis outage cannot
    grow memory; `flush()` writes synchronously (readers in this process, process exit)."""

    def __init__(self):
        self._lock = threading.Lock()
        self._pending: list[tuple[str, str]] = []
        self._pid = None
        self.dropped = 0

    def put(self, trace_id: str, payload: str) -> None:
        from django.conf import settings

        with self._lock:
            if self._pid != os.getpid():  # first use, or a forked child: the parent's thread is not here
                self._pending, self._pid = [], os.getpid()
                threading.Thread(target=self._run, name="trace-writer", daemon=True).start()
            self._pending.append((trace_id, payload))
            overflow = len(self._pending) - settings.TRACE_BUFFER_MAX
            if overflow > 0:
                del self._pending[:overflow]
                self.dropped += overflow

    def _run(self) -> None:
        from django.conf import settings

        while True:
            time.sleep(settings.TRACE_FLUSH_SECONDS)
            try:
                self.flush()
            except Exception:  # Redis away: these lines are lost, the next ones are tried again
                logging.getLogger(__name__).warning("trace lines not stored", exc_info=True)

    def flush(self) -> None:
        with self._lock:
            batch, self._pending = self._pending, []
        if not batch:
            return
        _guard.busy = True  # the store's own client logging must not queue more lines
        try:
            store_events(batch)
        finally:
            _guard.busy = False


writer = TraceWriter()
atexit.register(writer.flush)


def store_events(batch: list[tuple[str, str]]) -> None:
    """Append (trace id, JSON line) pairs to their traces, keeping the newest TRACE_MAX_EVENTS of each."""
    from django.conf import settings

    by_trace: dict[str, list[str]] = {}
    for trace_id, payload in batch:
        by_trace.setdefault(trace_id, []).append(payload)
    client = redis_client()
    if client is not None:
        pipe = client.pipeline(transaction=False)
        for trace_id, payloads in by_trace.items():
            key = _redis_key(trace_id)
            pipe.rpush(key, *payloads)
            pipe.ltrim(key, -settings.TRACE_MAX_EVENTS, -1)
            pipe.expire(key, settings.TRACE_TTL)
        pipe.execute()
        return
    from django.core.cache import cache

    for trace_id, payloads in by_trace.items():
        items = [*cache.get(trace_key(trace_id), []), *payloads][-settings.TRACE_MAX_EVENTS :]
        cache.set(trace_key(trace_id), items, settings.TRACE_TTL)


def events(trace_id: str) -> list[dict]:
    """The stored log lines of one trace, oldest first (this process's queued lines included; another
    process's appear within TRACE_FLUSH_SECONDS)."""
    writer.flush()
    trace_id = normalize(trace_id)
    client = redis_client()
    if client is not None:
        raw = client.lrange(_redis_key(trace_id), 0, -1)
    else:
        from django.core.cache import cache

        raw = cache.get(trace_key(trace_id), [])
    return [json.loads(item) for item in raw]


def redis_client():
    from django.core.cache import cache

    if not hasattr(cache, "client") or not hasattr(cache.client, "get_client"):
        return None
    return cache.client.get_client(write=True)


def _redis_key(trace_id: str) -> str:
    from django.core.cache import cache

    return cache.make_key(trace_key(trace_id))
