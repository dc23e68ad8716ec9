"""End to end with real processes: Daphne, a Celery worker, Redis, PostgreSQL; the agent side is a
`websockets` client. The engine is the test worker's registered echo engine (apps.engines.testing, made the
default engine), so replies are deterministic."""

import asyncio
import json
import time

import httpx
import pytest

from apps.messages.models import Message, Reply
from apps.messages.testing import collect, recv_until, ws_connect
from apps.messages.tests.helpers import make_agent
from conftest import requires_services

pytestmark = [pytest.mark.e2e, requires_services]


def wait_for(predicate, timeout: float = 20.0, interval: float = 0.1):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(interval)
    raise AssertionError("condition not met in time")


def message_frame(client_id: str, content: str = "请问充电桩怎么安装？", chat: str = "李四") -> dict:
    return {
        "type": "message",
        "message": {
            "id": client_id,
            "chat_name": chat,
            "chat_type": "private",
            "sender": chat,
            "content": content,
            "timestamp": time.time(),
        },
    }


def test_login_message_reply_ack_delivered(live_server_stack):
    base_url, processes = live_server_stack
    agent, _ = make_agent()

    async def scenario():
        async with httpx.AsyncClient(base_url=base_url) as http:
            login = {"agent_id": agent.id, "api_key": agent.secret}
            tokens = (await http.post("/api/v1/auth/login", json=login)).json()
        ws = await ws_connect(base_url, tokens["access_token"])
        hello = json.loads(await ws.recv())
        assert hello["type"] == "hello" and hello["agent_id"] == agent.id
        await ws.send(json.dumps(message_frame("m-1")))
        accepted = await recv_until(ws, lambda f: f["type"] == "accepted")
        reply = await recv_until(ws, lambda f: f["type"] == "reply")
        await ws.send(json.dumps({"type": "ack", "reply_id": reply["reply_id"], "status": "delivered"}))
        acked = await recv_until(ws, lambda f: f["type"] == "acked")
        await ws.close()
        return accepted, reply, acked

    accepted, reply, acked = asyncio.run(scenario())
    assert accepted["client_id"] == "m-1" and accepted["status"] == "accepted"
    assert reply["message_id"] == accepted["message_id"] and reply["chat"] == "李四"
    assert reply["content"] == "收到：请问充电桩怎么安装？"
    assert acked["status"] == "delivered" and acked["changed"] is True
    stored = Reply.objects.get(pk=reply["reply_id"])
    assert stored.status == "delivered" and stored.acked_at is not None
    assert set(stored.latency_ms) >= {"queue_wait", "rules", "retrieval", "llm", "total"}
    assert Message.objects.get(pk=accepted["message_id"]).status == "decided"
    # decided from the decision queue by the worker's consumer, not by a task per message
    worker_log = processes["worker"].log_path.read_text()
    assert "decision queue consumer started" in worker_log
    assert "apps.messages.tasks.process_message[" not in worker_log


def test_reply_made_while_disconnected_arrives_once_on_reconnect(live_server_stack):
    base_url, _ = live_server_stack
    agent, token = make_agent()

    async def send_and_leave():
        ws = await ws_connect(base_url, token)
        await recv_until(ws, lambda f: f["type"] == "hello")
        await ws.send(json.dumps(message_frame("m-away")))
        accepted = await recv_until(ws, lambda f: f["type"] == "accepted")
        await ws.close()  # gone before the decision
        return accepted["message_id"]

    message_id = asyncio.run(send_and_leave())
    reply = wait_for(lambda: Reply.objects.filter(message_id=message_id).first())
    assert reply.status in ("queued", "sent")

    async def come_back():
        ws = await ws_connect(base_url, token)
        frames = await collect(ws, 2.0)
        replies = [f for f in frames if f["type"] == "reply"]
        for frame in replies:
            await ws.send(json.dumps({"type": "ack", "reply_id": frame["reply_id"], "status": "delivered"}))
        await recv_until(ws, lambda f: f["type"] == "acked")
        await ws.close()
        ws = await ws_connect(base_url, token)  # a third connection gets nothing: it was acked
        again = [f for f in await collect(ws, 1.0) if f["type"] == "reply"]
        await ws.close()
        return replies, again

    replies, again = asyncio.run(come_back())
    assert [f["reply_id"] for f in replies] == [reply.id]
    assert again == []
    assert Reply.objects.get(pk=reply.id).status == "delivered"


