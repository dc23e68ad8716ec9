"""The review queue and takeover, as a supervisor uses them in the admin and as the agent reports them."""

import pytest
from django.contrib.auth import get_user_model

from apps.core import aio
from apps.core.db import run_db
from apps.knowledge.models import Candidate
from apps.messages import pipeline
from apps.messages.models import Conversation, Reply
from apps.messages.tests.factories import ConversationFactory, MessageFactory, ReplyFactory
from apps.messages.tests.helpers import frames_until, make_agent, post, ws_session
from apps.messages.tests.test_pipeline import listening

pytestmark = pytest.mark.django_db(transaction=True)


@pytest.fixture
def supervisor(client):
    user = get_user_model().objects.create_superuser("sup", password="pw-123456")
    client.force_login(user)
    return user


def held(content: str = "能便宜点吗？", **fields) -> Reply:
    message = MessageFactory(content=content, status="decided")
    return ReplyFactory(message=message, status="pending_review", review_reason="low confidence 0.20", **fields)


def test_approve_with_an_edit_pushes_the_edit_and_proposes_it_as_knowledge(client, supervisor):
    reply = held(content="能便宜点吗？", confidence=0.2)
    page = client.get(f"/admin/wxmessages/conversation/{reply.conversation_id}/change/")
    html = page.content.decode()
    assert page.status_code == 200 and "能便宜点吗？" in html and f"/admin/wxmessages/reply/{reply.id}/change/" in html
    assert "_approve" in client.get(f"/admin/wxmessages/reply/{reply.id}/change/").content.decode()
    with listening(f"agent.{reply.agent_id}") as pushed:
        answer = client.post(
            f"/admin/wxmessages/reply/{reply.id}/change/", {"content": "可以九五折。", "_approve": "1"}
        )
    assert answer.status_code == 302
    reply.refresh_from_db()
    assert (reply.status, reply.content, reply.source, reply.reviewed_by) == (
        "queued",
        "可以九五折。",
        "human",
        supervisor,
    )
    assert [event["frame"]["content"] for event in pushed] == ["可以九五折。"]
    assert Candidate.objects.filter(answer="可以九五折。").exists()
    assert client.get("/admin/wxmessages/reply/?status__exact=pending_review").status_code == 200


def test_approving_twice_or_a_reply_not_held_does_nothing(supervisor):
    from apps.messages import review

    reply = held()
    assert review.approve(reply.id, supervisor) is True
    assert review.approve(reply.id, supervisor) is False
    assert review.approve(ReplyFactory(status="delivered").id, supervisor) is False
    assert review.approve(held(content="x", draft="").id, supervisor, content="   ") is True  # keeps the draft


def test_reject_and_bulk_actions(client, supervisor):
    replies = [held() for _ in range(3)]
    client.post(f"/admin/wxmessages/reply/{replies[0].id}/change/", {"_reject": "1"})
    assert Reply.objects.get(pk=replies[0].pk).status == "rejected"
    client.post(
        "/admin/wxmessages/reply/",
        {"action": "approve_selected", "_selected_action": [replies[1].pk, replies[2].pk]},
    )
    assert set(Reply.objects.filter(pk__in=[replies[1].pk, replies[2].pk]).values_list("status", flat=True)) == {
        "queued"
    }


def test_taking_over_holds_new_replies_and_handing_back_tells_the_agent(client, supervisor, fake_engine):
    agent, token = make_agent()
    conversation = ConversationFactory(agent=agent, chat_name="王五")
    client.post("/admin/wxmessages/conversation/", {"action": "take_over", "_selected_action": [conversation.pk]})
    conversation.refresh_from_db()
    assert conversation.taken_over and conversation.taken_over_by == supervisor
    message = MessageFactory(conversation=conversation)
    aio.run(pipeline.process(message.id, conversation.id))
    assert Reply.objects.get(message=message).review_reason == "conversation taken over"

    async def script(ws):
        await frames_until(ws, "hello")
        form = {"action": "hand_back", "_selected_action": [conversation.pk]}
        await run_db(client.post, "/admin/wxmessages/conversation/", form)
        return await frames_until(ws, "hand_back")

    assert ws_session(token, script)[-1] == {"type": "hand_back", "chat": "王五"}
    assert not Conversation.objects.get(pk=conversation.pk).taken_over


def test_the_agent_reports_a_person_typing_over_ws_and_rest():
    agent, token = make_agent()

    async def script(ws):
        await frames_until(ws, "hello")
        await ws.send_json_to({"type": "takeover", "chat": "赵六", "active": True})
        return await ws.receive_json_from()

    assert ws_session(token, script) == {"type": "takeover_ok", "chat": "赵六", "active": True, "found": False}
    assert Conversation.objects.get(agent=agent, chat_name="赵六").taken_over
    answer = post(token, {"chat_name": "赵六", "active": False}, path="/api/v1/conversations/takeover")
    assert answer.json() == {"chat": "赵六", "active": False, "found": True}
    assert not Conversation.objects.get(agent=agent, chat_name="赵六").taken_over
    assert post(None, {"chat_name": "赵六"}, path="/api/v1/conversations/takeover").status_code == 401
    assert post(token, {"active": True}, path="/api/v1/conversations/takeover").status_code == 400


def test_the_admin_pages_link_to_each_messages_trace(fake_engine, admin_client):
    message = MessageFactory()
    aio.run(pipeline.process(message.id, message.conversation_id))
    reply = Reply.objects.get(message=message)
    trace = message.trace_id.hex
    page = admin_client.get(f"/admin/wxmessages/conversation/{message.conversation_id}/change/").content.decode()
    assert f'href="/dashboard/conversations/{message.conversation_id}/trace/"' in page
    assert (
        f'href="/dashboard/traces/{trace}/"'
        in admin_client.get(f"/admin/wxmessages/reply/{reply.pk}/change/").content.decode()
    )
    assert f'href="/dashboard/traces/{trace}/"' in admin_client.get("/admin/wxmessages/message/").content.decode()
    trace_page = admin_client.get(f"/dashboard/conversations/{message.conversation_id}/trace/")
    assert trace_page.status_code == 200 and f"message {message.id} decided" in trace_page.content.decode()
    for listing in ("/admin/wxmessages/conversation/", "/admin/wxmessages/reply/", "/admin/agents/agent/"):
        assert admin_client.get(listing).status_code == 200
