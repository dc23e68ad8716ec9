"""Scale-out: 2 Daphne + 2 Celery workers on one PostgreSQL + Redis.

A reply made by either worker reaches an agent connected to either web process, and an agent that
reconnects to the other web process gets its unacked replies (oldest first, once).
"""

import asyncio
import json
import re
import time

import httpx
import pytest

from apps.core.testing import running, start_daphne, start_worker
from apps.messages.models import Reply
from apps.messages.testing import recv_until, ws_connect
from apps.messages.tests.helpers import make_agent
from conftest import requires_services

pytestmark = [pytest.mark.e2e, requires_services]

MESSAGES_PER_AGENT = 24


def frame(client_id: str, chat: str) -> dict:
    message = {
        "id": client_id,
        "chat_name": chat,
        "chat_type": "private",
        "sender": chat,
        "content": f"请问 {client_id} 的充电桩怎么安装？",
        "timestamp": time.time(),
    }
    return {"type": "message", "message": message}


async def send_and_collect(base_url: str, token: str, prefix: str, ack: bool) -> list[dict]:
    """Send messages in distinct chats (so both workers take some) and collect every reply pushed."""
    ws = await ws_connect(base_url, token)
    await recv_until(ws, lambda f: f["type"] == "hello")
    for i in range(MESSAGES_PER_AGENT):
        await ws.send(json.dumps(frame(f"{prefix}-{i}", f"{prefix}客户{i}")))
    replies = []
    while len(replies) < MESSAGES_PER_AGENT:
        reply = await recv_until(ws, lambda f: f["type"] == "reply", within=60)
        replies.append(reply)
        if ack:
            await ws.send(json.dumps({"type": "ack", "reply_id": reply["reply_id"], "status": "delivered"}))
    if ack:
        await recv_until(ws, lambda f: f["type"] == "acked" and f["reply_id"] == replies[-1]["reply_id"])
    await ws.close()
    return replies


async def replays_on(base_url: str, token: str, expected: int) -> list[dict]:
    ws = await ws_connect(base_url, token)
    replies = []
    while len(replies) < expected:
        replies.append(await recv_until(ws, lambda f: f["type"] == "reply", within=30))
    for reply in replies:
        await ws.send(json.dumps({"type": "ack", "reply_id": reply["reply_id"], "status": "delivered"}))
    await recv_until(ws, lambda f: f["type"] == "acked" and f["reply_id"] == replies[-1]["reply_id"])
    extra = []
    try:
        while True:
            extra.append(json.loads(await asyncio.wait_for(ws.recv(), 1.5)))
    except TimeoutError:
        pass
    await ws.close()
    return replies + [f for f in extra if f.get("type") == "reply"]


def processed_by(worker) -> int:
    return len(re.findall(r"message \d+ decided: ", worker.log_path.read_text()))


@pytest.fixture
def scaled_out(live_env, tmp_path):
    env = dict(live_env, ENGINE_DEFAULT="echo", INGEST_RATE_LIMIT="0")  # test workers register the echo engine
    workers = [start_worker(env, tmp_path, name=f"worker{i}", concurrency=8) for i in (1, 2)]
    webs = []
    try:
        for i in (1, 2):
            webs.append(start_daphne(env, tmp_path, name=f"daphne{i}"))
    except Exception:
        for process in workers + [w for w, _ in webs]:
            process.stop()
        raise
    with running(*workers, *(w for w, _ in webs)):
        yield [url for _, url in webs], workers


def test_replies_from_either_worker_reach_agents_on_either_web_process(scaled_out):
    (web1, web2), workers = scaled_out
    agent_a, token_a = make_agent(name="甲")
    agent_b, token_b = make_agent(name="乙")

    async def scenario():
        return await asyncio.gather(
            send_and_collect(web1, token_a, "a", ack=True), send_and_collect(web2, token_b, "b", ack=True)
        )

    replies_a, replies_b = asyncio.run(scenario())
    assert sorted(r["chat"] for r in replies_a) == sorted(f"a客户{i}" for i in range(MESSAGES_PER_AGENT))
    assert sorted(r["chat"] for r in replies_b) == sorted(f"b客户{i}" for i in range(MESSAGES_PER_AGENT))
    # both workers decided some of them, and each reply went to the right agent's web process
    assert all(processed_by(worker) > 0 for worker in workers), [processed_by(w) for w in workers]
    assert sum(processed_by(worker) for worker in workers) >= 2 * MESSAGES_PER_AGENT
    assert Reply.objects.filter(agent=agent_a, status=Reply.Status.DELIVERED).count() == MESSAGES_PER_AGENT
    assert Reply.objects.filter(agent=agent_b, status=Reply.Status.DELIVERED).count() == MESSAGES_PER_AGENT


def test_agent_reconnecting_to_the_other_web_process_gets_its_unacked_replies(scaled_out):
    (web1, web2), workers = scaled_out
    agent, token = make_agent(name="丙")

    first = asyncio.run(send_and_collect(web1, token, "c", ack=False))  # received on web1, never acked
    replayed = asyncio.run(replays_on(web2, token, expected=MESSAGES_PER_AGENT))

    assert len(replayed) == MESSAGES_PER_AGENT  # each once, nothing extra
    assert [r["reply_id"] for r in replayed] == sorted(r["reply_id"] for r in first)  # oldest first
    assert Reply.objects.filter(agent=agent, status=Reply.Status.DELIVERED).count() == MESSAGES_PER_AGENT
    assert all(processed_by(worker) > 0 for worker in workers)


def test_both_web_processes_are_ready(scaled_out):
    (web1, web2), _ = scaled_out
    for url in (web1, web2):
        assert httpx.get(f"{url}/readyz", timeout=10).status_code == 200
