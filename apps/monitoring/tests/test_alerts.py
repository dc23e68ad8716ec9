import importlib
import sys
import time
from datetime import timedelta
from urllib.parse import parse_qs, urlparse

import pytest
from django.apps import apps as django_apps
from django.core import mail
from django.utils import timezone
from django_celery_beat.models import PeriodicTask

from apps.monitoring import notifiers, services
from apps.monitoring.models import AlertEvent, AlertRule, NotificationChannel
from apps.monitoring.tests import rows
from apps.monitoring.tests.receiver import Receiver

pytestmark = pytest.mark.django_db

beat_migration = importlib.import_module("apps.monitoring.migrations.0002_alert_beat_schedule")


def make_rule(channel, **fields) -> AlertRule:
    defaults = {"name": "离线队列积压", "metric": AlertRule.Metric.OFFLINE_QUEUE, "comparison": "gt", "threshold": 100}
    rule = AlertRule.objects.create(**{**defaults, **fields})
    rule.channels.add(channel)
    return rule


def test_dingtalk_signature_is_verified_by_the_documented_algorithm():
    now_ms = int(time.time() * 1000)
    url = notifiers.dingtalk_url("https://robot.example/send?access_token=t", "SECabc", now_ms)
    assert url.startswith(f"https://robot.example/send?access_token=t&timestamp={now_ms}&sign=")
    query = parse_qs(urlparse(url).query)
    assert Receiver(secret="SECabc").check(query) == ""
    assert Receiver(secret="SECother").check(query) == "bad signature"
    assert notifiers.dingtalk_url("https://robot.example/send", "") == "https://robot.example/send"


def test_rule_fires_once_and_resolves_once(django_capture_on_commit_callbacks):
    with Receiver(secret="SECsecret") as receiver:
        channel = NotificationChannel.objects.create(
            name="钉钉", kind="dingtalk", target=receiver.url, secret="SECsecret"
        )
        rule = make_rule(channel)
        the_agent = rows.agent(queue_size=250)

        with django_capture_on_commit_callbacks() as callbacks:
            first = services.evaluate_rules()
            again = services.evaluate_rules()  # still breached: no second event
        assert [kind for _, kind in first] == ["fired"] and again == []
        assert len(callbacks) == 1
        event_id = first[0][0]
        assert services.notify_event(event_id, "fired") is True
        assert services.notify_event(event_id, "fired") is False  # a redelivered task sends nothing

        the_agent.last_heartbeat = {"queue_size": 3}
        the_agent.save()
        resolved = services.evaluate_rules()
        assert resolved == [(event_id, "resolved")]
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
    channel = NotificationChannel.objects.create(name="hook", kind="webhook", target="http://127.0.0.1:9/")
    rule = make_rule(channel, cooldown_seconds=600)
    rows.agent(queue_size=250)
    AlertEvent.objects.create(rule=rule, value=300, resolved_at=timezone.now() - timedelta(seconds=60))
    assert services.evaluate_rules() == []
    AlertEvent.objects.update(resolved_at=timezone.now() - timedelta(seconds=601))
    with django_capture_on_commit_callbacks():
        assert [kind for _, kind in services.evaluate_rules()] == ["fired"]


def test_a_wrong_secret_is_refused_by_the_robot_and_the_claim_is_released_for_a_retry():
    with Receiver(secret="SECright") as receiver:
        channel = NotificationChannel.objects.create(
            name="钉钉", kind="dingtalk", target=receiver.url, secret="SECwrong"
        )
        rule = make_rule(channel)
        event = AlertEvent.objects.create(rule=rule, value=500)
        with pytest.raises(notifiers.NotificationError, match="310000"):
            services.notify_event(event.pk, "fired")
        assert receiver.rejected == ["bad signature"]
        event.refresh_from_db()
        assert event.fire_notified_at is None  # the retry will send it


