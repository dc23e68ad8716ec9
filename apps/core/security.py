"""The HTTP security posture of an ASGI door that Django's middleware never sees (the ingest endpoint,
apps.messages.asgi; the login gate, apps.agents.asgi): the Host check, the HTTPS redirect and the security
headers that SecurityMiddleware, XFrameOptionsMiddleware and django-csp's CSPMiddleware give every other response
— computed once from the same settings when the door is mounted, with Django's own Host and scheme logic per
request.
"""

import json
import re

from django.conf import settings
from django.core.exceptions import DisallowedHost
from django.http import HttpRequest

Headers = list[tuple[bytes, bytes]]


class ScopeRequest(HttpRequest):
    """Just enough of a request on an ASGI scope for Django's `get_host()` and `is_secure()` (which honour
    ALLOWED_HOSTS, DEBUG, USE_X_FORWARDED_HOST and SECURE_PROXY_SSL_HEADER)."""

    def __init__(self, scope: dict, headers: dict[str, str]):
        super().__init__()
        self.path = scope["path"]
        self.META = {"HTTP_" + name.upper().replace("-", "_"): value for name, value in headers.items()}
        server = scope.get("server") or ("", "")
        self.META["SERVER_NAME"], self.META["SERVER_PORT"] = str(server[0] or ""), str(server[1] or "")
        self._scope_scheme = scope.get("scheme", "http")

    def _get_scheme(self) -> str:
        return self._scope_scheme


class Posture:
    """What a Django response would have had: `check()` per request, then `headers(secure)` on the response."""

    def __init__(self):
        from csp.utils import build_policy

        common = [("X-Frame-Options", settings.X_FRAME_OPTIONS.upper())]
        if settings.SECURE_CONTENT_TYPE_NOSNIFF:
            common.append(("X-Content-Type-Options", "nosniff"))
        if settings.SECURE_REFERRER_POLICY:
            policy = settings.SECURE_REFERRER_POLICY
            common.append(("Referrer-Policy", policy if isinstance(policy, str) else ",".join(policy)))
        if settings.SECURE_CROSS_ORIGIN_OPENER_POLICY:
            common.append(("Cross-Origin-Opener-Policy", settings.SECURE_CROSS_ORIGIN_OPENER_POLICY))
        if csp := build_policy():  # no nonce: a JSON answer runs nothing
            common.append(("Content-Security-Policy", csp))
        self.plain = encode(common)
        self.secure = self.plain
        if settings.SECURE_HSTS_SECONDS:
            hsts = f"max-age={settings.SECURE_HSTS_SECONDS}"
            hsts += "; includeSubDomains" if settings.SECURE_HSTS_INCLUDE_SUBDOMAINS else ""
            hsts += "; preload" if settings.SECURE_HSTS_PRELOAD else ""
            self.secure = self.plain + encode([("Strict-Transport-Security", hsts)])
        self.redirect_exempt = settings.SECURE_REDIRECT_EXEMPT

    def check(self, scope: dict, headers: dict[str, str]) -> tuple[bool, tuple[int, dict, dict] | None]:
        """(secure, refusal): refusal is None, or (status, {detail, code}, extra headers) — 400 for a Host not in
        ALLOWED_HOSTS, a 301 to https where SECURE_SSL_REDIRECT sends plain HTTP away."""
        request = ScopeRequest(scope, headers)
        secure = request.is_secure()
        try:
            host = request.get_host()
        except DisallowedHost:
            return secure, (400, {"detail": "Invalid HTTP_HOST header", "code": "disallowed_host"}, {})
        if settings.SECURE_SSL_REDIRECT and not secure and not self._exempt(request.path):
            location = f"https://{settings.SECURE_SSL_HOST or host}{request.path}"
            return False, (301, {"detail": f"use {location}", "code": "https_required"}, {"Location": location})
        return secure, None

    def _exempt(self, path: str) -> bool:
        return any(re.search(pattern, path.lstrip("/")) for pattern in self.redirect_exempt)

    def headers(self, secure: bool) -> Headers:
        return self.secure if secure else self.plain

    async def answer(self, send, status: int, payload: dict, extra: dict, secure: bool) -> None:
        """A JSON response from the door, with `extra` headers and the security headers."""
        data = json.dumps(payload, ensure_ascii=False).encode()
        headers = [(b"content-type", b"application/json"), (b"content-length", str(len(data)).encode())]
        headers += encode(list(extra.items())) + self.headers(secure)
        await send({"type": "http.response.start", "status": status, "headers": headers})
        await send({"type": "http.response.body", "body": data})


def encode(pairs: list[tuple[str, str]]) -> Headers:
    return [(name.lower().encode("latin-1"), value.encode("latin-1")) for name, value in pairs]
