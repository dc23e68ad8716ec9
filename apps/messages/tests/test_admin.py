"""Supervisor flows in the real admin: timeline, approve with edit, reject, take over / hand back."""

import pytest
from django.contrib.auth import get_user_model

from apps.messages import services
from apps.messages.models import Conversation, Reply
from apps.messages.tests.helpers import make_agent
from apps.messages.tests.test_services import store

pytestmark = pytest.mark.django_db(transaction=True)


@pytest.fixture
def supervisor(client):
    user = get_user_model().objects.create_superuser("sup", password="pw-123456")
    client.force_login(user)
    return user


def test_timeline_and_approve_with_edit(client, supervisor, fake_engine):
    agent, _, _ = make_agent()
    fake_engine.confidence = 0.2
    mid = store(agent, "adm-1", content="能便宜点吗？")
    services.process(mid)
    reply = Reply.objects.get(message_id=mid)
    page = client.get(f"/admin/wxmessages/conversation/{reply.conversation_id}/change/")
    assert page.status_code == 200
    html = page.content.decode()
    assert "能便宜点吗？" in html and "待审核" in html and f"/admin/wxmessages/reply/{reply.id}/change/" in html
    page = client.get(f"/admin/wxmessages/reply/{reply.id}/change/")
    assert page.status_code == 200 and "_approve" in page.content.decode()
    resp = client.post(f"/admin/wxmessages/reply/{reply.id}/change/", {"content": "可以给您九五折。", "_approve": "1"})
    assert resp.status_code == 302
    reply.refresh_from_db()
    assert (reply.status, reply.content, reply.reviewed_by) == ("queued", "可以给您九五折。", supervisor)
    assert client.get("/admin/wxmessages/reply/?status__exact=pending_review").status_code == 200


def test_reject_and_bulk_actions(client, supervisor, fake_engine):
    agent, _, _ = make_agent()
    fake_engine.confidence = 0.2
    ids = [store(agent, f"adm-{i}") for i in range(3)]
    services.process(ids[-1])
    replies = list(Reply.objects.order_by("id"))
    resp = client.post(f"/admin/wxmessages/reply/{replies[0].id}/change/", {"content": "x", "_reject": "1"})
    assert resp.status_code == 302 and Reply.objects.get(pk=replies[0].id).status == "rejected"
    resp = client.post(
        "/admin/wxmessages/reply/", {"action": "approve_selected", "_selected_action": [replies[1].id, replies[2].id]}
    )
    assert resp.status_code == 302
    assert set(Reply.objects.filter(pk__in=[replies[1].id, replies[2].id]).values_list("status", flat=True)) == {
        "queued"
    }


def test_take_over_and_hand_back(client, supervisor, fake_engine):
    agent, _, _ = make_agent()
    mid = store(agent, "adm-t")
    conversation = Conversation.objects.get(messages__id=mid)
    resp = client.post(
        "/admin/wxmessages/conversation/", {"action": "take_over", "_selected_action": [conversation.id]}
    )
    assert resp.status_code == 302
    conversation.refresh_from_db()
    assert conversation.taken_over and conversation.taken_over_by == supervisor
    services.process(mid)
    assert Reply.objects.get(message_id=mid).status == "pending_review"
    client.post("/admin/wxmessages/conversation/", {"action": "hand_back", "_selected_action": [conversation.id]})
    assert not Conversation.objects.get(pk=conversation.id).taken_over
    assert client.get("/admin/wxmessages/conversation/").status_code == 200
    assert client.get("/admin/agents/agent/").status_code == 200
    assert client.get("/admin/wxmessages/message/").status_code == 200
