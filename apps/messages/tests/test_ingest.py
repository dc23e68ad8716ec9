"""Ingest, through the real ASGI application: REST (`POST /api/v1/messages`) and the agent's WebSocket store
the same way, refuse the same hostile input the same way, and lose nothing else. (No worker runs here.)"""

import asyncio
import time

import jwt
import pytest

from apps.agents import services as agent_services
from apps.agents.auth import signing_key
from apps.core import redis
from apps.messages import queue
from apps.messages.models import Conversation, Message
from apps.messages.tests.helpers import frames_until, make_agent, message, post, ws_session

pytestmark = pytest.mark.django_db(transaction=True)


def queued() -> list[queue.Entry]:
    return [queue.Entry.decode(raw.decode()) for raw in redis.client().lrange(queue.pending_key(), 0, -1)]


def test_rest_stores_queues_and_repeats_are_duplicates():
    agent, token = make_agent()
    first = post(token, {"message": message("c-1")})
    assert first.status_code == 202, first.text
    data = first.json()
    assert data["status"] == "accepted" and data["message_id"] and data["client_id"] == "c-1"
    for _ in range(4):
        again = post(token, {"message": message("c-1")})
        assert again.status_code == 202
        assert again.json() == {**data, "status": "duplicate", "duplicate": True}
    stored = Message.objects.get(agent=agent)
    assert stored.status == "received" and stored.conversation.chat_name == "张三" and stored.trace_id
    assert stored.client_timestamp.year == 2025
    assert [(e.message_id, e.conversation_id) for e in queued()] == [(stored.id, stored.conversation_id)]


def test_ws_stores_like_rest_one_message_for_one_client_id():
    agent, token = make_agent()
    rest = post(token, {"message": message("same")}).json()

    async def script(ws):
        await frames_until(ws, "hello")
        await ws.send_json_to({"type": "message", "message": message("same")})
        single = await ws.receive_json_from()
        await ws.send_json_to({"type": "messages", "messages": [message("same"), message("new")]})
        return single, await ws.receive_json_from()

    single, batch = ws_session(token, script)
    assert single == {"type": "accepted", **rest, "status": "duplicate", "duplicate": True}
    assert [a["status"] for a in batch["accepted"]] == ["duplicate", "accepted"] and batch["errors"] == []
    assert Message.objects.filter(agent=agent).count() == 2 and len(queued()) == 2


def test_same_client_id_for_two_agents_is_two_messages():
    _, token_a = make_agent()
    _, token_b = make_agent()
    assert post(token_a, message("same")).json()["message_id"] != post(token_b, message("same")).json()["message_id"]
    assert Conversation.objects.count() == 2


@pytest.mark.parametrize(
    ("item", "field"),
    [
        ({"chat_name": "x", "content": ""}, "content"),
        (message("c-2", chat_type="channel"), "chat_type"),
        (message("c-3", is_at_me="yes"), "is_at_me"),
        (message("c-4", content="有\x00空字符"), "content"),
        (message("c-5", sender="\ud800"), "sender"),
        (message("c-6", content=["not", "text"]), "content"),
        (message("c-7", timestamp="yesterday"), "timestamp"),
        (message("c-8", chat_name="", chat_id=""), "chat_name"),
        (message("c-9", id="x" * 129), "id"),
    ],
)
def test_hostile_fields_are_400_with_the_field_named_and_nothing_stored(item, field):
    _, token = make_agent()
    response = post(token, {"message": item})
    assert response.status_code == 400, response.text
    assert response.json()["code"] == "invalid" and field in response.json()["detail"]["message"]
    assert Message.objects.count() == 0 and queued() == []


def test_malformed_bodies_are_400():
    _, token = make_agent()
    for body in ("{not json", "[1, 2]", '{"nothing": 1}', b"\xff\xfe"):
        assert post(token, body).status_code == 400
    assert Message.objects.count() == 0


def test_a_hostile_message_in_a_ws_batch_is_refused_alone():
    agent, token = make_agent()

    async def script(ws):
        await frames_until(ws, "hello")
        items = [message("ok-1"), message("bad", content="\x00"), "not an object", message("ok-2")]
        await ws.send_json_to({"type": "messages", "messages": items})
        batch = await ws.receive_json_from()
        await ws.send_to(text_data="{broken")
        broken = await ws.receive_json_from()
        await ws.send_json_to({"type": "message", "message": message("bad-2", chat_type="channel")})
        return batch, broken, await ws.receive_json_from()

    batch, broken, single = ws_session(token, script)
    assert [a["client_id"] for a in batch["accepted"]] == ["ok-1", "ok-2"]
    assert [e["client_id"] for e in batch["errors"]] == ["bad", None]
    assert "content" in batch["errors"][0]["detail"]
    assert broken["code"] == "malformed"
    assert single["code"] == "invalid" and single["client_id"] == "bad-2" and "chat_type" in single["detail"]
    assert set(Message.objects.filter(agent=agent).values_list("client_msg_id", flat=True)) == {"ok-1", "ok-2"}


