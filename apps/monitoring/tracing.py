"""The lines of each trace, kept for the admin trace view (trace ids themselves: `apps.core.tracing`).

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

from apps.core import redis
from apps.core.tracing import NO_TRACE, normalize, record_to_dict


def trace_key(trace_id: str) -> str:
    return redis.key("monitoring", "trace", trace_id)


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
    pipe = redis.client().pipeline(transaction=False)
    for trace_id, payloads in by_trace.items():
        key = trace_key(trace_id)
        pipe.rpush(key, *payloads)
        pipe.ltrim(key, -settings.TRACE_MAX_EVENTS, -1)
        pipe.expire(key, settings.TRACE_TTL)
    pipe.execute()


def events(trace_id: str) -> list[dict]:
    """The stored log lines of one trace, oldest first (this process's queued lines included; another
    process's appear within TRACE_FLUSH_SECONDS)."""
    writer.flush()
    return [json.loads(item) for item in redis.client().lrange(trace_key(normalize(trace_id)), 0, -1)]
