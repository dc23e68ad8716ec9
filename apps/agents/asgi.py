"""A gate in front of Django for `POST /api/v1/auth/login` and `/refresh`: a request that would be refused
anyway (its client address is over its throttle, or this process already works on as many logins as it hashes
and lets wait, `auth.login_capacity()`) gets its 429 here, from ASGI, for a fraction of what Django's
middleware and a request thread cost, so a login flood (even from many addresses) cannot take the web process
from other agents. Counting and the real decision stay in the views (`apps.agents.auth.login`, the refresh
view); this only reads. Mounted in wxcs/asgi.py."""

from apps.agents import auth
from apps.core import ratelimit
from apps.core.security import Posture

PATHS = {"/api/v1/auth/login": "login", "/api/v1/auth/refresh": "refresh"}


def with_login_gate(app):
    """`app`, with hopeless logins and refreshes answered 429 before Django."""
    logins_in_progress = 0
    posture = Posture()

    async def http(scope, receive, send):
        nonlocal logins_in_progress
        kind = PATHS.get(scope["path"].rstrip("/")) if scope["type"] == "http" and scope["method"] == "POST" else None
        if kind is None:
            await app(scope, receive, send)
            return
        headers = {name.decode("latin-1").lower(): value.decode("latin-1") for name, value in scope["headers"]}
        secure, refusal = posture.check(scope, headers)
        if refusal is not None:  # a bad Host, or plain HTTP under SECURE_SSL_REDIRECT: Django's middleware answers
            await app(scope, receive, send)
            return

        async def too_many(refused: auth.Throttled) -> None:
            body = {"detail": refused.detail, "code": refused.code}
            await posture.answer(send, 429, body, {"Retry-After": str(refused.retry_after)}, secure)

        if kind == "login":
            if logins_in_progress >= auth.login_capacity():
                await too_many(auth.login_busy())
                return
            logins_in_progress += 1  # before any await: a burst arriving at once is counted as it comes
        try:
            forwarded = headers.get("x-forwarded-for", "")
            address = ratelimit.address((scope.get("client") or [None])[0], forwarded)
            refused = await auth.refused_early(kind, address)
            if refused is not None:
                await too_many(refused)
            else:
                await app(scope, receive, send)
        finally:
            logins_in_progress -= kind == "login"

    return http
