"""ERP connection settings, contracts synced from the ERP, and the sync-run log."""

from django.db import models
from django.utils.translation import gettext_lazy as _

from apps.core.fields import EncryptedTextField


class ErpConnection(models.Model):
    """Admin-editable ERP credentials; the active row wins over ERP_BASE_URL / ERP_USERNAME / ERP_PASSWORD."""

    name = models.CharField(_("名称"), max_length=64, default="智邦 ERP")
    base_url = models.URLField(_("ERP 地址"), help_text=_("如 http://erp.example.com:8080"))
    username = models.CharField(_("用户名"), max_length=64)
    password = EncryptedTextField(_("密码"), blank=True)
    active = models.BooleanField(_("启用"), default=True)
    updated_at = models.DateTimeField(_("更新时间"), auto_now=True)

    class Meta:
        verbose_name = _("ERP 连接")
        verbose_name_plural = _("ERP 连接")
        ordering = ["-active", "-updated_at"]

    def __str__(self) -> str:
        return f"{self.name} ({self.base_url})"


class Contract(models.Model):
    erp_id = models.BigIntegerField(_("ERP 编号"), unique=True)
    customer = models.ForeignKey(
        "customers.Customer", on_delete=models.CASCADE, related_name="contracts", verbose_name=_("客户")
    )
    number = models.CharField(_("合同编号"), max_length=64, blank=True)
    title = models.CharField(_("合同主题"), max_length=200, blank=True)
    amount = models.DecimalField(_("合同金额"), max_digits=14, decimal_places=2, default=0)
    signed_on = models.DateField(_("签订日期"), null=True, blank=True)
    status = models.CharField(_("状态"), max_length=32, blank=True)
    last_synced_at = models.DateTimeField(_("最近同步"), null=True, blank=True)

    class Meta:
        verbose_name = _("合同")
        verbose_name_plural = _("合同")
        ordering = ["-signed_on", "-erp_id"]
        indexes = [models.Index(fields=["number"], name="contract_number_idx")]

    def __str__(self) -> str:
        return f"{self.number} {self.title}"


class SyncRun(models.Model):
    class Status(models.TextChoices):
        RUNNING = "running", _("进行中")
        SUCCESS = "success", _("成功")
        PARTIAL = "partial", _("部分成功")
        FAILED = "failed", _("失败")

    class Trigger(models.TextChoices):
        BEAT = "beat", _("定时")
        ADMIN = "admin", _("后台按钮")
        COMMAND = "command", _("命令行")
        DEMO = "demo", _("演示数据")

    trigger = models.CharField(_("触发方式"), max_length=16, choices=Trigger.choices, default=Trigger.COMMAND)
    full = models.BooleanField(_("完整同步"), default=False)
    status = models.CharField(_("状态"), max_length=16, choices=Status.choices, default=Status.RUNNING)
    started_at = models.DateTimeField(_("开始时间"), auto_now_add=True, db_index=True)
    finished_at = models.DateTimeField(_("结束时间"), null=True, blank=True)
    created = models.PositiveIntegerField(_("新增"), default=0)
    updated = models.PositiveIntegerField(_("更新"), default=0)
    unchanged = models.PositiveIntegerField(_("未变"), default=0)
    errors = models.PositiveIntegerField(_("错误数"), default=0)
    error_log = models.TextField(_("错误日志"), blank=True)
    stats = models.JSONField(_("明细"), default=dict, blank=True, help_text=_("按客户 / 联系人 / 合同分别统计"))

    class Meta:
        verbose_name = _("同步记录")
        verbose_name_plural = _("同步记录")
        ordering = ["-started_at"]

    def __str__(self) -> str:
        return f"#{self.pk} {self.get_status_display()} {self.started_at:%Y-%m-%d %H:%M}"

    @property
    def duration(self) -> float | None:
        if self.finished_at is None:
            return None
        return (self.finished_at - self.started_at).total_seconds()
