"""`GET /api/v1/stats`: real numbers from the database, per day in the server time zone."""

from datetime import timedelta

import pytest
from django.contrib.auth import get_user_model
from django.utils import timezone

from apps.core import aio
from apps.core.tests.helpers import staff_user
from apps.messages import pipeline, selectors
from apps.messages.api import VIEW_STATS
from apps.messages.models import Message, Reply
from apps.messages.tests.factories import ConversationFactory, MessageFactory
from apps.messages.tests.helpers import make_agent

pytestmark = pytest.mark.django_db(transaction=True)


def test_stats_are_real_numbers(fake_engine, client):
    agent, token = make_agent()
    conversation = ConversationFactory(agent=agent)
    for _ in range(4):
        message = MessageFactory(conversation=conversation)
        aio.run(pipeline.process(message.id, conversation.id))
    fake_engine.confidence = 0.1
    low = MessageFactory(conversation=conversation)
    aio.run(pipeline.process(low.id, conversation.id))
    Reply.objects.update(latency_ms={"total": 10.0})
    Reply.objects.filter(pk=Reply.objects.order_by("id").first().pk).update(latency_ms={"total": 100.0})

    data = selectors.stats(7)
    today = data["per_day"][-1]
    assert today["date"] == timezone.localdate().isoformat()
    assert (today["messages"], today["replies"], today["handoffs"], today["pending_review"]) == (5, 4, 1, 1)
    assert today["p95_latency_ms"] == 100.0 and today["avg_latency_ms"] == pytest.approx(28.0)
    assert today["cost"] == pytest.approx(0.006) and data["totals"]["messages"] == 5

    answer = client.get("/api/v1/stats?days=3", HTTP_AUTHORIZATION=f"Bearer {token}")
    assert answer.status_code == 200 and answer.json()["agent_id"] == agent.id and len(answer.json()["per_day"]) == 3
    assert client.get("/api/v1/stats").status_code == 401
    for bad in ("0", "91", "seven"):
        assert client.get(f"/api/v1/stats?days={bad}", HTTP_AUTHORIZATION=f"Bearer {token}").status_code == 400
    client.force_login(get_user_model().objects.create_user("clerk", password="x", is_staff=True))
    assert client.get("/api/v1/stats").status_code == 403  # staff, but not allowed to see the numbers
    client.force_login(staff_user("boss", VIEW_STATS))
    assert client.get("/api/v1/stats").json()["totals"]["messages"] == 5
    Message.objects.update(received_at=timezone.now() - timedelta(days=1))
    assert selectors.stats(2)["per_day"][0]["messages"] == 5
