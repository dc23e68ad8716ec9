import io

import pytest
from django.contrib.auth import get_user_model

from apps.monitoring import demo
from apps.monitoring.models import AlertEvent, AlertRule, NotificationChannel
from apps.monitoring.tests.receiver import Receiver

pytestmark = pytest.mark.django_db


@pytest.fixture
def admin_client(client):
    get_user_model().objects.create_superuser(username="boss", password="x-Pa55-word", email="")
    client.login(username="boss", password="x-Pa55-word")
    return client


def test_alert_admin_pages_and_the_rule_form(admin_client):
    channel = NotificationChannel.objects.create(name="钉钉", kind="dingtalk", target="http://127.0.0.1:9/", secret="S")
    for url in [
        "/admin/monitoring/alertrule/",
        "/admin/monitoring/alertevent/",
        "/admin/monitoring/notificationchannel/",
        "/admin/monitoring/alertrule/add/",
    ]:
        assert admin_client.get(url).status_code == 200, url
    response = admin_client.post(
        "/admin/monitoring/alertrule/add/",
        {
            "name": "P95 过高",
            "metric": "p95_latency_ms",
            "comparison": "gt",
            "threshold": "3000",
            "window_seconds": "300",
            "cooldown_seconds": "600",
            "severity": "critical",
            "channels": [channel.pk],
            "enabled": "on",
        },
    )
    assert response.status_code == 302
    rule = AlertRule.objects.get(name="P95 过高")
    assert list(rule.channels.all()) == [channel] and rule.breached(3001) and not rule.breached(3000)
    bad = admin_client.post("/admin/monitoring/alertrule/add/", {"name": "坏", "metric": "nope", "threshold": "x"})
    assert bad.status_code == 200 and not AlertRule.objects.filter(name="坏").exists()
    AlertEvent.objects.create(rule=rule, value=5000)
    assert "告警中" in admin_client.get("/admin/monitoring/alertevent/").content.decode()


def test_channel_secret_is_encrypted_at_rest():
    from django.db import connection

    channel = NotificationChannel.objects.create(name="钉钉", kind="dingtalk", target="http://x/", secret="SECplain")
    with connection.cursor() as cursor:
        cursor.execute("SELECT secret FROM monitoring_notificationchannel WHERE id = %s", [channel.pk])
        stored = cursor.fetchone()[0]
    assert stored.startswith("enc:v1:") and "SECplain" not in stored
    assert NotificationChannel.objects.get(pk=channel.pk).secret == "SECplain"


def test_send_test_notification_action(admin_client):
    with Receiver(secret="SECt") as receiver:
        channel = NotificationChannel.objects.create(name="钉钉", kind="dingtalk", target=receiver.url, secret="SECt")
        response = admin_client.post(
            "/admin/monitoring/notificationchannel/",
            {"action": "send_test", "_selected_action": [channel.pk]},
            follow=True,
        )
        assert "已发送 1 条" in response.content.decode()
        assert receiver.wait_for(1)[0]["body"]["markdown"]["title"] == "测试通知"


def test_demo_seeds_starter_rules_idempotently():
    demo.seed(io.StringIO())
    demo.seed(io.StringIO())
    assert AlertRule.objects.count() == len(demo.STARTER_RULES)
    assert set(AlertRule.objects.values_list("metric", flat=True)) == set(AlertRule.Metric.values)
