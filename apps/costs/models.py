from django.db import models
from django.utils.translation import gettext_lazy as _


class ModelPrice(models.Model):
    """CNY per 1k tokens for (provider, model), in force from `effective_date` (the latest one ≤ today wins)."""

    provider = models.CharField(_("服务商"), max_length=40)
    model = models.CharField(_("模型"), max_length=100)
    input_per_1k = models.DecimalField(_("输入单价（元/千tokens）"), max_digits=12, decimal_places=6)
    output_per_1k = models.DecimalField(_("输出单价（元/千tokens）"), max_digits=12, decimal_places=6)
    effective_date = models.DateField(_("生效日期"))
    note = models.CharField(_("备注"), max_length=200, blank=True)

    class Meta:
        verbose_name = _("模型价格")
        verbose_name_plural = _("模型价格")
        ordering = ["provider", "model", "-effective_date"]
        constraints = [
            models.UniqueConstraint(fields=["provider", "model", "effective_date"], name="costs_price_unique_date"),
        ]

    def __str__(self) -> str:
        return f"{self.provider}/{self.model} {self.input_per_1k}/{self.output_per_1k} @{self.effective_date}"


class Budget(models.Model):
    class Scope(models.TextChoices):
        GLOBAL = "global", _("全局")
        PROVIDER = "provider", _("服务商")
        MODEL = "model", _("模型")
        AGENT = "agent", _("客服终端")

    class Period(models.TextChoices):
        DAY = "day", _("每日")
        MONTH = "month", _("每月")

    class Policy(models.TextChoices):
        ALERT = "alert", _("仅告警")
        CHEAP = "cheap", _("降级到便宜路由")
        KB_ONLY = "kb_only", _("仅知识库回答")
        HANDOFF = "handoff", _("转人工")
        BLOCK = "block", _("拒绝调用")

    name = models.CharField(_("名称"), max_length=100)
    scope = models.CharField(_("范围"), max_length=10, choices=Scope.choices, default=Scope.GLOBAL)
    target = models.CharField(
        _("对象"), max_length=100, blank=True, help_text=_("服务商名 / 模型名（或 服务商/模型）/ 终端 ID；全局留空")
    )
    period = models.CharField(_("周期"), max_length=10, choices=Period.choices, default=Period.DAY)
    limit = models.DecimalField(_("额度（元）"), max_digits=12, decimal_places=4)
    thresholds = models.JSONField(_("告警阈值（%）"), default=list, blank=True, help_text=_("如 [80, 100]"))
    policy = models.CharField(_("超额策略"), max_length=10, choices=Policy.choices, default=Policy.CHEAP)
    enabled = models.BooleanField(_("启用"), default=True)

    class Meta:
        verbose_name = _("预算")
        verbose_name_plural = _("预算")
        ordering = ["scope", "target", "period"]

    def __str__(self) -> str:
        return self.name


class BudgetAlert(models.Model):
    """One per (budget, period, threshold): the Redis flag makes it fire once, the constraint keeps it so."""

    budget = models.ForeignKey(Budget, on_delete=models.CASCADE, related_name="alerts", verbose_name=_("预算"))
    period_key = models.CharField(_("周期"), max_length=10)
    threshold = models.PositiveSmallIntegerField(_("阈值（%）"))
    used = models.DecimalField(_("已用（元）"), max_digits=14, decimal_places=6)
    limit = models.DecimalField(_("额度（元）"), max_digits=12, decimal_places=4)
    policy = models.CharField(_("策略"), max_length=10)
    message = models.TextField(_("内容"))
    created_at = models.DateTimeField(_("时间"), auto_now_add=True)

    class Meta:
        verbose_name = _("预算告警")
        verbose_name_plural = _("预算告警")
        ordering = ["-created_at"]
        constraints = [
            models.UniqueConstraint(fields=["budget", "period_key", "threshold"], name="costs_alert_once"),
        ]

    def __str__(self) -> str:
        return self.message


class UsageRecord(models.Model):
    """One per LLM call (unique call id: a redelivered batch can never count a call twice)."""

    call_id = models.CharField(max_length=64, unique=True)
    created_at = models.DateTimeField(_("时间"), db_index=True)
    day = models.DateField(_("日期"), db_index=True)
    provider = models.CharField(_("服务商"), max_length=40)
    model = models.CharField(_("模型"), max_length=100)
    kind = models.CharField(_("类型"), max_length=12, default="chat")
    route = models.CharField(_("路由"), max_length=40, blank=True)
    agent = models.CharField(_("终端"), max_length=64, blank=True, db_index=True)
    customer = models.CharField(_("客户"), max_length=128, blank=True)
    input_tokens = models.PositiveIntegerField(_("输入 tokens"), default=0)
    output_tokens = models.PositiveIntegerField(_("输出 tokens"), default=0)
    cost = models.DecimalField(_("费用（元）"), max_digits=14, decimal_places=6, default=0)
    price_known = models.BooleanField(_("已定价"), default=True, help_text=_("否 = 价格表没有此模型，按默认价计费"))
    latency_ms = models.FloatField(_("耗时（毫秒）"), default=0)

    class Meta:
        verbose_name = _("调用记录")
        verbose_name_plural = _("调用记录")
        ordering = ["-created_at"]
        indexes = [models.Index(fields=["day", "provider", "model"])]

    def __str__(self) -> str:
        return f"{self.call_id} {self.provider}/{self.model} {self.cost}"
