"""`/ws/agent/`: the agent's WebSocket (protocol in apps/messages/PROTOCOL.md).

Auth: `Authorization: Bearer <access token>` on the handshake, or a first frame
`{"type": "auth", "token": …}` within AUTH_TIMEOUT seconds (never the query string). A bad, expired
or missing token closes the socket with code 4401.
"""

import asyncio
import contextlib
import json
import logging

from channels.db import database_sync_to_async
from channels.generic.websocket import AsyncWebsocketConsumer
from django.conf import settings

from apps.agents import auth
from apps.agents import services as agent_services
from apps.messages import aingest, ingest, services
from apps.messages.api import store_messages

logger = logging.getLogger("wxcs.ws")

AUTH_TIMEOUT = 10
CLOSE_UNAUTHORIZED = 4401
CLOSE_POLICY = 4400


def _thread(func):
    return database_sync_to_async(func, thread_sensitive=False)


class AgentConsumer(AsyncWebsocketConsumer):
    agent_id: str | None = None
    group: str | None = None

    async def connect(self):
        self.sent_ids: set[int] = set()
        self._auth_timer = None
        await self.accept()
        headers = dict(self.scope.get("headers") or [])
        token = auth.bearer(headers.get(b"authorization"))
        if token:
            await self._authenticate(token)
        else:
            self._auth_timer = asyncio.get_running_loop().call_later(
                AUTH_TIMEOUT, lambda: asyncio.ensure_future(self._deny("authentication timeout"))
            )

    async def _deny(self, detail: str, code: str = "unauthorized"):
        if self.agent_id is None:
            await self._send({"type": "error", "code": code, "detail": detail})
            await self.close(code=CLOSE_UNAUTHORIZED)

    async def _authenticate(self, token: str) -> None:
        try:
            identity = await auth.aauthenticate_token(token)
        except auth.AuthError as exc:
            await self._send({"type": "error", "code": exc.code, "detail": exc.detail})
            await self.close(code=CLOSE_UNAUTHORIZED)
            return
        if self._auth_timer:
            self._auth_timer.cancel()
        self.agent_id = identity.agent_id
        self.group = services.agent_group(self.agent_id)
        await self.channel_layer.group_add(self.group, self.channel_name)
        await _thread(agent_services.touch)(self.agent_id, "online")
        await self._send(
            {"type": "hello", "agent_id": self.agent_id, "heartbeat_interval": await _thread(self._interval)()}
        )
        # every unacked reply, oldest first; ids remembered so a concurrent live push is not doubled
        backlog = await _thread(services.outbox)(self.agent_id)
        if backlog:
            for frame in backlog:
                self.sent_ids.add(frame["reply_id"])
                await self._send(frame)
            await self._mark_sent([f["reply_id"] for f in backlog])

    def _interval(self) -> int:
        from apps.agents.models import Agent

        return Agent.objects.filter(pk=self.agent_id).values_list("heartbeat_interval", flat=True).first() or 30

    async def disconnect(self, code):
        if self._auth_timer:
            self._auth_timer.cancel()
        if self.group:
            await self.channel_layer.group_discard(self.group, self.channel_name)
            with contextlib.suppress(Exception):  # last-seen is best effort on the way out
                await _thread(agent_services.touch)(self.agent_id)

    async def _send(self, frame: dict) -> None:
        await self.send(text_data=json.dumps(frame, ensure_ascii=False))

    # --- inbound frames ---------------------------------------------------------------------------
    async def receive(self, text_data=None, bytes_data=None):
        raw = text_data if text_data is not None else (bytes_data or b"").decode("utf-8", "replace")
        if len(raw.encode("utf-8")) > settings.INGEST_MAX_BODY_BYTES * 4:
            await self._send({"type": "error", "code": "too_large", "detail": "frame too large"})
            return
        try:
            frame = json.loads(raw)
        except ValueError:
            await self._send({"type": "error", "code": "malformed", "detail": "frame is not JSON"})
            return
        if not isinstance(frame, dict):
            await self._send({"type": "error", "code": "malformed", "detail": "frame must be an object"})
            return
        kind = frame.get("type")
        if self.agent_id is None:
            if kind == "auth":
                await self._authenticate(str(frame.get("token") or ""))
            else:
                await self._deny('authenticate first: {"type": "auth", "token": …}')
            return
        handler = getattr(self, f"on_{kind}", None) if isinstance(kind, str) and kind.isidentifier() else None
        if handler is None:
            await self._send({"type": "error", "code": "unknown_type", "detail": f"unknown frame type {kind!r}"})
            return
        try:
            await handler(frame)
        except ingest.IngestError as exc:
            error = {"type": "error", "code": exc.code, "detail": exc.detail, "client_id": frame.get("client_id")}
            if exc.retry_after:
                error["retry_after"] = exc.retry_after
            await self._send(error)
        except Exception:
            logger.exception("agent %s: frame %r failed", self.agent_id, kind)
            await self._send({"type": "error", "code": "server_error", "detail": "internal error, retry later"})

    async def on_ping(self, frame):
        await self._send({"type": "pong", "ts": frame.get("ts")})

    async def on_auth(self, frame):
        await self._send({"type": "error", "code": "already_authenticated", "detail": "already authenticated"})

    async def on_message(self, frame):
        item = frame.get("message", frame)
        clean = ingest.validate(item)
        client_id = clean.client_msg_id or (item.get("id") if isinstance(item, dict) else None)
        if clean.errors:
            await self._send({"type": "error", "code": "invalid", "client_id": client_id, "detail": clean.errors})
            return
        accepted = (await store_messages(self.agent_id, [clean], fast=True))[0]
        await self._send({"type": "accepted", **accepted.as_dict()})

    async def on_messages(self, frame):
        """Batch: {"type": "messages", "messages": [...]} → one `accepted_batch` frame."""
        items = frame.get("messages")
        if not isinstance(items, list) or not items:
            raise ingest.IngestError({"messages": ["Expected a non-empty list."]})
        if len(items) > settings.INGEST_MAX_BATCH:
            raise ingest.IngestError(f"at most {settings.INGEST_MAX_BATCH} messages per batch", "too_large")
        good, errors = [], []
        for item in items:
            clean = ingest.validate(item)
            if clean.errors:
                errors.append({"client_id": clean.client_msg_id or None, "detail": clean.errors})
            else:
                good.append(clean)
        accepted = await store_messages(self.agent_id, good, fast=True) if good else []
        await self._send({"type": "accepted_batch", "accepted": [a.as_dict() for a in accepted], "errors": errors})

    async def on_ack(self, frame):
        try:
            if aingest.available():
                status, reply_id = frame.get("status"), frame.get("reply_id")
                if status not in ("delivered", "failed"):
                    raise services.AckError("status must be delivered or failed")
                if isinstance(reply_id, bool) or not isinstance(reply_id, int | str) or not str(reply_id).isdigit():
                    raise services.AckError("reply_id must be an integer")
                result = await aingest.ack(self.agent_id, int(reply_id), status, str(frame.get("error") or ""))
            else:
                result = await _thread(services.ack)(
                    self.agent_id, frame.get("reply_id"), frame.get("status"), str(frame.get("error") or "")
                )
        except services.AckError as exc:
            raise ingest.IngestError(str(exc)) from exc
        except LookupError:
            await self._send(
                {"type": "error", "code": "not_found", "reply_id": frame.get("reply_id"), "detail": "no such reply"}
            )
            return
        await self._send({"type": "acked", **result})

    async def on_heartbeat(self, frame):
        data = frame.get("data", frame)
        result = await _thread(agent_services.record_heartbeat)(self.agent_id, data if isinstance(data, dict) else {})
        await self._send({"type": "heartbeat_ok", **result})

    async def on_takeover(self, frame):
        chat = str(frame.get("chat") or frame.get("chat_name") or "")
        active = frame.get("active", True) is not False
        found = await _thread(services.agent_takeover)(self.agent_id, chat, active)
        await self._send({"type": "takeover_ok", "chat": chat, "active": active, "found": found})

    # --- channel-layer events ---------------------------------------------------------------------
    async def agent_frame(self, event):
        await self._send(event["frame"])

    async def reply_push(self, event):
        frame = event["frame"]
        if frame["reply_id"] in self.sent_ids:
            return
        self.sent_ids.add(frame["reply_id"])
        await self._send(frame)
        await self._mark_sent([frame["reply_id"]])

    async def _mark_sent(self, reply_ids: list[int]) -> None:
        if aingest.available():
            await aingest.mark_sent(self.agent_id, reply_ids)
        else:
            await _thread(services.mark_sent)(self.agent_id, reply_ids)
