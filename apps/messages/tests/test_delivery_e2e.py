"""Delivery that never silently stops, through real processes (Daphne, a Celery worker, Celery beat, PostgreSQL,
Redis; the agent is a `websockets` client that acks what it gets).

- Group membership: the channel layer is channels-redis' RedisPubSubChannelLayer. It has no group expiry (that is
  a setting of its other layer, RedisChannelLayer, which keeps groups in sorted sets): a socket's membership is
  its web process's SUBSCRIBE, held for as long as the socket lives. What can drop it is Redis dropping that
  connection — so the test kills it and checks that the open socket still gets replies.
- A push whose publish Redis refuses is pushed again by beat's outbox sweep within seconds, on the same socket.
- A reconnecting agent gets its whole backlog (1,200 unacked replies, more than two OUTBOX_PAGEs), oldest first.

The first two run the stack on a redis-server of their own (they break Redis on purpose).
"""

import asyncio
import json
import sys
import time
from datetime import timedelta

import psutil
import pytest
import redis
from django.utils import timezone

from apps.agents.services import socket_group
from apps.core.testing import Process, RedisServer, running, start_daphne, start_worker
from apps.messages.models import Message, Reply
from apps.messages.testing import collect, recv_until, ws_connect
from apps.messages.tests.factories import ConversationFactory
from apps.messages.tests.helpers import make_agent
from conftest import requires_services

pytestmark = [pytest.mark.e2e, requires_services]

REDELIVER_AFTER = 2  # OUTBOX_REDELIVER_AFTER of the stack, seconds


def message_frame(client_id: str, content: str = "请问充电桩怎么安装？", chat: str = "王五") -> str:
    item = {"id": client_id, "chat_name": chat, "chat_type": "private", "sender": chat, "content": content}
    return json.dumps({"type": "message", "message": {**item, "timestamp": time.time()}})


def ack_frame(reply: dict) -> str:
    return json.dumps({"type": "ack", "reply_id": reply["reply_id"], "status": "delivered"})


def is_reply(frame: dict) -> bool:
    return frame["type"] == "reply"


@pytest.fixture
def own_redis(tmp_path):
    """A redis-server of this test's own (the shared one is never stopped or reconfigured)."""
    server = RedisServer(tmp_path)
    server.start()
    client = redis.Redis(port=server.port, socket_timeout=5, decode_responses=True)
    yield client, server.url
    client.close()
    server.stop()


@pytest.fixture
def stack(live_env, tmp_path, own_redis):
    """Daphne, a worker and beat on the own Redis (beat's outbox sweep every second), and an agent made before
    they start (its creation bumps the enabled-agents cache version on the test's Redis, not on theirs)."""
    client, url = own_redis
    agent, token = make_agent()
    env = {**live_env, "REDIS_URL": url, "OUTBOX_REDELIVER_AFTER": str(REDELIVER_AFTER), "OUTBOX_SWEEP_INTERVAL": "1"}
    worker = start_worker(env, tmp_path)
    beat_argv = [sys.executable, "-m", "celery", "-A", "celery_app", "beat", "--loglevel", "INFO"]
    beat = Process("beat", [*beat_argv, "-s", str(tmp_path / "beat-schedule")], env, tmp_path)
    try:
        daphne, base_url = start_daphne(env, tmp_path)
    except Exception:
        worker.stop()
        beat.stop()
        raise
    with running(daphne, worker, beat):
        yield base_url, {"daphne": daphne, "worker": worker, "beat": beat}, client, env, (agent, token)


async def wait_for_log(process: Process, text: str, within: float = 15) -> None:
    deadline = time.monotonic() + within
    while text not in process.log_path.read_text(errors="replace"):
        assert time.monotonic() < deadline, f"{text!r} not in the {process.name} log:\n{process.log_tail()}"
        await asyncio.sleep(0.1)


def drop_subscriptions_of(process: Process, redis_client) -> int:
    """Close, on the Redis side, the pub/sub connections of `process` (and its children); how many."""
    port = int(redis_client.connection_pool.connection_kwargs["port"])
    tree = psutil.Process(process.popen.pid)
    local = {
        f"{conn.laddr.ip}:{conn.laddr.port}"
        for proc in (tree, *tree.children(recursive=True))
        for conn in proc.net_connections(kind="tcp")
        if conn.raddr and conn.raddr.port == port
    }
    pubsub = [c["id"] for c in redis_client.client_list() if c["addr"] in local and int(c.get("sub", 0)) > 0]
    for client_id in pubsub:
        redis_client.client_kill_filter(_id=client_id)
    return len(pubsub)


