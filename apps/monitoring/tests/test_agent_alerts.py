"""Alerts per agent: offline, WeChat logged out, backlog and send failures fire one event per (rule, agent), each
resolved on its own, and every notification names the agent. Agent state changes go through the agents app's
services as the consumer and the heartbeat endpoint make them (test_e2e_fleet.py: through a real Daphne)."""

import time
from datetime import timedelta

import pytest
from django.utils import timezone

from apps.agents import services as agent_services
from apps.agents.tests.factories import AgentFactory
from apps.monitoring import demo, services
from apps.monitoring.models import AlertEvent, AlertRule
from apps.monitoring.tests.factories import AlertRuleFactory, NotificationChannelFactory, TimedReplyFactory
from apps.monitoring.tests.receiver import Receiver

pytestmark = pytest.mark.django_db(transaction=True)

Metric = AlertRule.Metric


def connect(agent) -> str:
    socket = f"test.{agent.id}.{time.monotonic_ns()}"
    agent_services.socket_opened(agent.id, socket, time.time() + 600)
    return socket


def notified(receiver: Receiver, count: int, changes) -> list[str]:
    for event_id, kind in changes:
        services.notify_event(event_id, kind)
    return [request["body"]["body"] for request in receiver.wait_for(count)][-len(changes) :]


def titles(receiver: Receiver) -> list[str]:
    return [request["body"]["title"] for request in receiver.requests]


def test_two_agents_going_offline_fire_two_events_each_naming_its_agent():
    with Receiver() as receiver:
        rule = AlertRuleFactory(
            name="终端离线",
            metric=Metric.AGENTS_OFFLINE,
            threshold=0,
            channels=[NotificationChannelFactory(target=receiver.url)],
        )
        front, back = AgentFactory(name="前台电脑"), AgentFactory(name="仓库电脑")
        sockets = {agent.id: connect(agent) for agent in (front, back)}
        assert services.evaluate_rules() == []

        assert agent_services.socket_closed(front.id, sockets[front.id]) is True
        first = services.evaluate_rules()
        assert agent_services.socket_closed(back.id, sockets[back.id]) is True
        second = services.evaluate_rules()  # the first agent's open event must not hide the second
        assert [kind for _, kind in first + second] == ["fired", "fired"]
        bodies = notified(receiver, 2, first + second)
        assert f"前台电脑（{front.id}）" in titles(receiver)[0] and front.id in bodies[0]
        assert f"仓库电脑（{back.id}）" in titles(receiver)[1] and back.id in bodies[1]
        assert sorted(AlertEvent.objects.filter(rule=rule).values_list("agent_id", flat=True)) == sorted(sockets)

        connect(front)  # the first one is back: only its event resolves
        resolved = services.evaluate_rules()
        assert [(AlertEvent.objects.get(pk=pk).agent_id, kind) for pk, kind in resolved] == [(front.id, "resolved")]
        notified(receiver, 3, resolved)
        assert titles(receiver)[2] == f"告警恢复：终端离线：前台电脑（{front.id}）"
        assert AlertEvent.objects.get(rule=rule, resolved_at__isnull=True).agent_id == back.id


def test_wechat_logged_out_is_counted_apart_and_alerted_naming_the_agent():
    with Receiver() as receiver:
        AlertRuleFactory(
            name="微信未登录",
            metric=Metric.AGENT_DEGRADED,
            threshold=0,
            channels=[NotificationChannelFactory(target=receiver.url)],
        )
        agent, _ = AgentFactory(name="客服一号"), AgentFactory(name="客服二号")
        agent_services.record_heartbeat(agent.id, {"wx_online": False, "status": "degraded"})
        cards = services.dashboard_snapshot()["cards"]
        assert (cards["active_agents"], cards["degraded_agents"], cards["agents"]) == (1, 1, 2)

        fired = services.evaluate_rules()
        assert [kind for _, kind in fired] == ["fired"]
        notified(receiver, 1, fired)
        assert titles(receiver) == [f"告警触发：微信未登录：客服一号（{agent.id}）"]

        agent_services.record_heartbeat(agent.id, {"wx_online": True, "status": "ok"})
        assert [kind for _, kind in services.evaluate_rules()] == ["resolved"]
        assert services.dashboard_snapshot()["cards"]["degraded_agents"] == 0


