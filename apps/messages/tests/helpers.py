"""Talking to the real ASGI application in-process: REST through httpx's ASGI transport, the agent WebSocket
through Channels' communicator, both on the process's shared event loop (as the web process runs them)."""

import json

import httpx
from channels.testing import WebsocketCommunicator

from apps.agents.auth import issue_tokens
from apps.agents.tests.factories import AgentFactory
from apps.core import aio


def make_agent(**fields):
    """(agent, access token)"""
    agent = AgentFactory(**fields)
    return agent, issue_tokens(agent.id)["access_token"]


def message(client_id: str, content: str = "你好，请问充电桩怎么安装？", **extra) -> dict:
    return {
        "id": client_id,
        "chat_name": "张三",
        "chat_type": "private",
        "sender": "张三",
        "content": content,
        "type": "text",
        "timestamp": 1764000000,
        "is_at_me": False,
        **extra,
    }


def application():
    from wxcs.asgi import application

    return application


def post(token: str | None, payload, path: str = "/api/v1/messages", **headers) -> httpx.Response:
    """POST to the ASGI application (ingest's own endpoint included)."""
    if token:
        headers["Authorization"] = f"Bearer {token}"
    data = payload if isinstance(payload, str | bytes) else json.dumps(payload)
    headers.setdefault("Content-Type", "application/json")

    async def send() -> httpx.Response:
        transport = httpx.ASGITransport(app=application())
        async with httpx.AsyncClient(transport=transport, base_url="http://testserver") as client:
            return await client.post(path, content=data, headers=headers, timeout=30)

    return aio.run(send(), timeout=60)


def ws_session(token: str | None, script):
    """Connect to /ws/agent/ and run `await script(ws)` (ws: a channels WebsocketCommunicator)."""

    async def run():
        headers = [(b"authorization", f"Bearer {token}".encode())] if token else []
        ws = WebsocketCommunicator(application(), "/ws/agent/", headers=headers)
        connected, _ = await ws.connect()
        assert connected
        try:
            return await script(ws)
        finally:
            await ws.disconnect()

    return aio.run(run(), timeout=60)


async def frames_until(ws, kind: str, within: float = 10) -> list[dict]:
    """Frames received up to and including the first of type `kind`."""
    seen = []
    while True:
        frame = await ws.receive_json_from(timeout=within)
        seen.append(frame)
        if frame["type"] == kind:
            return seen
