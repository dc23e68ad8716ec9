"""`POST /api/v1/messages`: the REST door of ingest, served straight from ASGI (mounted in wxcs/asgi.py).

Django's request/response cycle is skipped on purpose: under ASGI every MiddlewareMixin middleware costs a
thread hop per request (5.7 → 1.8 ms of server CPU per message, bench/README.md issue 3). The endpoint is
documented in the OpenAPI schema from the same validator models (apps.messages.openapi).
"""

import asyncio
import contextlib
from urllib.parse import parse_qs

from channels.layers import get_channel_layer
from django.conf import settings

from apps.agents import auth
from apps.core.db import run_db
from apps.core.inputs import InputRefused, load_json
from apps.core.security import Posture
from apps.messages import ingest, outbox, selectors
from apps.messages.validation import Invalid, validate

PATHS = ("/api/v1/messages", "/api/v1/messages/")
Answer = tuple[int, dict, dict]  # status, JSON body, extra headers


def with_ingest_endpoint(app):
    """`app`, with POST /api/v1/messages answered here (with the Host check and security headers of the rest)."""
    posture = Posture()

    async def http(scope, receive, send):
        if scope["type"] == "http" and scope["method"] == "POST" and scope["path"] in PATHS:
            await endpoint(scope, receive, send, posture)
        else:
            await app(scope, receive, send)

    return http


async def endpoint(scope, receive, send, posture: Posture) -> None:
    headers = {name.decode("latin-1").lower(): value.decode("latin-1") for name, value in scope["headers"]}
    declared = headers.get("content-length", "")
    secure, refusal = posture.check(scope, headers)
    if refusal is not None:
        answer = refusal
    elif declared.isdigit() and int(declared) > settings.INGEST_MAX_BODY_BYTES:
        answer = _too_large()
    else:
        body = await _read_body(receive)
        if body is None:
            return  # the client went away
        query = parse_qs(scope.get("query_string", b"").decode("latin-1"))
        answer = await handle(headers.get("authorization", ""), body, (query.get("wait") or [None])[0])
    await posture.answer(send, *answer, secure)


async def _read_body(receive) -> bytes | None:
    """The body, or None if the client disconnected; reading stops storing past the size limit."""
    chunks, size, more = [], 0, True
    while more:
        event = await receive()
        if event["type"] == "http.disconnect":
            return None
        chunk = event.get("body", b"")
        size += len(chunk)
        if size <= settings.INGEST_MAX_BODY_BYTES + 1:
            chunks.append(chunk)
        more = event.get("more_body", False)
    return b"".join(chunks)


def _error(status: int, detail, code: str, headers: dict | None = None) -> Answer:
    return status, {"detail": detail, "code": code}, headers or {}


def _too_large() -> Answer:
    return _error(413, f"request body larger than {settings.INGEST_MAX_BODY_BYTES} bytes", "too_large")


async def handle(authorization: str, body: bytes, wait_param: str | None) -> Answer:
    try:
        identity = await auth.authenticate_token(auth.bearer(authorization))
    except auth.AuthError as exc:
        return _error(401, exc.detail, exc.code, {"WWW-Authenticate": 'Bearer realm="agent"'})
    try:
        data = load_json(body, settings.INGEST_MAX_BODY_BYTES)
    except InputRefused as exc:
        return _error(exc.status, str(exc), exc.code)
    if not isinstance(data, dict):
        return _error(400, {"non_field_errors": ["Expected a JSON object."]}, "invalid")
    item = data.get("message", data if "content" in data else None)
    if item is None:
        return _error(400, {"message": ["This field is required."]}, "invalid")
    try:
        item = validate(item)
    except Invalid as exc:
        return _error(400, {"message": exc.errors}, exc.code)
    try:
        wait = _wait_seconds(wait_param)
    except ValueError:
        return _error(400, {"wait": [f"between 0 and {settings.INGEST_MAX_WAIT} seconds"]}, "invalid")
    try:
        accepted = (await ingest.ingest(identity.agent_id, [item], announce=bool(wait)))[0]
    except ingest.Throttled as exc:
        return _error(429, str(exc), "throttled", {"Retry-After": str(exc.retry_after)})
    if not wait:
        return 202, accepted.as_dict(), {}
    decided = await wait_for_decision(accepted.message_id, wait)
    if decided["reply_id"] is not None:
        return 200, decided, {}
    return 202, {**accepted.as_dict(), **decided, "status": "processing"}, {}


def _wait_seconds(value: str | None) -> float:
    if value is None:
        return 0.0
    wait = float(value)
    if not 0 <= wait <= settings.INGEST_MAX_WAIT:
        raise ValueError(value)
    return wait


async def wait_for_decision(message_id: int, seconds: float) -> dict:
    """Listen first, then look, then wait: no thread is held while waiting. Redis (the channel layer) away: look
    once and answer (the message is queued once Redis is back)."""
    layer = get_channel_layer()
    try:
        async with asyncio.timeout(settings.REDIS_OPTIONAL_TIMEOUT):
            channel = await layer.new_channel()
            await layer.group_add(outbox.message_group(message_id), channel)
    except Exception:
        return await run_db(selectors.decision, message_id)
    announced = asyncio.ensure_future(layer.receive(channel))
    try:
        decided = await run_db(selectors.decision, message_id)
        if decided["reply_id"] is None:
            await asyncio.wait({announced}, timeout=seconds)
            decided = await run_db(selectors.decision, message_id)
        return decided
    finally:
        announced.cancel()  # also ends the channel's subscription
        with contextlib.suppress(Exception):  # Redis away: the membership ends with the subscription anyway
            async with asyncio.timeout(settings.REDIS_OPTIONAL_TIMEOUT):
                await layer.group_discard(outbox.message_group(message_id), channel)
