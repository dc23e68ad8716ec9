"""One sending socket per agent, across two real Daphne processes (Redis lease + channel layer) and a worker.

Another installation of the agent (another state directory or PC) is refused with 4423 while the current socket
lives; the same installation takes over (the older socket closes 4408) and replies go to the newest socket only
(apps/messages/PROTOCOL.md, "Limits and errors")."""

import asyncio
import json

import pytest
import websockets

from apps.agents import auth
from apps.agents.tests.factories import AgentFactory
from apps.messages.testing import collect, recv_until, ws_url
from apps.messages.tests.helpers import message
from conftest import requires_services

pytestmark = [pytest.mark.e2e, requires_services]


@pytest.fixture
def two_daphnes(live_env, tmp_path):
    from apps.core.testing import running, start_daphne, start_worker

    worker = start_worker(live_env, tmp_path)
    with running(worker):
        first, first_url = start_daphne(live_env, tmp_path, "daphne-1")
        with running(first):
            second, second_url = start_daphne(live_env, tmp_path, "daphne-2")
            with running(second):
                yield first_url, second_url


async def _connect(base_url: str, token: str, instance: str | None):
    headers = {"Authorization": f"Bearer {token}"}
    if instance:
        headers["X-Agent-Instance"] = instance
    return await websockets.connect(ws_url(base_url), additional_headers=headers)


async def _closed(ws, within: float = 10.0) -> tuple[list[dict], int | None]:
    frames = []
    try:
        while True:
            frames.append(json.loads(await asyncio.wait_for(ws.recv(), within)))
    except websockets.ConnectionClosed as closed:
        return frames, closed.rcvd.code if closed.rcvd else None


async def _hello(base_url: str, token: str, instance: str | None):
    ws = await _connect(base_url, token, instance)
    await recv_until(ws, lambda f: f["type"] == "hello", within=10)
    return ws


async def _reply_for(ws, client_id: str, text: str) -> dict:
    """Send a customer's message, wait for its reply and ack it (as the agent does once WeChat sent it)."""
    await ws.send(json.dumps({"type": "message", "message": message(client_id, text)}, ensure_ascii=False))
    reply = await recv_until(ws, lambda f: f["type"] == "reply", within=30)
    await ws.send(json.dumps({"type": "ack", "reply_id": reply["reply_id"], "status": "delivered"}))
    await recv_until(ws, lambda f: f["type"] == "acked", within=10)
    return reply


def test_a_second_installation_is_refused_with_4423_and_gets_in_once_the_first_leaves(two_daphnes):
    first_url, second_url = two_daphnes
    agent = AgentFactory()
    token = auth.issue_tokens(agent.id)["access_token"]

    async def scenario():
        current = await _hello(first_url, token, "installation-a-0001")
        refused = await _connect(second_url, token, "installation-b-0002")  # the other Daphne process
        refused_frames, refused_code = await _closed(refused)
        unnamed = await _connect(second_url, token, None)  # an agent predating X-Agent-Instance
        _, unnamed_code = await _closed(unnamed)
        reply = await _reply_for(current, "c-1", "还在吗？")
        await current.close()
        await asyncio.sleep(0.5)  # the first socket's disconnect releases the lease
        successor = await _hello(second_url, token, "installation-b-0002")
        successor_reply = await _reply_for(successor, "c-2", "换我来了")
        await successor.close()
        return refused_frames, refused_code, unnamed_code, reply, successor_reply

    refused_frames, refused_code, unnamed_code, reply, successor_reply = asyncio.run(scenario())
    assert refused_code == 4423 and unnamed_code == 4423
    assert [f["type"] for f in refused_frames] == ["error"]  # no hello, no reply: it never became a sender
    assert refused_frames[0]["code"] == "already_connected"
    assert reply["content"] == "收到：还在吗？"
    assert successor_reply["content"] == "收到：换我来了"


def test_the_same_installation_takes_over_across_processes_and_replies_reach_only_the_new_socket(two_daphnes):
    first_url, second_url = two_daphnes
    agent = AgentFactory()
    token = auth.issue_tokens(agent.id)["access_token"]

    async def scenario():
        old = await _hello(first_url, token, "installation-a-0001")  # half-dead after a network blip, say
        new = await _hello(second_url, token, "installation-a-0001")
        old_frames, old_code = await _closed(old)
        reply = await _reply_for(new, "c-1", "网断了一下")
        late = await collect(new, 1.0)  # nothing twice
        await new.close()
        return old_frames, old_code, reply, late

    old_frames, old_code, reply, late = asyncio.run(scenario())
    assert old_code == 4408
    assert old_frames[-1]["type"] == "error" and old_frames[-1]["code"] == "replaced"
    assert not [f for f in old_frames if f["type"] == "reply"]
    assert reply["content"] == "收到：网断了一下"
    assert not [f for f in late if f["type"] == "reply"]
