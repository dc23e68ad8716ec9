"""The agent side of the server protocol: login / refresh, WebSocket frames, REST fallback.

The server side is apps/messages (consumers.py, api.py) and apps/agents (api.py).

REST (under ``<url>/api/v1/``):
- ``POST auth/login`` ``{agent_id, api_key}`` → ``{access_token, refresh_token, expires_in}``
- ``POST auth/refresh`` ``{refresh_token}`` → the same
- ``POST messages`` ``{"message": item}`` → 202 ``{client_id, message_id, status: accepted | duplicate}``;
  400 / 413 for an item the server will never take
- ``GET replies`` → ``[{id, chat, content, at, ...}]`` (unacked replies, oldest first)
- ``POST replies/<id>/ack`` ``{status: delivered | failed, error}``
- ``POST heartbeat`` (the heartbeat fields)

Refresh tokens rotate: each refresh spends the one sent and returns the next, which must be kept (a spent
one is refused and revokes all its successors: the agent then logs in again with its secret).

WebSocket ``<ws>/ws/agent/`` with ``Authorization: Bearer <access>``; the server closes it with 4401 (bad
token: log in again), 4419 (access token expired: refresh), 4409 (secret rotated: log in again; if the
configured secret is the old one that fails and the agent waits) or 4403 (agent disabled: wait the longest
reconnect delay between tries); 4423 (another installation of this agent is connected: stand by, retry at the
longest delay) and 4408 (a newer socket of this installation took over: the same) — see ``close_action``. The
handshake names this installation (``X-Agent-Instance``, agent/instance.py). JSON
frames with a ``type``. Agent → server: ``messages`` ``{messages: [item, ...]}``, ``ack`` ``{reply_id,
status, error}``, ``heartbeat`` (the fields), ``takeover`` ``{chat_name, active}``. Server → agent:
``hello`` ``{max_message_bytes, max_batch}``, ``accepted_batch`` ``{accepted: [{client_id, status}], errors:
[{client_id, index, code, detail}]}``, ``reply`` ``{reply_id, chat, content, at}`` (every unacked one again on
connect), ``acked``, ``heartbeat_ok``, ``takeover_ok``, ``error`` ``{code, detail, frame?, client_id?,
retry_after?}``; a frame over ``max_message_bytes`` is answered ``too_large`` and the socket closed (4413).
A message item: ``{id, chat_name, chat_type, sender, content, type, is_at_me, timestamp}``; ``id`` is
the message fingerprint (the server keeps one message per agent + id, so a resend is a no-op).
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
from typing import Any

from agent.config import ServerConfig
from agent.logs import SECRETS

log = logging.getLogger("agent.client")


class AuthFailed(RuntimeError):
    """The server refused our credentials (HTTP 401): retrying will not help until they change."""


# WebSocket close code → what to do before reconnecting (apps/messages/PROTOCOL.md, "Credentials: close codes
# and login limits"): refresh the access token, log in again with the secret, stop trying for a while, or stand
# by (another process holds the agent's one sending socket: keep the tokens, retry at the longest delay).
CLOSE_ACTIONS = {4401: "login", 4403: "stop", 4408: "standby", 4409: "login", 4419: "refresh", 4423: "standby"}


def close_action(exc: BaseException) -> str | None:
    """ "refresh" / "login" / "stop" / "standby" for a connection the server closed or refused over credentials or
    over the agent's one sending socket, else None."""
    close = getattr(exc, "rcvd", None)
    if close is not None and getattr(close, "code", None) in CLOSE_ACTIONS:
        return CLOSE_ACTIONS[close.code]
    response = getattr(exc, "response", None)
    if getattr(response, "status_code", None) in (401, 403):
        return "login"
    return None


class ServerUnavailable(RuntimeError):
    """Network error, timeout or 5xx: retry later."""

    def __init__(self, message: str, retry_after: float | None = None):
        super().__init__(message)
        self.retry_after = retry_after


class Rejected(ValueError):
    """HTTP 400 / 413 for one item: the server will never take it as it is."""


def _version() -> str:
    from agent import __version__

    return __version__


