"""Knobs of the agents app (environment variables, documented in .env.example). Read through
`getattr(settings, ...)` so tests can override them with pytest-django's `settings` fixture."""

import environ
from django.conf import settings

_env = environ.Env()

DEFAULTS = {
    # HS256 signing key for agent JWTs; empty = derived from SECRET_KEY.
    "AGENT_JWT_SECRET": _env.str("AGENT_JWT_SECRET", default=""),
    "AGENT_ACCESS_TOKEN_TTL": _env.int("AGENT_ACCESS_TOKEN_TTL", default=3600),
    "AGENT_REFRESH_TOKEN_TTL": _env.int("AGENT_REFRESH_TOKEN_TTL", default=30 * 24 * 3600),
    "AGENT_HEARTBEAT_INTERVAL": _env.int("AGENT_HEARTBEAT_INTERVAL", default=30),
}


def get(name: str):
    return getattr(settings, name, DEFAULTS[name])
