"""Monitoring's part of seed_demo: a starter set of alert rules (no channel yet: add one in admin)."""

from apps.monitoring.models import AlertRule

Metric = AlertRule.Metric
STARTER_RULES = [
    ("响应过慢（P95 > 10 秒）", Metric.P95_LATENCY, "gt", 10_000, 300, "warning"),
    ("回复发送失败率 > 5%", Metric.ERROR_RATE, "gt", 5, 600, "warning"),
    ("预算使用 ≥ 80%", Metric.BUDGET, "gte", 80, 60, "warning"),
    ("客服终端离线", Metric.AGENTS_OFFLINE, "gt", 0, 60, "critical"),
    ("微信未登录", Metric.AGENT_DEGRADED, "gt", 0, 60, "critical"),
    ("离线队列积压 > 500", Metric.OFFLINE_QUEUE, "gt", 500, 60, "warning"),
    ("终端发送失败（10 分钟内 ≥ 3 次）", Metric.AGENT_SEND_FAILURES, "gte", 3, 600, "warning"),
    ("模型熔断", Metric.CIRCUIT_OPEN, "gt", 0, 60, "critical"),
    ("ERP 同步失败", Metric.ERP_SYNC_FAILURES, "gt", 0, 3600, "warning"),
    ("回复未送达（在线终端 > 120 秒未确认）", Metric.STUCK_REPLY_AGE, "gt", 120, 60, "critical"),
]


def seed(stdout) -> None:
    created = 0
    for name, metric, comparison, threshold, window, severity in STARTER_RULES:
        _, was_created = AlertRule.objects.get_or_create(
            name=name,
            defaults={
                "metric": metric,
                "comparison": comparison,
                "threshold": threshold,
                "window_seconds": window,
                "severity": severity,
            },
        )
        created += was_created
    stdout.write(f"alert rules: {created} created, {len(STARTER_RULES) - created} kept (add a channel in admin)")
