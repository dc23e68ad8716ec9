from django.db import models
from django.db.models import Q
from django.utils.translation import gettext_lazy as _

from apps.core.fields import EncryptedTextField


class NotificationChannel(models.Model):
    class Kind(models.TextChoices):
        WEBHOOK = "webhook", _("通用 Webhook")
        DINGTALK = "dingtalk", _("钉钉机器人")
        EMAIL = "email", _("邮件")

    name = models.CharField(_("名称"), max_length=100, unique=True)
    kind = models.CharField(_("类型"), max_length=20, choices=Kind.choices)
    target = models.TextField(_("地址"), help_text=_("Webhook / 钉钉机器人 URL；邮件为收件人地址，多个用逗号分隔"))
    secret = EncryptedTextField(_("加签密钥"), blank=True, help_text=_("钉钉机器人的加签密钥（SEC 开头），加密存储"))
    enabled = models.BooleanField(_("启用"), default=True)

    class Meta:
        verbose_name = _("通知渠道")
        verbose_name_plural = _("通知渠道")
        ordering = ["name"]

    def __str__(self) -> str:
        return f"{self.name} ({self.get_kind_display()})"


class AlertRule(models.Model):
    class Metric(models.TextChoices):
        P95_LATENCY = "p95_latency_ms", _("P95 响应时间（毫秒）")
        ERROR_RATE = "error_rate", _("错误率（%）")
        BUDGET = "budget_percent", _("预算使用（%）")
        # Per agent (AGENT_METRICS): each agent is compared with the threshold and has its own events.
        AGENTS_OFFLINE = "agents_offline", _("客服终端离线（逐个终端：离线为 1）")
        AGENT_DEGRADED = "agent_degraded", _("微信未登录（逐个终端：未登录为 1）")
        OFFLINE_QUEUE = "offline_queue_size", _("离线队列长度（逐个终端）")
        AGENT_SEND_FAILURES = "agent_send_failures", _("发送失败次数（逐个终端，统计窗口内）")
        CIRCUIT_OPEN = "circuit_open", _("熔断中的模型数")
        ERP_SYNC_FAILURES = "erp_sync_failures", _("ERP 同步失败次数")
        STUCK_REPLY_AGE = "stuck_reply_age_seconds", _("在线终端未确认回复的最长等待（秒）")

    class Comparison(models.TextChoices):
        GT = "gt", ">"
        GTE = "gte", "≥"
        LT = "lt", "<"
        LTE = "lte", "≤"

    class Severity(models.TextChoices):
        INFO = "info", _("提示")
        WARNING = "warning", _("警告")
        CRITICAL = "critical", _("严重")

    name = models.CharField(_("名称"), max_length=100, unique=True)
    metric = models.CharField(_("指标"), max_length=40, choices=Metric.choices)
    comparison = models.CharField(_("比较"), max_length=4, choices=Comparison.choices, default=Comparison.GT)
    threshold = models.FloatField(_("阈值"))
    window_seconds = models.PositiveIntegerField(_("统计窗口（秒）"), default=300)
    cooldown_seconds = models.PositiveIntegerField(
        _("冷却时间（秒）"), default=600, help_text=_("恢复后多久内不再重复告警")
    )
    severity = models.CharField(_("级别"), max_length=10, choices=Severity.choices, default=Severity.WARNING)
    channels = models.ManyToManyField(NotificationChannel, verbose_name=_("通知渠道"), blank=True)
    enabled = models.BooleanField(_("启用"), default=True)
    last_value = models.FloatField(_("最近取值"), null=True, blank=True)
    last_evaluated_at = models.DateTimeField(_("最近评估"), null=True, blank=True)

    class Meta:
        verbose_name = _("告警规则")
        verbose_name_plural = _("告警规则")
        ordering = ["name"]

    def __str__(self) -> str:
        return self.name

    @property
    def per_agent(self) -> bool:
        return self.metric in AGENT_METRICS

    def breached(self, value: float) -> bool:
        return {
            self.Comparison.GT: value > self.threshold,
            self.Comparison.GTE: value >= self.threshold,
            self.Comparison.LT: value < self.threshold,
            self.Comparison.LTE: value <= self.threshold,
        }[self.comparison]


AGENT_METRICS = frozenset(
    {
        AlertRule.Metric.AGENTS_OFFLINE,
        AlertRule.Metric.AGENT_DEGRADED,
        AlertRule.Metric.OFFLINE_QUEUE,
        AlertRule.Metric.AGENT_SEND_FAILURES,
        AlertRule.Metric.STUCK_REPLY_AGE,
    }
)


class AlertEvent(models.Model):
    rule = models.ForeignKey(AlertRule, verbose_name=_("规则"), on_delete=models.CASCADE, related_name="events")
    # The agent of a per-agent rule's event ("" for the others); its name as it was when the event fired. Not a
    # foreign key: the history of an agent deleted later stays.
    agent_id = models.CharField(_("客服终端 ID"), max_length=64, blank=True, default="", db_index=True)
    agent_name = models.CharField(_("客服终端"), max_length=100, blank=True, default="")
    value = models.FloatField(_("触发值"))
    fired_at = models.DateTimeField(_("触发时间"), auto_now_add=True, db_index=True)
    resolved_at = models.DateTimeField(_("恢复时间"), null=True, blank=True)
    resolved_value = models.FloatField(_("恢复值"), null=True, blank=True)
    fire_notified_at = models.DateTimeField(_("触发通知时间"), null=True, blank=True)
    resolve_notified_at = models.DateTimeField(_("恢复通知时间"), null=True, blank=True)

    class Meta:
        verbose_name = _("告警事件")
        verbose_name_plural = _("告警事件")
        ordering = ["-fired_at"]
        constraints = [
            # At most one open (unresolved) event per rule and agent: a second evaluator cannot fire twice, and
            # a second agent going down gets its own event.
            models.UniqueConstraint(
                fields=["rule", "agent_id"], condition=Q(resolved_at__isnull=True), name="one_open_event_per_rule_agent"
            ),
        ]

    def __str__(self) -> str:
        return f"{self.rule}{f' · {self.agent_label}' if self.agent_id else ''} @ {self.fired_at:%Y-%m-%d %H:%M:%S}"

    @property
    def agent_label(self) -> str:
        """The agent as notifications and admin name it: name (id)."""
        return f"{self.agent_name}（{self.agent_id}）" if self.agent_name else self.agent_id

    @property
    def active(self) -> bool:
        return self.resolved_at is None


VIEW_DASHBOARD = "monitoring.view_dashboard"
VIEW_TRACE = "monitoring.view_trace"  # traces carry customers' words


class MonitoringAccess(models.Model):
    """No table: the holder of the monitoring pages' named permissions (Django attaches permissions to a model)."""

    class Meta:
        managed = False
        default_permissions = ()
        verbose_name = _("监控权限")
        verbose_name_plural = _("监控权限")
        permissions = [
            ("view_dashboard", _("可以查看实时监控（/dashboard/ 及其实时推送）")),
            ("view_trace", _("可以查看消息追踪（含客户消息原文）")),
        ]

    def __str__(self) -> str:
        return str(self._meta.verbose_name)
