"""Notifications: webhook / DingTalk (signed) / email channels, `monitoring.notify` for other apps (costs'
budget alerts), and a channel that fails never stopping the others nor leaking its secret."""

import time
from urllib.parse import parse_qs, urlparse

import pytest
from django.core import mail
from django.db import connection

from apps.monitoring import notifiers, services
from apps.monitoring.models import NotificationChannel
from apps.monitoring.tests.factories import AlertEventFactory, AlertRuleFactory, NotificationChannelFactory
from apps.monitoring.tests.receiver import Receiver

pytestmark = pytest.mark.django_db

DEAD_URL = "http://127.0.0.1:9/robot?access_token=x"


def test_dingtalk_signature_is_verified_by_the_documented_algorithm():
    now_ms = int(time.time() * 1000)
    url = notifiers.dingtalk_url("https://robot.example/send?access_token=t", "SECabc", now_ms)
    assert url.startswith(f"https://robot.example/send?access_token=t&timestamp={now_ms}&sign=")
    query = parse_qs(urlparse(url).query)
    assert Receiver(secret="SECabc").check(query) == ""
    assert Receiver(secret="SECother").check(query) == "bad signature"
    assert notifiers.dingtalk_url("https://robot.example/send", "") == "https://robot.example/send"


def test_a_wrong_secret_is_refused_by_the_robot_and_the_claim_is_released_for_a_retry():
    with Receiver(secret="SECright") as receiver:
        channel = NotificationChannelFactory(kind="dingtalk", target=receiver.url, secret="SECwrong")
        event = AlertEventFactory(rule=AlertRuleFactory(channels=[channel]))
        with pytest.raises(notifiers.NotificationError, match="310000"):
            services.notify_event(event.pk, "fired")
        assert receiver.rejected == ["bad signature"]
        event.refresh_from_db()
        assert event.fire_notified_at is None  # the retry will send it


def test_notify_sends_through_webhook_and_email_and_survives_a_dead_channel(caplog):
    with Receiver() as receiver:
        NotificationChannelFactory(name="hook", target=receiver.url)
        NotificationChannelFactory(name="mail", kind="email", target="ops@example.com, boss@example.com")
        NotificationChannelFactory(name="dead", target=DEAD_URL)
        NotificationChannelFactory(name="off", target=receiver.url, enabled=False)

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


def test_the_notify_task_by_name_sends_and_a_dead_channel_does_not_fail_it(caplog):
    from apps.monitoring import tasks  # noqa: F401  (registers the tasks, as the worker's autodiscovery does)
    from celery_app import app

    with Receiver() as receiver:
        NotificationChannelFactory(target=receiver.url)
        NotificationChannelFactory(name="dead", target=DEAD_URL)
        result = app.tasks["monitoring.notify"].apply(
            args=("预算告警", "全局日预算已用 95%"), kwargs={"severity": "critical"}
        )
        assert result.successful()
        assert receiver.wait_for(1)[0]["body"] == {
            "title": "预算告警",
            "body": "全局日预算已用 95%",
            "severity": "critical",
            "source": "wxcs",
        }
    assert "dead" in caplog.text
    assert app.amqp.router.route({}, "monitoring.notify")["queue"].name == "default"


def test_channel_secret_is_encrypted_at_rest():
    channel = NotificationChannelFactory(kind="dingtalk", secret="SECplain")
    with connection.cursor() as cursor:
        cursor.execute("SELECT secret FROM monitoring_notificationchannel WHERE id = %s", [channel.pk])
        stored = cursor.fetchone()[0]
    assert stored.startswith("enc:v1:") and "SECplain" not in stored
    assert NotificationChannel.objects.get(pk=channel.pk).secret == "SECplain"


def test_send_test_notification_action_reports_sent_and_failed_channels(admin_client):
    assert admin_client.get("/admin/monitoring/notificationchannel/").status_code == 200
    with Receiver(secret="SECt") as receiver:
        good = NotificationChannelFactory(kind="dingtalk", target=receiver.url, secret="SECt")
        dead = NotificationChannelFactory(name="坏渠道", target=DEAD_URL)
        response = admin_client.post(
            "/admin/monitoring/notificationchannel/",
            {"action": "send_test", "_selected_action": [good.pk, dead.pk]},
            follow=True,
        )
        page = response.content.decode()
        assert "已发送 1 条" in page and "坏渠道" in page and "access_token" not in page
        assert receiver.wait_for(1)[0]["body"]["markdown"]["title"] == "测试通知"


@pytest.mark.e2e
def test_a_notification_enqueued_by_task_name_is_sent_by_a_real_worker(live_env, tmp_path):
    """What costs does for a budget alert: enqueue "monitoring.notify" by name, without importing monitoring."""
    from apps.core import jobs
    from apps.core.testing import running, start_worker

    with Receiver() as receiver:
        NotificationChannelFactory(target=receiver.url)
        with running(start_worker(live_env, tmp_path)):
            jobs.enqueue("monitoring.notify", "预算告警", "全局日预算已用 80%", severity="warning")
            requests = receiver.wait_for(1, timeout=30)
        assert [request["body"]["title"] for request in requests] == ["预算告警"]