def test_same_client_id_five_times_rest_and_ws_is_one_message_one_reply(live_server_stack):
    base_url, _ = live_server_stack
    agent, token = make_agent()
    body = message_frame("dup-1")["message"]

    async def scenario():
        ids = []
        async with httpx.AsyncClient(base_url=base_url, headers={"Authorization": f"Bearer {token}"}) as http:
            ws = await ws_connect(base_url, token)
            await recv_until(ws, lambda f: f["type"] == "hello")
            for i in range(5):
                if i % 2 == 0:
                    resp = await http.post("/api/v1/messages", json={"message": body})
                    assert resp.status_code == 202
                    ids.append(resp.json()["message_id"])
                else:
                    await ws.send(json.dumps({"type": "message", "message": body}))
                    ids.append((await recv_until(ws, lambda f: f["type"] == "accepted"))["message_id"])
            frames = await collect(ws, 2.5)
            await ws.close()
        return ids, [f for f in frames if f["type"] == "reply"]

    ids, replies = asyncio.run(scenario())
    assert len(set(ids)) == 1
    assert Message.objects.filter(agent=agent).count() == 1
    wait_for(lambda: Reply.objects.filter(agent=agent).exists())
    time.sleep(0.5)
    assert Reply.objects.filter(agent=agent).count() == 1
    assert len(replies) == 1


def test_rest_wait_returns_the_decision(live_server_stack):
    base_url, _ = live_server_stack
    _, token = make_agent()
    resp = httpx.post(
        f"{base_url}/api/v1/messages?wait=10",
        headers={"Authorization": f"Bearer {token}"},
        json={"message": message_frame("w-1", content="你好")["message"]},
        timeout=15,
    )
    assert resp.status_code == 200, resp.text
    data = resp.json()
    assert data["action"] == "reply" and data["content"] == "收到：你好" and data["confidence"] == 0.9
    assert data["reply_id"] and data["message_id"]


def test_ws_bad_expired_or_missing_token_closes_4401(live_server_stack):
    base_url, _ = live_server_stack
    agent, _ = make_agent()
    import jwt

    from apps.agents.auth import signing_key

    expired = jwt.encode(
        {"sub": agent.id, "typ": "access", "exp": int(time.time()) - 1}, signing_key(), algorithm="HS256"
    )

    async def close_code(token=None, first_frame=None):
        import websockets

        ws = await ws_connect(base_url, token)
        if first_frame is not None:
            await ws.send(json.dumps(first_frame))
        try:
            while True:
                await asyncio.wait_for(ws.recv(), 5)
        except websockets.ConnectionClosed as exc:
            return exc.rcvd.code if exc.rcvd else None

    async def scenario():
        return [
            await close_code("garbage"),
            await close_code(expired),
            await close_code(None, {"type": "message", "message": {}}),
            await close_code(None, {"type": "auth", "token": "garbage"}),
        ]

    assert asyncio.run(scenario()) == [4401, 4401, 4401, 4401]
    assert Message.objects.count() == 0


def test_first_frame_auth_and_agent_cannot_ack_another_agents_reply(live_server_stack):
    base_url, _ = live_server_stack
    _, token_a = make_agent()
    _, token_b = make_agent()

    async def scenario():
        ws_a = await ws_connect(base_url)
        await ws_a.send(json.dumps({"type": "auth", "token": token_a}))
        await recv_until(ws_a, lambda f: f["type"] == "hello")
        await ws_a.send(json.dumps(message_frame("a-1")))
        reply = await recv_until(ws_a, lambda f: f["type"] == "reply")
        ws_b = await ws_connect(base_url, token_b)
        await recv_until(ws_b, lambda f: f["type"] == "hello")
        await ws_b.send(json.dumps({"type": "ack", "reply_id": reply["reply_id"], "status": "failed"}))
        error = await recv_until(ws_b, lambda f: f["type"] == "error")
        await ws_a.close()
        await ws_b.close()
        return reply, error

    reply, error = asyncio.run(scenario())
    assert error["code"] == "not_found"
    assert Reply.objects.get(pk=reply["reply_id"]).status == "sent"


def test_batched_frames_keep_conversation_order(live_server_stack):
    base_url, _ = live_server_stack
    agent, token = make_agent()

    async def scenario():
        ws = await ws_connect(base_url, token)
        await recv_until(ws, lambda f: f["type"] == "hello")
        batch = [message_frame(f"b-{i}", content=f"第{i}条")["message"] for i in range(20)]
        await ws.send(json.dumps({"type": "messages", "messages": batch}))
        accepted = await recv_until(ws, lambda f: f["type"] == "accepted_batch")
        replies = []
        while len(replies) < 20:
            replies.append(await recv_until(ws, lambda f: f["type"] == "reply"))
        await ws.close()
        return accepted, replies

    accepted, replies = asyncio.run(scenario())
    assert len(accepted["accepted"]) == 20 and accepted["errors"] == []
    assert [r["content"] for r in replies] == [f"收到：第{i}条" for i in range(20)]
    decided = list(Message.objects.filter(agent=agent).order_by("id").values_list("decided_at", flat=True))
    assert decided == sorted(decided)