def test_notify_contract_sends_through_webhook_and_email_and_survives_a_dead_channel(caplog):
    with Receiver() as receiver:
        NotificationChannel.objects.create(name="hook", kind="webhook", target=receiver.url)
        NotificationChannel.objects.create(name="mail", kind="email", target="ops@example.com, boss@example.com")
        NotificationChannel.objects.create(
            name="dead", kind="webhook", target="http://127.0.0.1:9/robot?access_token=x"
        )
        NotificationChannel.objects.create(name="off", kind="webhook", target=receiver.url, enabled=False)

        assert services.notify("预算告警", "今日预算已使用 80%", severity="warning") is None

        assert [request["body"] for request in receiver.wait_for(1)] == [
            {"title": "预算告警", "body": "今日预算已使用 80%", "severity": "warning", "source": "wxcs"}
        ]
        assert len(mail.outbox) == 1
        assert mail.outbox[0].to == ["ops@example.com", "boss@example.com"]
        assert "预算告警" in mail.outbox[0].subject
        assert "dead" in caplog.text and "access_token" not in caplog.text  # failure logged, no secret

        services.notify("只发邮件", "正文", channels=["email"])
        assert len(mail.outbox) == 2 and len(receiver.requests) == 1


@pytest.mark.e2e
def test_celery_beat_evaluates_rules_and_the_worker_notifies_once_per_firing_and_resolve(live_env, tmp_path):
    from apps.core.testing import Process, running, start_worker

    beat_migration.register(django_apps, None)  # the row migration 0002 made (flushed by earlier live tests)
    schedule = PeriodicTask.objects.get(task="monitoring.evaluate_alerts")
    assert (schedule.interval.every, schedule.interval.period) == (30, "seconds")

    with Receiver(secret="SECbeat") as receiver:
        channel = NotificationChannel.objects.create(
            name="钉钉", kind="dingtalk", target=receiver.url, secret="SECbeat"
        )
        make_rule(channel)
        the_agent = rows.agent(queue_size=900)
        worker = start_worker(live_env, tmp_path)
        beat = Process(
            "beat",
            [
                sys.executable,
                "-m",
                "celery",
                "-A",
                "celery_app",
                "beat",
                "--loglevel",
                "INFO",
                "-s",
                str(tmp_path / "beat-schedule"),
            ],
            live_env,
            tmp_path,
        )
        with running(beat, worker):
            assert len(receiver.wait_for(1, timeout=30)) == 1, beat.log_tail() + worker.log_tail()
            the_agent.last_heartbeat = {"queue_size": 0}
            the_agent.save()
            assert len(receiver.wait_for(2, timeout=45)) == 2, beat.log_tail() + worker.log_tail()
            time.sleep(1)
        texts = [request["body"]["markdown"]["text"] for request in receiver.requests]
        assert len(texts) == 2 and "告警触发" in texts[0] and "告警恢复" in texts[1]
        assert receiver.rejected == []
        event = AlertEvent.objects.get()
        assert event.resolved_at is not None


def test_every_alert_metric_reads_the_owning_apps_data(settings):
    import asyncio

    from apps.erp.models import SyncRun
    from apps.llm_gateway import breaker

    Metric = AlertRule.Metric
    online = rows.agent("agt_on", online=True, queue_size=42)
    rows.agent("agt_off", online=False, queue_size=7)
    for ms, status in [(100, "delivered"), (200, "delivered"), (300, "failed"), (2000, "delivered")]:
        rows.message_with_reply(online, response_ms=ms, status=status)
    assert services.metric_value(Metric.P95_LATENCY, 300) == pytest.approx(2000, abs=1)
    assert services.metric_value(Metric.ERROR_RATE, 300) == 25.0
    assert services.metric_value(Metric.AGENTS_OFFLINE, 300) == 1
    assert services.metric_value(Metric.OFFLINE_QUEUE, 300) == 42

    SyncRun.objects.create(status="failed")
    SyncRun.objects.create(status="success")
    old = SyncRun.objects.create(status="failed")
    SyncRun.objects.filter(pk=old.pk).update(started_at=timezone.now() - timedelta(hours=2))
    assert services.metric_value(Metric.ERP_SYNC_FAILURES, 3600) == 1

    assert services.metric_value(Metric.CIRCUIT_OPEN, 60) == 0

    async def fail_until_open():
        for _ in range(settings.LLM_CIRCUIT_FAILURES):
            await breaker.op("bench-provider", "m-monitoring", "failure")

    asyncio.run(fail_until_open())
    assert services.metric_value(Metric.CIRCUIT_OPEN, 60) == 1
    with pytest.raises(ValueError, match="unknown alert metric"):
        services.metric_value("nope", 60)
