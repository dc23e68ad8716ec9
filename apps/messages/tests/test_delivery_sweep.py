"""Beat's outbox sweep (apps.messages.outbox.redeliver_stale): an unacked reply of a connected agent whose last push
is older than OUTBOX_REDELIVER_AFTER is pushed again through the channel layer (Redis) and marked pushed; nothing
else is; a second run right after pushes nothing. The stuck replies are on /metrics and an alert rule names the
agent. (The same through real Daphne, worker and beat: test_delivery_e2e.py.)"""

import asyncio
from datetime import timedelta

import pytest
from channels.layers import get_channel_layer
from django.utils import timezone
from prometheus_client.parser import text_string_to_metric_families

from apps.agents.tests.factories import AgentFactory
from apps.core import aio
from apps.messages import outbox, tasks
from apps.messages.models import Reply
from apps.messages.tests.factories import ConversationFactory, MessageFactory, ReplyFactory
from apps.monitoring import services as monitoring
from apps.monitoring.models import AlertRule
from apps.monitoring.tests.factories import AlertRuleFactory, NotificationChannelFactory
from apps.monitoring.tests.receiver import Receiver

pytestmark = pytest.mark.django_db(transaction=True)


def reply_of(agent, *, status="sent", pushed_ago: float | None = 60, made_ago: float = 60) -> Reply:
    now = timezone.now()
    conversation = ConversationFactory(agent=agent)
    return ReplyFactory(
        message=MessageFactory(conversation=conversation, status="decided"),
        status=status,
        created_at=now - timedelta(seconds=made_ago),
        pushed_at=None if pushed_ago is None else now - timedelta(seconds=pushed_ago),
    )


async def pushed_to(agent_id: str, run) -> list[dict]:
    """The reply.push events the agent's sockets get while `run` (a sync callable) runs in a thread."""
    layer = get_channel_layer()
    channel = await layer.new_channel()
    await layer.group_add(outbox.agent_group(agent_id), channel)
    try:
        await asyncio.to_thread(run)
        events = []
        while True:
            try:
                events.append(await asyncio.wait_for(layer.receive(channel), 1.0))
            except TimeoutError:
                return events
    finally:
        await layer.group_discard(outbox.agent_group(agent_id), channel)


def test_sweep_pushes_stale_unacked_replies_of_connected_agents_once(settings):
    settings.OUTBOX_REDELIVER_AFTER = 10
    agent = AgentFactory()
    stale_sent = reply_of(agent)  # pushed a minute ago, never acked
    stale_queued = reply_of(agent, status="queued", pushed_ago=None)  # approved, its push lost
    fresh = reply_of(agent, pushed_ago=2)  # just pushed: the agent may still be sending it
    acked = reply_of(agent, status="delivered")
    waiting = reply_of(agent, status="pending_review", pushed_ago=None)
    offline = AgentFactory(online=False)
    away = reply_of(offline)  # goes with the reconnect's backlog

    events = aio.run(pushed_to(agent.id, tasks.redeliver_replies), timeout=30)
    assert [e["frame"]["reply_id"] for e in events] == [stale_sent.id, stale_queued.id]
    assert all(e["redelivery"] is True and e["frame"]["type"] == "reply" for e in events)
    assert events[0]["frame"]["content"] == stale_sent.content and events[0]["frame"]["chat"]
    for reply in (stale_sent, stale_queued):
        reply.refresh_from_db()
        assert reply.status == "sent" and reply.delivery_attempts == 1
        assert timezone.now() - reply.pushed_at < timedelta(seconds=10)
    for untouched in (fresh, acked, waiting, away):
        before = untouched.delivery_attempts
        untouched.refresh_from_db()
        assert untouched.delivery_attempts == before
    assert Reply.objects.get(pk=away.pk).status == "sent"

    # idempotent: run again at once, nothing is due
    assert aio.run(pushed_to(agent.id, tasks.redeliver_replies), timeout=30) == []


def test_stuck_replies_are_on_metrics_per_agent(client, settings):
    settings.OUTBOX_REDELIVER_AFTER = 10
    agent = AgentFactory()
    reply_of(agent, made_ago=300)
    reply_of(agent, made_ago=30)
    reply_of(agent, made_ago=2)  # younger than OUTBOX_REDELIVER_AFTER: not stuck
    reply_of(AgentFactory(online=False), made_ago=900)  # offline: its own alert

    text = client.get("/metrics", REMOTE_ADDR="127.0.0.1").content.decode()
    families = {f.name: f for f in text_string_to_metric_families(text)}
    counts = {s.labels["agent"]: s.value for s in families["wxcs_outbox_stuck_replies"].samples}
    oldest = {s.labels["agent"]: s.value for s in families["wxcs_outbox_stuck_oldest_seconds"].samples}
    assert counts == {agent.id: 2}
    assert oldest[agent.id] == pytest.approx(300, abs=10)


def test_alert_on_the_oldest_stuck_reply_names_the_agent(settings, django_capture_on_commit_callbacks):
    settings.OUTBOX_REDELIVER_AFTER = 10
    with Receiver(secret="SECstuck") as receiver:
        channel = NotificationChannelFactory(kind="dingtalk", target=receiver.url, secret="SECstuck")
        AlertRuleFactory(name="回复卡住", metric=AlertRule.Metric.STUCK_REPLY_AGE, threshold=120, channels=[channel])
        calm = AgentFactory(name="前台终端")
        reply_of(calm, made_ago=30)
        assert monitoring.evaluate_rules() == []

        stuck = AgentFactory(name="仓库终端")
        reply = reply_of(stuck, made_ago=600)
        with django_capture_on_commit_callbacks():
            fired = monitoring.evaluate_rules()
        assert [kind for _, kind in fired] == ["fired"]
        assert monitoring.notify_event(fired[0][0], "fired") is True
        text = receiver.wait_for(1)[0]["body"]["markdown"]["text"]
        assert "仓库终端" in text and stuck.id in text and "前台终端" not in text

        Reply.objects.filter(pk=reply.pk).update(status="delivered")  # the agent acked it
        assert [kind for _, kind in monitoring.evaluate_rules()] == ["resolved"]
