"""Alert rules: set up in admin, evaluated by beat every 30 s, firing once and resolving once."""

import io
import sys
import time
from datetime import timedelta

import pytest
from django.utils import timezone
from django_celery_beat.models import PeriodicTask

from apps.agents.tests.factories import AgentFactory
from apps.erp.tests.factories import SyncRunFactory
from apps.monitoring import demo, services
from apps.monitoring.models import AlertEvent, AlertRule
from apps.monitoring.tests.factories import (
    AlertEventFactory,
    AlertRuleFactory,
    NotificationChannelFactory,
    TimedReplyFactory,
)
from apps.monitoring.tests.receiver import Receiver

pytestmark = pytest.mark.django_db


def set_queue_size(agent, size: int) -> None:
    agent.last_heartbeat = {"queue_size": size}
    agent.save(update_fields=["last_heartbeat"])


def test_rule_fires_once_and_resolves_once(django_capture_on_commit_callbacks):
    with Receiver(secret="SECsecret") as receiver:
        channel = NotificationChannelFactory(kind="dingtalk", target=receiver.url, secret="SECsecret")
        rule = AlertRuleFactory(channels=[channel])
        agent = AgentFactory(queue_size=250)

        with django_capture_on_commit_callbacks() as callbacks:
            first = services.evaluate_rules()
            again = services.evaluate_rules()  # still breached: no second event
        assert [kind for _, kind in first] == ["fired"] and again == []
        assert len(callbacks) == 1  # one notification task enqueued, after commit
        event_id = first[0][0]
        assert services.notify_event(event_id, "fired") is True
        assert services.notify_event(event_id, "fired") is False  # a redelivered task sends nothing

        set_queue_size(agent, 3)
        assert services.evaluate_rules() == [(event_id, "resolved")]
        assert services.evaluate_rules() == []
        assert services.notify_event(event_id, "resolved") is True

        assert receiver.rejected == []
        bodies = [request["body"]["markdown"]["text"] for request in receiver.wait_for(2)]
        assert len(bodies) == 2
        assert "告警触发" in bodies[0] and "250" in bodies[0]
        assert "告警恢复" in bodies[1]
        event = AlertEvent.objects.get()
        assert event.rule == rule and event.value == 250 and event.resolved_value == 3
        assert event.fire_notified_at and event.resolve_notified_at


def test_cooldown_holds_back_a_new_firing(django_capture_on_commit_callbacks):
    rule = AlertRuleFactory(channels=[NotificationChannelFactory()], cooldown_seconds=600)
    agent = AgentFactory(queue_size=250)
    AlertEventFactory(rule=rule, agent_id=agent.id, value=300, resolved_at=timezone.now() - timedelta(seconds=60))
    assert services.evaluate_rules() == []
    AlertEvent.objects.update(resolved_at=timezone.now() - timedelta(seconds=601))
    with django_capture_on_commit_callbacks():
        assert [kind for _, kind in services.evaluate_rules()] == ["fired"]


def test_a_disabled_rule_is_not_evaluated():
    AlertRuleFactory(enabled=False)
    AgentFactory(queue_size=900)
    assert services.evaluate_rules() == []
    assert not AlertEvent.objects.exists()


def test_every_alert_metric_reads_the_owning_apps_data(settings):
    import asyncio

    from apps.llm_gateway import breaker

    Metric = AlertRule.Metric
    online = AgentFactory(queue_size=42)
    AgentFactory(online=False, queue_size=7)
    for ms, status in [(100, "delivered"), (200, "delivered"), (300, "failed"), (2000, "delivered")]:
        TimedReplyFactory(agent=online, response_ms=ms, status=status)
    assert services.metric_value(Metric.P95_LATENCY, 300) == pytest.approx(2000, abs=1)
    assert services.metric_value(Metric.ERROR_RATE, 300) == 25.0
    assert services.metric_value(Metric.AGENTS_OFFLINE, 300) == 1
    assert services.metric_value(Metric.OFFLINE_QUEUE, 300) == 42  # the offline agent's last 7 is no backlog
    assert services.metric_value(Metric.AGENT_DEGRADED, 300) == 0
    assert services.metric_value(Metric.AGENT_SEND_FAILURES, 300) == 0  # failed, but never acked by the agent

    SyncRunFactory(status="failed")
    SyncRunFactory(status="success")
    SyncRunFactory(status="failed", started_at=timezone.now() - timedelta(hours=2))  # outside the window
    assert services.metric_value(Metric.ERP_SYNC_FAILURES, 3600) == 1

    assert services.metric_value(Metric.CIRCUIT_OPEN, 60) == 0

    async def fail_until_open():
        for _ in range(settings.LLM_CIRCUIT_FAILURES):
            await breaker.op("bench-provider", "m-monitoring", "failure")

    asyncio.run(fail_until_open())
    assert services.metric_value(Metric.CIRCUIT_OPEN, 60) == 1
    with pytest.raises(ValueError, match="unknown alert metric"):
        services.metric_value("nope", 60)