def test_worker_killed_while_deciding_every_message_still_gets_exactly_one_reply(live_env, tmp_path, settings):
    """kill -9 while the engine is awaited for a REST message and an agent's frame of three: beat's sweep puts
    them back on the decision queue once their claim is older than PIPELINE_CLAIM_TTL, and a new worker
    decides each exactly once."""
    from apps.core.testing import running, start_daphne, start_worker
    from apps.messages import pipeline

    settings.PIPELINE_SWEEP_AFTER = int(live_env["PIPELINE_SWEEP_AFTER"])  # the sweep runs in this process
    settings.PIPELINE_CLAIM_TTL = int(live_env["PIPELINE_CLAIM_TTL"])
    slow = dict(live_env, ECHO_ENGINE_DELAY="4")
    worker = start_worker(slow, tmp_path, name="doomed")
    daphne, base_url = start_daphne(live_env, tmp_path)
    with running(daphne):
        _, token = make_agent()
        single = httpx.post(
            f"{base_url}/api/v1/messages",
            headers={"Authorization": f"Bearer {token}"},
            json={"message": message_frame("k-1", chat="孤单")["message"]},
        ).json()["message_id"]

        async def send_frame():
            ws = await ws_connect(base_url, token)
            await ws.recv()  # hello
            items = [message_frame(f"kb-{i}", chat=f"客户{i}")["message"] for i in range(3)]
            await ws.send(json.dumps({"type": "messages", "messages": items}))
            accepted = await recv_until(ws, lambda f: f["type"] == "accepted_batch")
            await ws.close()
            return [a["message_id"] for a in accepted["accepted"]]

        ids = [single, *asyncio.run(send_frame())]
        wait_for(lambda: Message.objects.filter(pk__in=ids, status="processing").count() == 4)
        worker.kill()
        worker.stop()
        assert not Reply.objects.filter(message_id__in=ids).exists()
        second = start_worker(live_env, tmp_path, name="survivor")
        with running(second):

            def swept_and_decided():  # beat sweeps every 30 s; a claim is stuck past PIPELINE_CLAIM_TTL + 5 s
                pipeline.sweep_stuck()
                return Message.objects.filter(pk__in=ids, status="decided").count() == 4

            wait_for(swept_and_decided, timeout=60, interval=1)
            time.sleep(1)
    assert sorted(Reply.objects.filter(message_id__in=ids).values_list("message_id", flat=True)) == sorted(ids)
    assert all(m.attempts == 2 for m in Message.objects.filter(pk__in=ids))


def test_supervisor_hand_back_reaches_the_agent(live_server_stack):
    from apps.messages import review
    from apps.messages.models import Conversation

    base_url, _ = live_server_stack
    agent, token = make_agent()

    async def scenario():
        ws = await ws_connect(base_url, token)
        await recv_until(ws, lambda f: f["type"] == "hello")
        await ws.send(json.dumps({"type": "takeover", "chat": "李四", "active": True}))
        await ws.send(json.dumps(message_frame("h-1")))
        await recv_until(ws, lambda f: f["type"] == "accepted")
        return ws

    async def wait_hand_back(ws):
        frame = await recv_until(ws, lambda f: f["type"] == "hand_back")
        await ws.close()
        return frame

    loop = asyncio.new_event_loop()
    try:
        ws = loop.run_until_complete(scenario())
        conversation = wait_for(
            lambda: Conversation.objects.filter(agent=agent, chat_name="李四", taken_over=True).first()
        )
        reply = wait_for(lambda: Reply.objects.filter(agent=agent).first())
        assert reply.status == "pending_review" and reply.review_reason == "conversation taken over"
        review.hand_back(conversation.pk)
        frame = loop.run_until_complete(wait_hand_back(ws))
    finally:
        loop.close()
    assert frame == {"type": "hand_back", "chat": "李四"}
    assert not Conversation.objects.get(pk=conversation.pk).taken_over


def test_readyz_stays_ready_while_an_agent_is_connected(live_server_stack):
    """Regression: a readiness probe on its own channel prefix starved behind a connected consumer."""
    base_url, _ = live_server_stack
    _, token = make_agent()

    async def scenario():
        ws = await ws_connect(base_url, token)
        await recv_until(ws, lambda f: f["type"] == "hello")
        async with httpx.AsyncClient(base_url=base_url, timeout=10) as http:
            answers = [await http.get("/readyz") for _ in range(3)]
        await ws.close()
        return answers

    for answer in asyncio.run(scenario()):
        assert answer.status_code == 200, answer.text
