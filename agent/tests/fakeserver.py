"""A small stand-in for the wxcs server's agent protocol (aiohttp, HTTP + WebSocket on loopback), for
unit tests of the agent — the same frames and endpoints as apps/messages/consumers.py and api.py
(the e2e tests run the real ones): login / refresh, `messages` frames answered with `accepted_batch`, an auto-reply
per new message pushed as a `reply` frame, unacked replies pushed again on (re)connect, acks,
heartbeats, takeovers, and the REST fallback. `stop()` / `start()` take it off / back on the same port.
"""

from __future__ import annotations

import asyncio
import itertools
import json
import socket
import time

from aiohttp import WSMsgType, web

AGENT_ID = "agt_test"
SECRET = "test-secret-0123456789"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class FakeServer:
    def __init__(
        self,
        *,
        auto_reply: bool = True,
        ws_enabled: bool = True,
        access_ttl: int = 3600,
        max_message_bytes: int | None = None,
        errors_by_index: bool = False,
        server_errors: int = 0,
    ):
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.auto_reply = auto_reply
        self.ws_enabled = ws_enabled
        self.access_ttl = access_ttl
        # Like the real server: frames over max_message_bytes get a `too_large` error frame (no `frame` key) and
        # close 4413, announced in `hello` unless announce_limit is False; errors_by_index: per-message errors
        # name the item by its index only; server_errors: that many `messages` frames answered `server_error`.
        self.max_message_bytes = max_message_bytes
        self.announce_limit = True
        self.errors_by_index = errors_by_index
        self.server_errors = server_errors
        self.frames_too_large = 0
        self.duplicates = 0  # messages received again (the agent resent a batch)
        self.refuse_heartbeats = False  # answer every heartbeat frame with an `invalid` error frame
        # close every socket with this code (an `error` frame first) when its first `messages` frame arrives: another
        # installation holds the agent's socket (4423) — the agent's batch is cut short by the close
        self.refuse_batches_with: int | None = None
        self.instances: list[str | None] = []  # X-Agent-Instance of each WebSocket handshake
        self.heartbeat_interval = 1  # announced in `hello` and every heartbeat answer, as admin's setting is
        self.messages: dict[str, dict] = {}  # client id → item, insertion order = arrival order
        self.replies: dict[int, dict] = {}  # reply id → frame + status
        self.acks: list[dict] = []
        self.heartbeats: list[dict] = []
        self.takeovers: list[dict] = []
        self.logins = 0
        self.refreshes = 0
        self.ws_connections = 0
        self.rest_posts = 0
        self._tokens: dict[str, float] = {}
        self._refresh_tokens: set[str] = set()
        self._ids = itertools.count(1)
        self._sockets: set[web.WebSocketResponse] = set()
        self._runner: web.AppRunner | None = None

    # -- lifecycle -------------------------------------------------------------------------------
    async def start(self) -> FakeServer:
        app = web.Application()
        app.router.add_post("/api/v1/auth/login", self.login)
        app.router.add_post("/api/v1/auth/refresh", self.refresh)
        app.router.add_post("/api/v1/messages", self.rest_messages)
        app.router.add_get("/api/v1/replies", self.rest_outbox)
        app.router.add_post(r"/api/v1/replies/{id:\d+}/ack", self.rest_ack)
        app.router.add_post("/api/v1/heartbeat", self.rest_heartbeat)
        app.router.add_post("/api/v1/conversations/takeover", self.rest_takeover)
        app.router.add_get("/ws/agent/", self.websocket)
        self._runner = web.AppRunner(app)
        await self._runner.setup()
        await web.TCPSite(self._runner, "127.0.0.1", self.port).start()
        return self

    async def stop(self) -> None:
        for ws in list(self._sockets):
            await ws.close()
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None

    # -- auth ------------------------------------------------------------------------------------
    def _issue(self) -> dict:
        access, refresh = f"acc-{next(self._ids)}-{time.time_ns()}", f"ref-{next(self._ids)}"
        self._tokens[access] = time.time() + self.access_ttl
        self._refresh_tokens.add(refresh)
        return {"access_token": access, "refresh_token": refresh, "token_type": "Bearer", "expires_in": self.access_ttl}

    def _authorised(self, request) -> bool:
        header = request.headers.get("Authorization", "")
        token = header.removeprefix("Bearer ")
        return self._tokens.get(token, 0) > time.time()

    async def login(self, request):
        body = await request.json()
        if body.get("agent_id") != AGENT_ID or body.get("api_key") != SECRET:
            return web.json_response({"detail": "bad credentials"}, status=401)
        self.logins += 1
        return web.json_response(self._issue())

    async def refresh(self, request):
        body = await request.json()
        if body.get("refresh_token") not in self._refresh_tokens:
            return web.json_response({"detail": "bad refresh token"}, status=401)
        self._refresh_tokens.discard(body["refresh_token"])
        self.refreshes += 1
        return web.json_response(self._issue())

    # -- protocol core ---------------------------------------------------------------------------
    def ingest(self, items: list[dict]) -> tuple[list[dict], list[dict]]:
        results, new_replies = [], []
        for item in items:
            cid = item["id"]
            if cid in self.messages:
                self.duplicates += 1
                results.append({"client_id": cid, "status": "duplicate"})
                continue
            self.messages[cid] = item
            if not item.get("content"):
                results.append({"client_id": cid, "status": "invalid"})
                del self.messages[cid]
                continue
            results.append({"client_id": cid, "status": "accepted"})
            if self.auto_reply:
                rid = next(self._ids)
                frame = {
                    "type": "reply",
                    "reply_id": rid,
                    "message_id": len(self.messages),
                    "chat": item["chat_name"],
                    "content": f"收到：{item['content']}",
                    "at": item["sender"] if item["chat_type"] == "group" else None,
                }
                self.replies[rid] = {**frame, "status": "queued"}
                new_replies.append(frame)
        return results, new_replies

    def outbox(self) -> list[dict]:
        return [
            {k: v for k, v in r.items() if k != "status"}
            for r in self.replies.values()
            if r["status"] in ("queued", "sent")
        ]

    def ack(self, reply_id: int, status: str, error: str) -> bool:
        self.acks.append({"reply_id": reply_id, "status": status, "error": error})
        reply = self.replies.get(reply_id)
        if reply is None:
            return False
        if reply["status"] in ("queued", "sent"):
            reply["status"] = status
        return True

    def push(self, frame: dict) -> None:
        """A reply made outside `ingest` (e.g. a supervisor's), pushed to connected agents."""
        self.replies[frame["reply_id"]] = {**frame, "status": "queued"}
        for ws in list(self._sockets):
            asyncio.ensure_future(ws.send_json(frame))

    async def close_sockets(self, close_code: int, error: str) -> None:
        """What the server does when a token expires (4419), the secret is rotated (4409) or the agent is
        disabled (4403): an error frame, then the close code."""
        for ws in list(self._sockets):
            await ws.send_json({"type": "error", "code": error, "detail": error})
            await ws.close(code=close_code)

    # -- WebSocket -------------------------------------------------------------------------------
    async def websocket(self, request):
        if not self.ws_enabled:
            return web.Response(status=503, text="websocket disabled")
        if not self._authorised(request):
            return web.Response(status=401, text="unauthorised")
        ws = web.WebSocketResponse()
        await ws.prepare(request)
        self.ws_connections += 1
        self.instances.append(request.headers.get("X-Agent-Instance"))
        self._sockets.add(ws)
        try:
            hello = {"type": "hello", "agent_id": AGENT_ID, "heartbeat_interval": self.heartbeat_interval}
            if self.max_message_bytes and self.announce_limit:
                hello["max_message_bytes"] = self.max_message_bytes
            await ws.send_json(hello)
            for frame in self.outbox():
                await ws.send_json(frame)
            async for msg in ws:
                if msg.type != WSMsgType.TEXT:
                    continue
                if self.max_message_bytes and len(msg.data.encode()) > self.max_message_bytes:
                    self.frames_too_large += 1
                    await ws.send_json({"type": "error", "code": "too_large", "detail": "frame too large"})
                    await ws.close(code=4413)
                    break
                frame = json.loads(msg.data)
                kind = frame.get("type")
                if kind in ("messages", "message") and self.refuse_batches_with:
                    await ws.send_json({"type": "error", "code": "already_connected", "detail": "another one"})
                    await ws.close(code=self.refuse_batches_with)
                    break
                if kind in ("messages", "message") and self.server_errors:
                    self.server_errors -= 1
                    await ws.send_json({"type": "error", "code": "server_error", "detail": "retry", "frame": kind})
                elif kind in ("messages", "message"):
                    await self._ws_messages(ws, frame.get("messages") or [frame])
                elif kind == "ack":
                    self.ack(int(frame["reply_id"]), frame["status"], frame.get("error", ""))
                    await ws.send_json({"type": "acked", "reply_id": frame["reply_id"], "status": frame["status"]})
                elif kind == "heartbeat" and self.refuse_heartbeats:
                    await ws.send_json({"type": "error", "code": "invalid", "detail": {"cpu": ["bad"]}, "frame": kind})
                elif kind == "heartbeat":
                    self.heartbeats.append(frame)
                    await ws.send_json(
                        {"type": "heartbeat_ok", "presence": "online", "interval": self.heartbeat_interval}
                    )
                elif kind == "takeover":
                    self.takeovers.append(frame)
        finally:
            self._sockets.discard(ws)
        return ws

    async def _ws_messages(self, ws, items: list[dict]) -> None:
        results, replies = self.ingest(items)
        await ws.send_json(
            {
                "type": "accepted_batch",
                "accepted": [r for r in results if r["status"] != "invalid"],
                "errors": [
                    {
                        "client_id": None if self.errors_by_index else r["client_id"],
                        "index": index,
                        "code": "invalid",
                        "detail": {"content": ["required"]},
                    }
                    for index, r in enumerate(results)
                    if r["status"] == "invalid"
                ],
            }
        )
        for reply in replies:
            await ws.send_json(reply)

    # -- REST ------------------------------------------------------------------------------------
    async def rest_messages(self, request):
        if not self._authorised(request):
            return web.json_response({"detail": "unauthorised"}, status=401)
        self.rest_posts += 1
        body = await request.json()
        (result,), _ = self.ingest([body["message"]])
        if result["status"] == "invalid":
            return web.json_response({"detail": {"message": {"content": ["required"]}}, "code": "invalid"}, status=400)
        return web.json_response({**result, "message_id": len(self.messages)}, status=202)

    async def rest_outbox(self, request):
        if not self._authorised(request):
            return web.json_response({"detail": "unauthorised"}, status=401)
        return web.json_response(
            [
                {**{k: v for k, v in r.items() if k not in ("type", "reply_id")}, "id": r["reply_id"]}
                for r in self.outbox()
            ]
        )

    async def rest_ack(self, request):
        if not self._authorised(request):
            return web.json_response({"detail": "unauthorised"}, status=401)
        body = await request.json()
        if not self.ack(int(request.match_info["id"]), body["status"], body.get("error", "")):
            return web.json_response({"detail": "not found"}, status=404)
        return web.json_response({"ok": True})

    async def rest_takeover(self, request):
        if not self._authorised(request):
            return web.json_response({"detail": "unauthorised"}, status=401)
        body = await request.json()
        self.takeovers.append(body)
        return web.json_response({"chat": body["chat_name"], "active": body["active"], "found": True})

    async def rest_heartbeat(self, request):
        if not self._authorised(request):
            return web.json_response({"detail": "unauthorised"}, status=401)
        self.heartbeats.append(await request.json())
        return web.json_response({"presence": "online", "interval": self.heartbeat_interval})