def message_item(item: dict[str, Any]) -> dict[str, Any]:
    """Queue item (a normalised InboundMessage) → the server's message fields."""
    return {
        "id": item["fingerprint"],
        "chat_name": item["chat_name"],
        "chat_type": item["chat_kind"],
        "sender": item["sender"],
        "sender_name": item.get("display_name") or item["sender"],
        "content": item["text"],
        "type": item.get("content_kind") or "text",
        "is_at_me": bool(item.get("mentions_me")),
        "timestamp": item.get("received_at"),
    }


def accepted_ids(frame: dict[str, Any]) -> set[str]:
    """Client ids the server confirmed (stored now or already before) in an accepted frame / response."""
    results = frame.get("accepted") or frame.get("results") or []
    if isinstance(results, dict):
        results = [results]
    ids = set()
    for result in results:
        if isinstance(result, str):
            ids.add(result)
        elif isinstance(result, dict) and result.get("status", "accepted") in ("accepted", "duplicate"):
            cid = result.get("client_id") or result.get("id") or result.get("client_msg_id")
            if cid:
                ids.add(str(cid))
    if not results and frame.get("client_id"):
        ids.add(str(frame["client_id"]))
    return ids


class ServerClient:
    def __init__(self, config: ServerConfig, *, instance: str = ""):
        self.config = config
        self.instance = instance  # agent/instance.py installation_id: the handshake's X-Agent-Instance
        base = config.url.rstrip("/")
        self.api = f"{base}/api/v1"
        self.ws_url = config.ws_url or ("ws" + base[4:] if base.startswith("http") else base) + "/ws/agent/"
        SECRETS.add(config.secret)
        self._access = ""
        self._refresh = ""
        self._expires_at = 0.0
        self._ssl = None
        self._token_lock: asyncio.Lock | None = None  # one login / refresh at a time: a refresh token is single-use

    # -- HTTP plumbing ---------------------------------------------------------------------------
    # The standard library's urllib (in a worker thread) rather than an async HTTP client: the agent
    # makes a handful of REST calls (login, hourly refresh, the REST fallback), websockets already
    # imports urllib, and a second HTTP stack with its own TLS context costs ~6 MB of RSS.
    def _ssl_context(self):
        if self._ssl is None:
            import ssl

            self._ssl = ssl.create_default_context()
            if not self.config.verify_tls:
                self._ssl.check_hostname = False
                self._ssl.verify_mode = ssl.CERT_NONE
        return self._ssl

    def _call(self, method: str, url: str, headers: dict[str, str], body: bytes | None) -> tuple[int, dict, bytes]:
        import urllib.error
        import urllib.request

        request = urllib.request.Request(url, data=body, method=method, headers=headers)  # noqa: S310 - http(s) only
        context = self._ssl_context() if url.startswith("https:") else None
        try:
            with urllib.request.urlopen(request, timeout=self.config.timeout_s, context=context) as response:  # noqa: S310
                return response.status, dict(response.headers), response.read()
        except urllib.error.HTTPError as exc:
            return exc.code, dict(exc.headers or {}), exc.read() or b""

    async def _request(self, method: str, path: str, *, auth: bool = True, body: Any = None) -> Any:
        headers = {"Accept": "application/json", "User-Agent": f"wxcs-agent/{_version()}"}
        if auth:
            headers["Authorization"] = f"Bearer {await self.access_token()}"
        data = None
        if body is not None:
            data = json.dumps(body, ensure_ascii=False).encode("utf-8")
            headers["Content-Type"] = "application/json"
        try:
            status, response_headers, content = await asyncio.to_thread(
                self._call, method, f"{self.api}/{path}", headers, data
            )
        except (OSError, ValueError) as exc:  # URLError, timeouts, refused, reset, bad status line
            raise ServerUnavailable(f"{method} {path}: {type(exc).__name__}") from exc
        text = content.decode("utf-8", "replace")
        if status == 401:
            if auth:
                self._access = ""  # next call logs in again
            raise AuthFailed(f"{method} {path}: 401 {text[:200]}")
        if status == 429:
            retry = response_headers.get("Retry-After")
            raise ServerUnavailable(
                f"{method} {path}: throttled, retry after {retry}s",
                retry_after=float(retry) if retry and retry.isdigit() else 5.0,
            )
        if status >= 500 or status in (404, 408):
            raise ServerUnavailable(f"{method} {path}: HTTP {status}")
        if status in (400, 413, 422):
            raise Rejected(f"{method} {path}: HTTP {status} {text[:300]}")
        if status >= 400:
            raise ServerUnavailable(f"{method} {path}: HTTP {status}")
        return json.loads(text) if content else {}

    # -- tokens ----------------------------------------------------------------------------------
    async def login(self) -> None:
        data = await self._request(
            "POST", "auth/login", auth=False, body={"agent_id": self.config.agent_id, "api_key": self.config.secret}
        )
        self._store_tokens(data)
        log.info("logged in as agent %s", self.config.agent_id)

    async def refresh(self) -> None:
        """New tokens for the current refresh token (spent by this call: the new one is kept); refused (spent,
        revoked, secret rotated) or none: log in again."""
        if not self._refresh:
            await self.login()
            return
        try:
            data = await self._request("POST", "auth/refresh", auth=False, body={"refresh_token": self._refresh})
        except AuthFailed:
            self._refresh = ""
            await self.login()
            return
        self._store_tokens(data)

    def _store_tokens(self, data: dict) -> None:
        self._access = data["access_token"]
        self._refresh = data.get("refresh_token", self._refresh)
        self._expires_at = time.time() + float(data.get("expires_in", 3600))
        SECRETS.add(self._access, self._refresh)

    async def access_token(self) -> str:
        """A token valid for at least another minute: refresh or log in (one caller at a time)."""
        if self._token_lock is None:
            self._token_lock = asyncio.Lock()
        async with self._token_lock:
            if not self._access:
                await self.login()
            elif time.time() > self._expires_at - 60:
                await self.refresh()
            return self._access

    def prepare_reconnect(self, action: str) -> None:
        """After the server closed the socket (``close_action``): "refresh" renews the access token before the
        next connection, "login" / "stop" drop both tokens (the next connection logs in with the secret),
        "standby" keeps them."""
        if action == "refresh":
            self._expires_at = 0.0
        elif action != "standby":
            self._access = self._refresh = ""

    # -- WebSocket -------------------------------------------------------------------------------
    async def connect_ws(self):
        import websockets

        token = await self.access_token()
        headers = {"Authorization": f"Bearer {token}"}
        if self.instance:
            headers["X-Agent-Instance"] = self.instance
        return await websockets.connect(
            self.ws_url,
            additional_headers=headers,
            open_timeout=self.config.timeout_s,
            ping_interval=20,
            ping_timeout=20,
            max_size=2**22,
        )

    @staticmethod
    def encode(frame: dict[str, Any]) -> str:
        return json.dumps(frame, ensure_ascii=False, separators=(",", ":"))

    # -- REST fallback ---------------------------------------------------------------------------
    async def post_messages(self, items: list[dict[str, Any]]) -> tuple[set[str], dict[str, str]]:
        """POST each item in order; (ids the server has, {id: reason} for those it refused for good)."""
        accepted, rejected = set(), {}
        for item in items:
            try:
                accepted |= accepted_ids(await self._request("POST", "messages", body={"message": item}))
            except Rejected as exc:
                log.error("server refused message %s: %s", item["id"], exc)
                rejected[item["id"]] = str(exc)
        return accepted, rejected

    async def fetch_outbox(self) -> list[dict[str, Any]]:
        data = await self._request("GET", "replies")
        replies = data.get("replies", data.get("results", [])) if isinstance(data, dict) else data
        return list(replies or [])

    async def post_ack(self, reply_id: Any, status: str, error: str = "") -> None:
        await self._request("POST", f"replies/{reply_id}/ack", body={"status": status, "error": error})

    async def post_heartbeat(self, data: dict[str, Any]) -> dict[str, Any]:
        return await self._request("POST", "heartbeat", body=data)

    async def post_takeover(self, chat_name: str, active: bool = True) -> dict[str, Any]:
        return await self._request("POST", "conversations/takeover", body={"chat_name": chat_name, "active": active})

    async def close(self) -> None:
        """Nothing to release: every REST call opens and closes its own connection."""
