"""REST ingest: storage, idempotency, limits, auth (the worker is not running here)."""

import time

import jwt
import pytest

from apps.agents.auth import signing_key
from apps.messages import services
from apps.messages.models import Conversation, Message, Reply
from apps.messages.tests.helpers import body, make_agent, post

pytestmark = pytest.mark.django_db(transaction=True)


def test_ingest_stores_and_is_idempotent():
    agent, _, token = make_agent()
    first = post(token, body("c-1"))
    assert first.status_code == 202, first.content
    data = first.json()
    assert data["status"] == "accepted" and data["message_id"]
    for _ in range(4):
        again = post(token, body("c-1"))
        assert again.status_code == 202
        assert again.json()["message_id"] == data["message_id"] and again.json()["status"] == "duplicate"
    assert Message.objects.filter(agent=agent).count() == 1
    message = Message.objects.get()
    assert message.trace_id and message.conversation.chat_name == "张三" and message.status == "received"
    assert message.client_timestamp.year == 2025


def test_same_client_id_for_two_agents_is_two_messages():
    _, _, token_a = make_agent()
    _, _, token_b = make_agent()
    assert post(token_a, body("same")).json()["message_id"] != post(token_b, body("same")).json()["message_id"]
    assert Conversation.objects.count() == 2


def test_validation_errors_are_400_with_fields():
    _, _, token = make_agent()
    assert post(token, "{not json").status_code == 400
    resp = post(token, {"message": {"chat_name": "x", "content": ""}})
    assert resp.status_code == 400
    assert {"id", "content"} <= set(resp.json()["detail"]["message"])
    resp = post(token, body("c-2", chat_type="channel"))
    assert resp.status_code == 400 and "chat_type" in resp.json()["detail"]["message"]
    resp = post(token, body("c-3", is_at_me="yes"))
    assert resp.status_code == 400 and "is_at_me" in resp.json()["detail"]["message"]
    assert post(token, {"nothing": 1}).status_code == 400
    assert Message.objects.count() == 0


def test_content_too_long_and_body_too_large(settings):
    settings.MESSAGE_MAX_CHARS = 100
    settings.INGEST_MAX_BODY_BYTES = 2000
    _, _, token = make_agent()
    resp = post(token, body("long", content="长" * 101))
    assert resp.status_code == 400 and resp.json()["code"] == "content_too_long"
    resp = post(token, body("huge", content="x" * 50, padding="y" * 5000))
    assert resp.status_code == 413
    assert post(token, body("ok", content="长" * 100)).status_code == 202


def test_throttle_is_429_with_retry_after(settings):
    settings.INGEST_RATE_LIMIT = 3
    settings.INGEST_RATE_WINDOW = 60
    _, _, token = make_agent()
    codes = [post(token, body(f"t-{i}")).status_code for i in range(5)]
    assert codes[:3] == [202, 202, 202] and codes[3:] == [429, 429]
    resp = post(token, body("t-9"))
    assert resp.status_code == 429 and 1 <= int(resp["Retry-After"]) <= 61
    _, _, other = make_agent()
    assert post(other, body("t-0")).status_code == 202  # per agent


def test_missing_bad_expired_tokens_are_401():
    agent, _, _ = make_agent()
    assert post(None, body("a")).status_code == 401
    assert post("garbage", body("a")).status_code == 401
    expired = jwt.encode(
        {"sub": agent.id, "typ": "access", "exp": int(time.time()) - 1}, signing_key(), algorithm="HS256"
    )
    resp = post(expired, body("a"))
    assert resp.status_code == 401 and resp.json()["code"] == "token_expired"
    refresh = jwt.encode(
        {"sub": agent.id, "typ": "refresh", "exp": int(time.time()) + 60}, signing_key(), algorithm="HS256"
    )
    assert post(refresh, body("a")).status_code == 401
    assert Message.objects.count() == 0


def test_agent_cannot_read_or_ack_another_agents_reply():
    from django.test import Client

    _, _, token_a = make_agent()
    _, _, token_b = make_agent()
    message_id = post(token_a, body("x-1", content="价格是多少")).json()["message_id"]
    services.process(message_id)
    reply = Reply.objects.get(message_id=message_id)
    client = Client()
    own = client.get(f"/api/v1/replies/{reply.id}", HTTP_AUTHORIZATION=f"Bearer {token_a}")
    assert own.status_code == 200 and own.json()["id"] == reply.id
    assert client.get(f"/api/v1/replies/{reply.id}", HTTP_AUTHORIZATION=f"Bearer {token_b}").status_code == 404
    resp = post(token_b, {"status": "delivered"}, path=f"/api/v1/replies/{reply.id}/ack")
    assert resp.status_code == 404
    Reply.objects.filter(pk=reply.id).update(status="queued")
    resp = post(token_a, {"status": "delivered"}, path=f"/api/v1/replies/{reply.id}/ack")
    assert resp.status_code == 200 and resp.json()["changed"] is True
    resp = post(token_a, {"status": "failed"}, path=f"/api/v1/replies/{reply.id}/ack")
    assert resp.json() == {"reply_id": reply.id, "status": "delivered", "changed": False}


@pytest.mark.django_db
def test_rest_takeover_pauses_the_conversation_and_needs_a_token():
    from apps.messages.models import Conversation

    agent, _, token = make_agent()
    assert post(None, {"chat_name": "王五"}, path="/api/v1/conversations/takeover").status_code == 401
    assert post(token, {"active": True}, path="/api/v1/conversations/takeover").status_code == 400
    response = post(token, {"chat_name": "王五", "active": True}, path="/api/v1/conversations/takeover")
    assert response.status_code == 200, response.content
    assert response.json() == {"chat": "王五", "active": True, "found": False}
    assert Conversation.objects.get(agent=agent, chat_name="王五").taken_over is True
    response = post(token, {"chat_name": "王五", "active": False}, path="/api/v1/conversations/takeover")
    assert response.json()["found"] is True
    assert Conversation.objects.get(agent=agent, chat_name="王五").taken_over is False


@pytest.mark.django_db
def test_heartbeat_keeps_ui_latency_and_takeovers():
    agent, _, token = make_agent()
    payload = {"cpu": 1.0, "wx_online": True, "ui_latency_ms": 42.5, "takeovers": 2, "api_key": "never-stored"}
    assert post(token, payload, path="/api/v1/heartbeat").status_code == 200
    agent.refresh_from_db()
    assert agent.last_heartbeat["ui_latency_ms"] == 42.5 and agent.last_heartbeat["takeovers"] == 2
    assert "api_key" not in agent.last_heartbeat