def test_an_open_socket_keeps_getting_replies_after_redis_drops_its_group_subscription(stack):
    base_url, processes, redis_client, env, (agent, token) = stack
    group_channel = f"{env['CACHE_KEY_PREFIX']}:asgi__group__{socket_group(agent.id)}"

    async def scenario():
        ws = await ws_connect(base_url, token)
        await recv_until(ws, lambda f: f["type"] == "hello")
        await ws.send(message_frame("before"))
        before = await recv_until(ws, is_reply)
        await ws.send(ack_frame(before))
        subscribed = redis_client.pubsub_numsub(group_channel)[0][1]
        killed = drop_subscriptions_of(processes["daphne"], redis_client)  # Redis forgets the socket's membership
        await asyncio.sleep(REDELIVER_AFTER + 2)  # the socket lives on, idle
        await ws.send(message_frame("after", "充电桩坏了怎么报修？"))
        after = await recv_until(ws, is_reply, within=15)
        await ws.send(ack_frame(after))
        await recv_until(ws, lambda f: f["type"] == "acked" and f["reply_id"] == after["reply_id"])
        resubscribed = redis_client.pubsub_numsub(group_channel)[0][1]
        await ws.close()
        return before, after, subscribed, killed, resubscribed

    before, after, subscribed, killed, resubscribed = asyncio.run(scenario())
    assert subscribed == 1 and killed >= 1
    assert after["content"] == "收到：充电桩坏了怎么报修？" and after["reply_id"] != before["reply_id"]
    assert resubscribed == 1, processes["daphne"].log_tail()  # the web process subscribed again by itself
    assert Reply.objects.get(pk=after["reply_id"]).status == "delivered"


def test_a_push_redis_refuses_is_sent_again_within_seconds_on_the_same_socket(stack):
    base_url, processes, redis_client, _, (_, token) = stack

    async def scenario():
        ws = await ws_connect(base_url, token)
        await recv_until(ws, lambda f: f["type"] == "hello")
        await ws.send(message_frame("first"))
        first = await recv_until(ws, is_reply)
        await ws.send(ack_frame(first))
        redis_client.acl_setuser("default", enabled=True, categories=["+@all"], commands=["-publish"], reset=False)
        try:
            await ws.send(message_frame("lost", "你们几点下班？"))
            accepted = await recv_until(ws, lambda f: f["type"] == "accepted")
            await wait_for_log(processes["worker"], "failed; it stays in the outbox")
            during = [f for f in await collect(ws, 1.0) if is_reply(f)]
        finally:
            redis_client.acl_setuser("default", enabled=True, commands=["+publish"], reset=False)
        restored = time.monotonic()
        again = await recv_until(ws, is_reply, within=15)
        waited = time.monotonic() - restored
        await ws.send(ack_frame(again))
        await recv_until(ws, lambda f: f["type"] == "acked" and f["reply_id"] == again["reply_id"])
        await ws.close()
        return accepted, during, again, waited

    accepted, during, again, waited = asyncio.run(scenario())
    assert during == []  # the decided reply's publish was refused: nothing reached the socket
    assert again["message_id"] == accepted["message_id"] and again["content"] == "收到：你们几点下班？"
    assert waited < REDELIVER_AFTER + 5, waited
    reply = Reply.objects.get(pk=again["reply_id"])
    assert reply.status == "delivered" and reply.delivery_attempts >= 2
    assert "unacked replies pushed again" in processes["worker"].log_path.read_text()


def backlog_of(agent, size: int, acked: set[int]) -> list[int]:
    """`size` unacked replies of the agent (pushed before and never acked, or approved and never pushed) and
    the `acked` ones among them already delivered; the unacked ids, oldest first."""
    conversation = ConversationFactory(agent=agent)
    now = timezone.now()
    messages = Message.objects.bulk_create(
        Message(
            agent=agent,
            conversation=conversation,
            client_msg_id=f"backlog-{n}",
            sender=conversation.chat_name,
            content=f"问题 {n}",
            status="decided",
            received_at=now,
        )
        for n in range(size)
    )
    earlier_push = now - timedelta(hours=1)
    replies = Reply.objects.bulk_create(
        Reply(
            message=message,
            conversation=conversation,
            agent=agent,
            content=f"答复 {n}",
            status="delivered" if n in acked else ("sent" if n % 2 else "queued"),
            created_at=now,
            pushed_at=earlier_push if n % 2 else None,
        )
        for n, message in enumerate(messages)
    )
    return sorted(reply.id for reply in replies if reply.status != "delivered")


def test_1200_unacked_replies_all_reach_a_reconnecting_agent_oldest_first(live_server_stack):
    base_url, _ = live_server_stack
    agent, token = make_agent()
    expected = backlog_of(agent, 1203, acked={0, 600, 1202})
    assert len(expected) == 1200

    async def reconnect():
        ws = await ws_connect(base_url, token)
        await recv_until(ws, lambda f: f["type"] == "hello")
        got, acked = [], 0
        while len(got) < len(expected) or acked < len(expected):  # as the agent: close once its acks are answered
            frame = await recv_until(ws, lambda f: is_reply(f) or f["type"] == "acked", within=30)
            if frame["type"] == "acked":
                acked += 1
                continue
            got.append(frame["reply_id"])
            await ws.send(ack_frame(frame))
        await ws.close()
        return got

    started = time.monotonic()
    got = asyncio.run(reconnect())
    took = time.monotonic() - started
    assert got == expected, took  # each once, oldest first

    deadline = time.monotonic() + 20
    while Reply.objects.filter(agent=agent, status="delivered").count() < 1203:
        assert time.monotonic() < deadline, "acks not all stored"
        time.sleep(0.2)

    async def come_back():
        ws = await ws_connect(base_url, token)
        frames = await collect(ws, 1.5)
        await ws.close()
        return [f for f in frames if is_reply(f)]

    assert asyncio.run(come_back()) == []  # all acked: nothing more
