"""`/ws/agent/`: the agent's WebSocket (protocol in apps/messages/PROTOCOL.md). Thin: each frame type calls
ingest, the outbox or the agents app.

Auth: `Authorization: Bearer <access token>` on the handshake, or a first frame
`{"type": "auth", "token": …}` within AUTH_TIMEOUT seconds (never the query string). A bad, expired
or missing token closes the socket with code 4401 (4403 for a disabled agent, 4409 for a rotated secret).
While open, the socket is closed (an `error` frame, then the close code of `agents.services.CLOSE_CODES`)
when its access token expires (4419), and when the agent is disabled (4403) or its secret rotated (4409):
at once through an `agent.revoke` event from the service that made the change, and by a re-check every
AGENT_SOCKET_RECHECK_SECONDS as a backstop (in memory: the versioned cache of enabled agents).

One sending socket per agent (apps/agents/sockets.py): after auth the socket claims the agent's lease. Another
installation's socket holding it: close 4423 (`already_connected`). The same installation: this socket takes
over, every older one closes 4408 (`replaced`) and from that event on passes no reply on.

Input: every frame is decoded by apps.core.inputs.load_json under WS_MAX_MESSAGE_BYTES and JSON_MAX_DEPTH. A
larger frame gets a `too_large` error frame and close code 4413 (Daphne's own limit is set above ours by
apps.core.webserver, so the frame reaches us; beyond that limit Daphne closes with 1009 itself); anything else
refused is an error frame on an open socket.
"""

import asyncio
import contextlib
import json
import logging
import time

from channels.consumer import get_handler_name
from channels.generic.websocket import AsyncWebsocketConsumer
from django.conf import settings

from apps.agents import auth, heartbeat, sockets
from apps.agents import selectors as agent_selectors
from apps.agents import services as agent_services
from apps.core.db import run_db
from apps.core.inputs import InputRefused, TooLarge, load_json, printable
from apps.messages import ingest, outbox, review
from apps.messages.validation import Invalid, validate

logger = logging.getLogger("wxcs.ws")

AUTH_TIMEOUT = 10
CLOSE_UNAUTHORIZED = agent_services.CLOSE_CODES["unauthorized"]
CLOSE_TOO_LARGE = 4413  # like HTTP 413; autobahn lets an application close only with 1000 or 3000-4999
TAKEOVER_CHAT_MAX = 200


class FrameError(Exception):
    def __init__(self, code: str, detail, **extra):
        super().__init__(code)
        self.frame = {"type": "error", "code": code, "detail": detail, **extra}


def _client_id(item) -> str | None:
    """The refused item's client id to echo, when it is a printable string (else the agent goes by `index`)."""
    client_id = item.get("id") if isinstance(item, dict) else None
    try:
        return printable(client_id) if isinstance(client_id, str) else None
    except ValueError:
        return None