def test_backlog_alert_resolves_after_the_flush_is_reported():
    AlertRuleFactory(metric=Metric.OFFLINE_QUEUE, threshold=500)
    agent = AgentFactory()
    connect(agent)
    agent_services.record_heartbeat(agent.id, {"queue_size": 1000})  # on connect, before the flush
    [(event_id, kind)] = services.evaluate_rules()
    assert kind == "fired" and AlertEvent.objects.get(pk=event_id).agent_id == agent.id
    agent_services.record_heartbeat(agent.id, {"queue_size": 0})  # the agent's heartbeat after the flush
    assert services.evaluate_rules() == [(event_id, "resolved")]


def test_an_offline_agents_last_queue_size_keeps_no_backlog_alert_open():
    AlertRuleFactory(metric=Metric.OFFLINE_QUEUE, threshold=500)
    agent = AgentFactory()
    socket = connect(agent)
    agent_services.record_heartbeat(agent.id, {"queue_size": 1000})
    [(event_id, _)] = services.evaluate_rules()
    agent_services.socket_closed(agent.id, socket)  # gone before it could report the flushed queue
    assert services.evaluate_rules() == [(event_id, "resolved")]  # its being offline is the offline alert's


def test_send_failures_fire_for_the_failing_agent_only_within_the_window():
    AlertRuleFactory(metric=Metric.AGENT_SEND_FAILURES, comparison="gte", threshold=3, window_seconds=600)
    failing, fine = AgentFactory(name="故障终端"), AgentFactory(name="正常终端")
    for _ in range(3):
        TimedReplyFactory(agent=failing, status="failed", acked_at=timezone.now())
    TimedReplyFactory(agent=fine, status="failed", acked_at=timezone.now())
    TimedReplyFactory(agent=fine, status="failed", acked_at=timezone.now() - timedelta(hours=1))  # outside
    TimedReplyFactory(agent=fine, status="failed", acked_at=timezone.now() - timedelta(hours=1))
    [(event_id, _)] = services.evaluate_rules()
    event = AlertEvent.objects.get(pk=event_id)
    assert (event.agent_id, event.agent_name, event.value) == (failing.id, "故障终端", 3)
    title, body = services.alert_message(event, "fired")
    assert (
        title == f"告警触发：{event.rule.name}：故障终端（{failing.id}）"
        and f"客服终端：故障终端（{failing.id}）" in body
    )


def test_a_disabled_agents_open_event_resolves():
    AlertRuleFactory(metric=Metric.AGENTS_OFFLINE, threshold=0)
    agent = AgentFactory(online=False)
    [(event_id, _)] = services.evaluate_rules()
    agent.is_active = False
    agent_services.save_agent(agent)
    assert services.evaluate_rules() == [(event_id, "resolved")]


def test_a_global_rule_keeps_one_event_without_an_agent():
    AlertRuleFactory(metric=Metric.P95_LATENCY, threshold=100)
    TimedReplyFactory(response_ms=5000)
    [(event_id, _)] = services.evaluate_rules()
    event = AlertEvent.objects.get(pk=event_id)
    assert event.agent_id == "" and "客服终端" not in services.alert_message(event, "fired")[1]


def test_every_starter_rule_is_seeded_including_the_per_agent_ones():
    import io

    demo.seed(io.StringIO())
    per_agent = {rule.metric for rule in AlertRule.objects.all() if rule.per_agent}
    assert per_agent == {
        Metric.AGENTS_OFFLINE,
        Metric.AGENT_DEGRADED,
        Metric.OFFLINE_QUEUE,
        Metric.AGENT_SEND_FAILURES,
        Metric.STUCK_REPLY_AGE,
    }