def test_content_too_long_and_body_too_large(settings):
    settings.MESSAGE_MAX_CHARS = 100
    settings.INGEST_MAX_BODY_BYTES = 2000
    _, token = make_agent()
    response = post(token, {"message": message("long", content="长" * 101)})
    assert response.status_code == 400 and response.json()["code"] == "content_too_long"
    assert post(token, {"message": message("huge", content="x" * 50, padding="y" * 5000)}).status_code == 413
    assert post(token, {"message": message("ok", content="长" * 100)}).status_code == 202


def test_throttle_refuses_an_agent_once_its_window_is_used_up(settings):
    settings.INGEST_RATE_LIMIT = 3
    settings.INGEST_RATE_WINDOW = 60
    agent, token = make_agent()
    codes = [post(token, message(f"t-{i}")).status_code for i in range(5)]
    assert codes == [202, 202, 202, 429, 429]
    response = post(token, message("t-9"))
    assert response.status_code == 429 and 1 <= int(response.headers["Retry-After"]) <= 60
    assert response.json()["code"] == "throttled"
    assert Message.objects.filter(agent=agent).count() == 3  # nothing of a refused request is stored
    _, other = make_agent()
    assert post(other, message("t-0")).status_code == 202  # per agent


def test_throttle_over_ws_takes_the_frame_that_uses_the_window_up_then_refuses(settings):
    settings.INGEST_RATE_LIMIT = 2
    agent, token = make_agent()

    async def script(ws):
        await frames_until(ws, "hello")
        await ws.send_json_to({"type": "messages", "messages": [message("w-1"), message("w-2"), message("w-3")]})
        accepted = await ws.receive_json_from()
        await ws.send_json_to({"type": "message", "message": message("w-4")})
        return accepted, await ws.receive_json_from()

    accepted, refused = ws_session(token, script)
    assert len(accepted["accepted"]) == 3  # one request beyond the limit at most (per web process)
    assert refused["type"] == "error" and refused["code"] == "throttled" and refused["retry_after"] >= 1
    assert set(Message.objects.filter(agent=agent).values_list("client_msg_id", flat=True)) == {"w-1", "w-2", "w-3"}


def wait_queued(count: int, within: float = 5.0) -> list[queue.Entry]:
    deadline = time.monotonic() + within
    while len(queued()) < count and time.monotonic() < deadline:
        time.sleep(0.05)
    return queued()


@pytest.mark.parametrize("failure", ["refused", "hangs"])
def test_ingest_goes_on_when_redis_is_away_and_queues_once_it_is_back(settings, monkeypatch, failure):
    """Stored and 202 (the throttle fails open) within about REDIS_OPTIONAL_TIMEOUT, and queued by this process
    as soon as Redis answers again: no sweep needed."""
    settings.INGEST_RATE_LIMIT = 1
    settings.REDIS_OPTIONAL_TIMEOUT = 0.3
    real_batched = redis.batched

    async def redis_down(*args):
        if failure == "hangs":
            await asyncio.sleep(3600)
        raise ConnectionError("Redis is away")

    _, token = make_agent()
    monkeypatch.setattr(redis, "batched", redis_down)
    started = time.monotonic()
    assert [post(token, message(f"r-{i}")).status_code for i in range(3)] == [202, 202, 202]
    assert time.monotonic() - started < 3 * 0.3 + 1.0  # nobody waits on Redis longer than the timeout
    stored = list(Message.objects.filter(status="received").order_by("id").values_list("id", flat=True))
    assert len(stored) == 3
    time.sleep(1.5)  # Redis still away: the held entries are retried, and kept
    assert queued() == []

    monkeypatch.setattr(redis, "batched", real_batched)
    assert [entry.message_id for entry in wait_queued(3)] == stored  # oldest first, each once
    time.sleep(1.5)
    assert len(queued()) == 3


def test_missing_bad_expired_and_disabled_tokens_are_401():
    agent, token = make_agent()
    assert post(None, message("a")).status_code == 401
    assert post("garbage", message("a")).status_code == 401
    expired = jwt.encode(
        {"sub": agent.id, "typ": "access", "exp": int(time.time()) - 10, "jti": "x"}, signing_key(), algorithm="HS256"
    )
    response = post(expired, message("a"))
    assert response.status_code == 401 and response.json()["code"] == "token_expired"
    assert response.headers["WWW-Authenticate"].startswith("Bearer")
    agent.is_active = False
    agent_services.save_agent(agent)
    assert post(token, message("a")).json()["code"] == "agent_disabled"
    assert Message.objects.count() == 0
