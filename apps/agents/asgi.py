"""A gate in front of Django for `POST /api/v1/auth/login` and `/refresh`: a request that would be refused
anyway (its client address is over its throttle, or this process already works on as many logins as it hashes
and lets wait, `auth.login_capacity()`) gets its 429 here, from ASGI, for a fraction of what Django's
middleware and a request thread cost, so a login flood (even from many addresses) cannot take the web process
from other agents. Counting and the real decision stay in the views (`apps.agents.auth.login`, the refresh
view); this only reads. Mounted in wxcs/asgi.py."""

import json

from apps.agents import auth
from apps.core import ratelimit

PATHS = {"/api/v1/auth/login": "login", "/api/v1/auth/refresh": "refresh"}


def with_login_gate(app):
    """`app`, with hopeless logins and refreshes answered 429 before Django."""
    logins_in_progress = 0

    async def http(scope, receive, send):
        nonlocal logins_in_progress
        kind = PATHS.get(scope["path"].rstrip("/")) if scope["type"] == "http" and scope["method"] == "POST" else None
        if kind is None:
            await app(scope, receive, send)
            return
        if kind == "login":
            if logins_in_progress >= auth.login_capacity():
                await _too_many(send, auth.login_busy())
                return
            logins_in_progress += 1  # before any await: a burst arriving at once is counted as it comes
        try:
            headers = dict(scope.get("headers") or [])
            forwarded = headers.get(b"x-forwarded-for", b"").decode("latin-1")
            address = ratelimit.address((scope.get("client") or [None])[0], forwarded)
            refused = await auth.refused_early(kind, address)
            if refused is not None:
                await _too_many(send, refused)
            else:
                await app(scope, receive, send)
        finally:
            logins_in_progress -= kind == "login"

    return http


async def _too_many(send, refused: auth.Throttled) -> None:
    body = json.dumps({"detail": refused.detail, "code": refused.code}).encode()
    headers = [
        (b"content-type", b"application/json"),
        (b"content-length", str(len(body)).encode()),
        (b"retry-after", str(refused.retry_after).encode()),
    ]
    await send({"type": "http.response.start", "status": 429, "headers": headers})
    await send({"type": "http.response.body", "body": body})