class AgentConsumer(AsyncWebsocketConsumer):
    agent_id: str | None = None
    group: str | None = None
    identity: auth.AgentIdentity | None = None
    closed_with: int | None = None  # set once the server decided to close: later frames are dropped
    lease: sockets.Lease | None = None  # this socket is the agent's current one (the only one replies go to)
    _recheck: asyncio.Task | None = None
    _renew: asyncio.Task | None = None

    async def dispatch(self, message):
        # Channels closes stale database connections around every event, a thread hop each (≈ a quarter of the
        # web process's CPU per message, bench/README.md issue 14); this consumer never uses the ORM on the
        # event loop (run_db does, and hands its connection back), so it has nothing to close.
        handler = getattr(self, get_handler_name(message), None)
        if handler is None:
            raise ValueError(f"no handler for message type {message['type']}")
        await handler(message)

    async def connect(self):
        self.backlog_ids: set[int] = set()
        self._auth_timer = None
        await self.accept()
        token = auth.bearer(dict(self.scope.get("headers") or []).get(b"authorization"))
        if token:
            await self._authenticate(token)
        else:
            self._auth_timer = asyncio.get_running_loop().call_later(
                AUTH_TIMEOUT, lambda: asyncio.ensure_future(self._deny("authentication timeout"))
            )

    async def _deny(self, detail: str, code: str = "unauthorized"):
        if self.agent_id is None:
            # An expired token at connect is 4401, as it always was (agents that predate 4419 log in again on it).
            await self._close_with(code, detail, CLOSE_UNAUTHORIZED if code == "token_expired" else None)

    async def _close_with(self, code: str, detail: str, close_code: int | None = None) -> None:
        """An error frame `code`, then the close code for it (4401 for any token problem without its own)."""
        if self.closed_with is not None:
            return
        self.closed_with = close_code or agent_services.CLOSE_CODES.get(code, CLOSE_UNAUTHORIZED)
        for task in (self._recheck, self._renew):
            if task is not None and task is not asyncio.current_task():
                task.cancel()
        with contextlib.suppress(Exception):  # the client may be gone already
            await self._send({"type": "error", "code": code, "detail": detail})
        await self.close(code=self.closed_with)

    async def _authenticate(self, token: str) -> None:
        try:
            identity = await auth.authenticate_token(token)
        except auth.AuthError as exc:
            await self._deny(exc.detail, exc.code)
            return
        if self._auth_timer:
            self._auth_timer.cancel()
        self.identity = identity
        self.agent_id = identity.agent_id
        if not await self._claim_lease():
            return
        self._recheck = asyncio.get_running_loop().create_task(self._recheck_credentials())
        self.group = outbox.agent_group(self.agent_id)
        await self.channel_layer.group_add(self.group, self.channel_name)
        # every older socket of the agent (on any process) closes on this; this one ignores its own generation
        await self.channel_layer.group_send(self.group, {"type": "agent.replaced", "generation": self.lease.generation})
        await run_db(agent_services.socket_opened, self.agent_id, self.channel_name, identity.expires_at)
        interval = await run_db(agent_selectors.heartbeat_interval, self.agent_id)
        await self._send(
            {
                "type": "hello",
                "agent_id": self.agent_id,
                "heartbeat_interval": interval,
                "max_message_bytes": settings.WS_MAX_MESSAGE_BYTES,
                "max_batch": settings.INGEST_MAX_BATCH,
            }
        )
        async for page in outbox.backlog(self.agent_id):  # every unacked reply, oldest first, a page at a time
            self.backlog_ids.update(reply.reply_id for reply in page)
            for reply in page:
                await self._send(reply.frame())
            await outbox.mark_sent(self.agent_id, [reply.reply_id for reply in page])

    async def _claim_lease(self) -> bool:
        """Become the agent's current socket, or close: 4423 while another installation's socket is current."""
        instance = sockets.installation(dict(self.scope.get("headers") or []))
        try:
            self.lease = await sockets.claim(self.agent_id, instance, self.channel_name)
        except Exception:  # Redis is down: no way to know who sends; the agent reconnects (1011 = server failed)
            logger.warning("agent %s: socket lease not claimed", self.agent_id, exc_info=True)
            await self._close_with("server_error", "internal error, retry later", 1011)
            return False
        if self.lease is None:
            logger.warning("agent %s: second installation refused, another one is connected", self.agent_id)
            await self._close_with(
                "already_connected",
                "another agent process with these credentials is connected (another state directory or PC); "
                "only one may send replies",
            )
            return False
        self._renew = asyncio.get_running_loop().create_task(self._renew_lease())
        return True

    async def _renew_lease(self) -> None:
        """Until the socket closes: renew the lease every third of its TTL; lost to another socket: close 4408."""
        while True:
            await asyncio.sleep(settings.AGENT_SOCKET_LEASE_SECONDS / 3)
            try:
                current = await sockets.renew(self.lease)
            except Exception:  # a Redis outage: keep the socket, try again next time
                logger.warning("agent %s: socket lease not renewed", self.agent_id, exc_info=True)
                continue
            if not current:
                await self._close_with("replaced", "another connection of this agent took over")
                return

    async def _recheck_credentials(self) -> None:
        """Until the socket closes: at the token's expiry close 4419; every AGENT_SOCKET_RECHECK_SECONDS check
        that the agent is still enabled with the token's secret version (4403 / 4409)."""
        identity = self.identity
        while True:
            until_expiry = identity.expires_at - time.time()
            await asyncio.sleep(max(0.0, min(settings.AGENT_SOCKET_RECHECK_SECONDS, until_expiry)))
            if time.time() >= identity.expires_at:
                await self._close_with("token_expired", "access token expired; refresh it and reconnect")
                return
            try:
                await auth.check_current(identity.agent_id, identity.secret_version)
            except auth.AuthError as exc:
                await self._close_with(exc.code, exc.detail)
                return
            except Exception:  # the database / Redis failed: keep the socket, check again next time
                logger.warning("agent %s: credential re-check failed", identity.agent_id, exc_info=True)

    async def disconnect(self, code):
        if self._auth_timer:
            self._auth_timer.cancel()
        for task in (self._recheck, self._renew):
            if task is not None:
                task.cancel()
        if self.lease is not None:
            with contextlib.suppress(Exception):  # else it expires after AGENT_SOCKET_LEASE_SECONDS
                await sockets.release(self.lease)
        if self.group:
            await self.channel_layer.group_discard(self.group, self.channel_name)
            try:  # offline now if it was the agent's last socket
                await run_db(agent_services.socket_closed, self.agent_id, self.channel_name)
            except Exception:  # Redis / the database down: presence falls back to 3 silent heartbeat intervals
                logger.warning("agent %s: presence not updated on disconnect", self.agent_id, exc_info=True)

    async def _send(self, frame: dict) -> None:
        await self.send(text_data=json.dumps(frame, ensure_ascii=False))

    # --- inbound frames ---------------------------------------------------------------------------
    async def receive(self, text_data=None, bytes_data=None):
        if self.closed_with is not None:
            return
        if self.identity is not None and time.time() >= self.identity.expires_at:  # between two re-checks
            await self._close_with("token_expired", "access token expired; refresh it and reconnect")
            return
        try:
            frame = self._parse(text_data if text_data is not None else bytes_data or b"")
        except TooLarge as exc:
            await self._send({"type": "error", "code": exc.code, "detail": str(exc)})
            await self.close(code=CLOSE_TOO_LARGE)
            return
        except InputRefused as exc:
            await self._send({"type": "error", "code": exc.code, "detail": str(exc)})
            return
        handler = None
        try:
            if self.agent_id is None:
                await self._before_auth(frame)
                return
            kind = frame.get("type")
            handler = getattr(self, f"on_{kind}", None) if isinstance(kind, str) and kind.isidentifier() else None
            if handler is None:
                raise FrameError("unknown_type", f"unknown frame type {kind!r}"[:200])
            await handler(frame)
        except FrameError as exc:  # `frame`: which frame type the error answers (null for an unknown type)
            await self._send({**exc.frame, "frame": handler.__name__.removeprefix("on_") if handler else None})
        except Exception:
            logger.exception("agent %s: frame failed", self.agent_id)
            await self._send({"type": "error", "code": "server_error", "detail": "internal error, retry later"})

    @staticmethod
    def _parse(raw: str | bytes) -> dict:
        frame = load_json(raw, settings.WS_MAX_MESSAGE_BYTES)
        if not isinstance(frame, dict):
            raise InputRefused("frame must be an object")
        return frame

    async def _before_auth(self, frame: dict) -> None:
        if frame.get("type") == "auth":
            await self._authenticate(str(frame.get("token") or ""))
        else:
            await self._deny('authenticate first: {"type": "auth", "token": …}')

    async def on_ping(self, frame):
        ts = frame.get("ts")
        if not isinstance(ts, int | float) or isinstance(ts, bool):  # echo numbers only: nothing unsendable
            ts = None
        await self._send({"type": "pong", "ts": ts})

    async def on_auth(self, frame):
        raise FrameError("already_authenticated", "already authenticated")

    async def on_message(self, frame):
        item = frame.get("message", frame)
        try:
            message = validate(item)
        except Invalid as exc:
            raise FrameError(exc.code, exc.errors, client_id=_client_id(item)) from exc
        accepted = await self._ingest([message])
        await self._send({"type": "accepted", **accepted[0].as_dict()})

    async def on_messages(self, frame):
        """Batch: {"type": "messages", "messages": [...]} → one `accepted_batch` frame."""
        items = frame.get("messages")
        if not isinstance(items, list) or not items:
            raise FrameError("invalid", {"messages": ["Expected a non-empty list."]})
        if len(items) > settings.INGEST_MAX_BATCH:
            raise FrameError("too_large", f"at most {settings.INGEST_MAX_BATCH} messages per batch")
        good, errors = [], []
        for index, item in enumerate(items):
            try:
                good.append(validate(item))
            except Invalid as exc:
                errors.append({"client_id": _client_id(item), "index": index, "code": exc.code, "detail": exc.errors})
        accepted = await self._ingest(good) if good else []
        await self._send({"type": "accepted_batch", "accepted": [a.as_dict() for a in accepted], "errors": errors})

    async def _ingest(self, messages: list):
        try:
            return await ingest.ingest(self.agent_id, messages)
        except ingest.Throttled as exc:
            raise FrameError("throttled", str(exc), retry_after=exc.retry_after) from exc

    async def on_ack(self, frame):
        try:
            result = await outbox.ack(self.agent_id, frame.get("reply_id"), frame.get("status"), frame.get("error"))
        except outbox.AckError as exc:
            raise FrameError("invalid", str(exc)) from exc
        except LookupError as exc:
            raise FrameError("not_found", "no such reply", reply_id=frame.get("reply_id")) from exc
        await self._send({"type": "acked", **result})

    async def on_heartbeat(self, frame):
        data = frame.get("data", {key: value for key, value in frame.items() if key != "type"})
        try:
            result = await run_db(agent_services.record_heartbeat, self.agent_id, data)
        except heartbeat.Invalid as exc:
            raise FrameError("invalid", exc.errors) from exc
        except TooLarge as exc:
            raise FrameError(exc.code, str(exc)) from exc
        await self._send({"type": "heartbeat_ok", **result})

    async def on_takeover(self, frame):
        chat = str(frame.get("chat") or frame.get("chat_name") or "")
        try:
            if len(chat) > TAKEOVER_CHAT_MAX:
                raise ValueError(f"at most {TAKEOVER_CHAT_MAX} characters")
            printable(chat)
        except ValueError as exc:
            raise FrameError("invalid", {"chat": [str(exc)]}) from exc
        active = frame.get("active", True) is not False
        found = await run_db(review.agent_takeover, self.agent_id, chat, active)
        await self._send({"type": "takeover_ok", "chat": chat, "active": active, "found": found})

    # --- channel-layer events ---------------------------------------------------------------------
    async def agent_revoke(self, event):
        """The agent was disabled / deleted or its secret rotated (agents.services.close_sockets)."""
        await self._close_with(event["code"], event["detail"])
        with contextlib.suppress(Exception):  # this process's token checks follow at once, not at the next check
            await auth.ACTIVE_AGENTS.get(fresh=True)

    async def agent_replaced(self, event):
        """A newer socket of the agent claimed its lease (sockets.claim): an older one closes 4408."""
        if self.lease is not None and event["generation"] > self.lease.generation:
            logger.info("agent %s: socket replaced by a newer one", self.agent_id)
            await self._close_with("replaced", "a newer connection of this agent took over")

    async def agent_frame(self, event):
        if self.closed_with is None:
            await self._send(event["frame"])

    async def reply_push(self, event):
        """A new reply (stored as `sent` by the worker that pushed it), or one pushed again by beat's outbox sweep
        (`redelivery`): to this socket, while it is the current one (after `agent.replaced` it is closing; the
        newer socket, in the same group, gets the reply itself)."""
        frame = event["frame"]
        if self.closed_with is None and (event.get("redelivery") or frame["reply_id"] not in self.backlog_ids):
            await self._send(frame)
