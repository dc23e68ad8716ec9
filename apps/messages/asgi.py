"""ASGI fast path for `POST /api/v1/messages`: the same handler as the Django view
(`api.handle_ingest`) without Django's request/response objects and middleware stack (each
MiddlewareMixin middleware costs a thread hop per request under ASGI). Everything else goes to Django.
Wired by wxcs/asgi.py through `wrap_http(app)`.
"""

import json
from urllib.parse import parse_qs

INGEST_PATHS = ("/api/v1/messages", "/api/v1/messages/")


def wrap_http(app):
    async def http(scope, receive, send):
        if scope["type"] == "http" and scope["method"] == "POST" and scope["path"] in INGEST_PATHS:
            await ingest(scope, receive, send)
        else:
            await app(scope, receive, send)

    return http


async def ingest(scope, receive, send):
    from django.conf import settings

    from apps.messages.api import handle_ingest

    headers = {name.decode("latin-1").lower(): value.decode("latin-1") for name, value in scope["headers"]}
    max_bytes = settings.INGEST_MAX_BODY_BYTES
    declared = headers.get("content-length")
    if declared and declared.isdigit() and int(declared) > max_bytes:
        status, payload, extra = 413, {"detail": f"request body larger than {max_bytes} bytes", "code": "too_large"}, {}
    else:
        chunks, size, more = [], 0, True
        while more:
            event = await receive()
            if event["type"] == "http.disconnect":
                return
            chunk = event.get("body", b"")
            size += len(chunk)
            if size <= max_bytes + 1:
                chunks.append(chunk)
            more = event.get("more_body", False)
        query = parse_qs(scope.get("query_string", b"").decode("latin-1"))
        status, payload, extra = await handle_ingest(
            headers.get("authorization", ""), b"".join(chunks), str(size), (query.get("wait") or [None])[0], fast=True
        )
    body = json.dumps(payload, ensure_ascii=False).encode()
    response_headers = [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]
    response_headers += [(name.lower().encode("latin-1"), value.encode("latin-1")) for name, value in extra.items()]
    await send({"type": "http.response.start", "status": status, "headers": response_headers})
    await send({"type": "http.response.body", "body": body})
