"""Knobs of the message pipeline (environment variables, documented in .env.example). Read through
`get()` = `getattr(settings, NAME, default)` so tests can override them with the `settings` fixture."""

import environ
from django.conf import settings

_env = environ.Env()

DEFAULTS = {
    # Replies below this confidence wait for a supervisor instead of being sent.
    "REVIEW_CONFIDENCE_THRESHOLD": _env.float("REVIEW_CONFIDENCE_THRESHOLD", default=0.6),
    # Ingest limits.
    "MESSAGE_MAX_CHARS": _env.int("MESSAGE_MAX_CHARS", default=4000),
    "INGEST_MAX_BODY_BYTES": _env.int("INGEST_MAX_BODY_BYTES", default=256 * 1024),
    "INGEST_MAX_BATCH": _env.int("INGEST_MAX_BATCH", default=200),
    # Per-agent throttle: messages per window (0 = off).
    "INGEST_RATE_LIMIT": _env.int("INGEST_RATE_LIMIT", default=1200),
    "INGEST_RATE_WINDOW": _env.int("INGEST_RATE_WINDOW", default=60),
    # Async PostgreSQL connections per web process for the ingest fast path.
    "INGEST_DB_POOL": _env.int("INGEST_DB_POOL", default=10),
    "INGEST_MAX_WAIT": _env.int("INGEST_MAX_WAIT", default=30),
    # In a group chat only messages that @ the agent are answered (others are recorded, ignored).
    "GROUP_REPLY_REQUIRES_AT": _env.bool("GROUP_REPLY_REQUIRES_AT", default=True),
    # Conversation lock (decisions of one chat in arrival order); must exceed one decision's time.
    "PIPELINE_LOCK_TTL": _env.int("PIPELINE_LOCK_TTL", default=120),
    # Beat re-enqueues messages left undecided this long (crashed worker, lost task).
    "PIPELINE_SWEEP_AFTER": _env.int("PIPELINE_SWEEP_AFTER", default=120),
    "PIPELINE_HISTORY_TURNS": _env.int("PIPELINE_HISTORY_TURNS", default=10),
    "PIPELINE_ENGINE_TIMEOUT": _env.float("PIPELINE_ENGINE_TIMEOUT", default=90.0),
    # Dotted path of one engine class for every message, bypassing the engine manager (benchmarks, e2e
    # tests: e.g. apps.messages.testing.EchoEngine). Empty in production.
    "PIPELINE_ENGINE_CLASS": _env.str("PIPELINE_ENGINE_CLASS", default=""),
    "PIPELINE_MAX_RETRIES": _env.int("PIPELINE_MAX_RETRIES", default=5),
}


def get(name: str):
    return getattr(settings, name, DEFAULTS[name])