def test_a_supervisor_sets_up_a_rule_in_admin_and_a_bad_form_saves_nothing(admin_client):
    channel = NotificationChannelFactory(kind="dingtalk", secret="S")
    for url in ["/admin/monitoring/alertrule/", "/admin/monitoring/alertevent/", "/admin/monitoring/alertrule/add/"]:
        assert admin_client.get(url).status_code == 200, url
    form = {
        "name": "P95 过高",
        "metric": "p95_latency_ms",
        "comparison": "gt",
        "threshold": "3000",
        "window_seconds": "300",
        "cooldown_seconds": "600",
        "severity": "critical",
        "channels": [channel.pk],
        "enabled": "on",
    }
    assert admin_client.post("/admin/monitoring/alertrule/add/", form).status_code == 302
    rule = AlertRule.objects.get(name="P95 过高")
    assert list(rule.channels.all()) == [channel] and rule.breached(3001) and not rule.breached(3000)
    bad = admin_client.post("/admin/monitoring/alertrule/add/", {"name": "坏", "metric": "nope", "threshold": "x"})
    assert bad.status_code == 200 and not AlertRule.objects.filter(name="坏").exists()
    AlertEventFactory(rule=rule, value=5000)
    assert "告警中" in admin_client.get("/admin/monitoring/alertevent/").content.decode()
    assert admin_client.get("/admin/monitoring/alertevent/add/").status_code == 403  # events come from rules


def test_demo_seeds_starter_rules_idempotently():
    demo.seed(io.StringIO())
    demo.seed(io.StringIO())
    assert AlertRule.objects.count() == len(demo.STARTER_RULES)
    assert set(AlertRule.objects.values_list("metric", flat=True)) == set(AlertRule.Metric.values)


@pytest.mark.django_db(transaction=True)  # the scheduler manages its own connection
def test_beat_keeps_the_evaluation_every_30_seconds_as_a_periodic_task_row():
    """celery_app declares the entry; beat's DatabaseScheduler keeps it as a PeriodicTask row (by name),
    where admin can pause it."""
    from django_celery_beat.schedulers import DatabaseScheduler

    from celery_app import app

    entry = app.conf.beat_schedule["监控：评估告警规则"]
    assert entry["task"] == "monitoring.evaluate_alerts" and entry["schedule"] == timedelta(seconds=30)
    DatabaseScheduler(app=app)  # what `celery beat` does when it starts
    row = PeriodicTask.objects.get(name="监控：评估告警规则")
    assert (row.task, row.enabled, row.interval.every, row.interval.period) == (
        "monitoring.evaluate_alerts",
        True,
        30,
        "seconds",
    )


@pytest.mark.e2e
def test_celery_beat_evaluates_rules_and_the_worker_notifies_once_per_firing_and_resolve(live_env, tmp_path):
    from apps.core.testing import Process, running, start_worker

    with Receiver(secret="SECbeat") as receiver:
        AlertRuleFactory(channels=[NotificationChannelFactory(kind="dingtalk", target=receiver.url, secret="SECbeat")])
        agent = AgentFactory(queue_size=900)
        worker = start_worker(live_env, tmp_path)
        argv = [sys.executable, "-m", "celery", "-A", "celery_app", "beat", "--loglevel", "INFO"]
        beat = Process("beat", [*argv, "-s", str(tmp_path / "beat-schedule")], live_env, tmp_path)
        with running(beat, worker):
            assert len(receiver.wait_for(1, timeout=50)) == 1, beat.log_tail() + worker.log_tail()
            set_queue_size(agent, 0)
            assert len(receiver.wait_for(2, timeout=45)) == 2, beat.log_tail() + worker.log_tail()
            time.sleep(1)
        texts = [request["body"]["markdown"]["text"] for request in receiver.requests]
        assert len(texts) == 2 and "告警触发" in texts[0] and "告警恢复" in texts[1]
        assert receiver.rejected == []
        assert AlertEvent.objects.get().resolved_at is not None
        assert PeriodicTask.objects.filter(name="监控：评估告警规则", task="monitoring.evaluate_alerts").exists()
