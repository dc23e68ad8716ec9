"""The outbox: unacked replies are pushed again on every (re)connect, oldest first; acks are conditional and
idempotent; no agent sees or acks another's reply (WebSocket and REST alike)."""

import pytest

from apps.messages.models import Reply
from apps.messages.tests.factories import ConversationFactory, MessageFactory, ReplyFactory
from apps.messages.tests.helpers import frames_until, make_agent, post, ws_session

pytestmark = pytest.mark.django_db(transaction=True)


def get(token: str, path: str):
    import httpx

    from apps.core import aio
    from apps.messages.tests.helpers import application

    async def send():
        transport = httpx.ASGITransport(app=application())
        async with httpx.AsyncClient(transport=transport, base_url="http://testserver") as client:
            return await client.get(path, headers={"Authorization": f"Bearer {token}"})

    return aio.run(send(), timeout=30)


def outbox_of(agent, n: int) -> list[Reply]:
    conversation = ConversationFactory(agent=agent)
    return [ReplyFactory(message=MessageFactory(conversation=conversation, status="decided")) for _ in range(n)]


def test_every_unacked_reply_is_pushed_on_connect_oldest_first_and_marked_sent():
    agent, token = make_agent()
    replies = outbox_of(agent, 3)
    Reply.objects.filter(pk=replies[0].pk).update(status="delivered")
    ReplyFactory(status="pending_review", message=MessageFactory(conversation=replies[0].conversation))

    async def script(ws):
        return await frames_until(ws, "hello") + [await ws.receive_json_from() for _ in range(2)]

    frames = ws_session(token, script)
    assert [f["reply_id"] for f in frames[1:]] == [replies[1].id, replies[2].id]
    assert {(r.status, r.delivery_attempts) for r in Reply.objects.filter(pk__in=[replies[1].pk, replies[2].pk])} == {
        ("sent", 1)
    }
    again = ws_session(token, script)  # not acked yet: pushed again on the next connect
    assert [f["reply_id"] for f in again[1:]] == [replies[1].id, replies[2].id]


def test_an_ack_is_conditional_idempotent_and_only_the_owners():
    agent, token = make_agent()
    _, stranger = make_agent()
    reply = outbox_of(agent, 1)[0]

    async def ack(ws, **frame):
        await ws.send_json_to({"type": "ack", "reply_id": reply.id, **frame})
        return await ws.receive_json_from()

    async def strangers(ws):
        await frames_until(ws, "hello")
        return await ack(ws, status="delivered")

    async def owners(ws):
        await frames_until(ws, "reply")
        return [
            await ack(ws, status="sent"),
            await ack(ws, status="delivered", error="\x00" * 3),  # the one text rule: refused, not stripped
            await ack(ws, status="delivered"),
            await ack(ws, status="failed"),
        ]

    assert ws_session(stranger, strangers) == {
        "type": "error",
        "code": "not_found",
        "detail": "no such reply",
        "reply_id": reply.id,
        "frame": "ack",
    }
    refused, nul, first, repeat = ws_session(token, owners)
    assert refused["code"] == "invalid" and nul["code"] == "invalid" and "NUL" in nul["detail"]
    assert first == {"type": "acked", "reply_id": reply.id, "status": "delivered", "changed": True}
    assert repeat == {"type": "acked", "reply_id": reply.id, "status": "delivered", "changed": False}
    stored = Reply.objects.get(pk=reply.pk)
    assert stored.status == "delivered" and stored.acked_at and stored.delivery_error == ""


def test_rest_outbox_and_ack_are_the_same_outbox():
    agent, token = make_agent()
    _, stranger = make_agent()
    replies = outbox_of(agent, 2)
    listed = get(token, "/api/v1/replies")
    assert listed.status_code == 200
    assert [(r["type"], r["reply_id"], r["chat"]) for r in listed.json()] == [
        ("reply", reply.id, reply.conversation.chat_name) for reply in replies
    ]
    assert get(stranger, "/api/v1/replies").json() == []
    assert get(stranger, f"/api/v1/replies/{replies[0].id}").status_code == 404
    assert get(token, f"/api/v1/replies/{replies[0].id}").json()["status"] == "queued"
    assert post(stranger, {"status": "delivered"}, path=f"/api/v1/replies/{replies[0].id}/ack").status_code == 404
    assert post(token, {"status": "sent"}, path=f"/api/v1/replies/{replies[0].id}/ack").status_code == 400
    acked = post(token, {"status": "failed", "error": "窗口最小化"}, path=f"/api/v1/replies/{replies[0].id}/ack")
    assert acked.json() == {"reply_id": replies[0].id, "status": "failed", "changed": True}
    assert [r["reply_id"] for r in get(token, "/api/v1/replies").json()] == [replies[1].id]
    assert Reply.objects.get(pk=replies[0].pk).delivery_error == "窗口最小化"


def test_the_outbox_page_bounds_a_push(settings):
    settings.OUTBOX_PAGE = 2
    agent, token = make_agent()
    replies = outbox_of(agent, 3)
    assert [r["reply_id"] for r in get(token, "/api/v1/replies").json()] == [replies[0].id, replies[1].id]
