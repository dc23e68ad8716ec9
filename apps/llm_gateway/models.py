from django.db import models
from django.utils.translation import gettext_lazy as _

from apps.core.fields import EncryptedTextField
from apps.llm_gateway.presets import PRESETS


class Provider(models.Model):
    """An OpenAI-compatible endpoint. Blank fields fall back to `<NAME>_API_*` env vars, then the preset."""

    name = models.SlugField(_("名称"), max_length=40, unique=True, help_text=_("如 qwen、deepseek、my-vllm"))
    kind = models.CharField(
        _("类型"), max_length=20, choices=[(k, p.label) for k, p in PRESETS.items()], default="custom"
    )
    api_base = models.URLField(_("接口地址"), blank=True, help_text=_("留空使用预设地址或环境变量"))
    api_key = EncryptedTextField(_("API Key"), blank=True, help_text=_("加密存储；留空使用环境变量"))
    default_model = models.CharField(_("默认模型"), max_length=100, blank=True)
    timeout = models.FloatField(_("单次超时（秒）"), null=True, blank=True)
    enabled = models.BooleanField(_("启用"), default=True)
    updated_at = models.DateTimeField(_("更新时间"), auto_now=True)

    class Meta:
        verbose_name = _("模型服务商")
        verbose_name_plural = _("模型服务商")
        ordering = ["name"]

    def __str__(self) -> str:
        return self.name


class Route(models.Model):
    """A named, ordered fallback chain of (provider, model): default, cheap, embedding, …"""

    name = models.SlugField(_("名称"), max_length=40, unique=True)
    description = models.CharField(_("说明"), max_length=200, blank=True)
    updated_at = models.DateTimeField(_("更新时间"), auto_now=True)

    class Meta:
        verbose_name = _("模型路由")
        verbose_name_plural = _("模型路由")
        ordering = ["name"]

    def __str__(self) -> str:
        return self.name


class RouteEntry(models.Model):
    route = models.ForeignKey(Route, on_delete=models.CASCADE, related_name="entries")
    position = models.PositiveSmallIntegerField(_("顺序"), default=0)
    provider = models.ForeignKey(Provider, on_delete=models.CASCADE, verbose_name=_("服务商"))
    model = models.CharField(_("模型"), max_length=100, blank=True, help_text=_("留空使用服务商默认模型"))
    temperature = models.FloatField(_("温度"), null=True, blank=True)
    max_tokens = models.PositiveIntegerField(_("最大输出 tokens"), null=True, blank=True)
    timeout = models.FloatField(_("单次超时（秒）"), null=True, blank=True)

    class Meta:
        verbose_name = _("路由条目")
        verbose_name_plural = _("路由条目")
        ordering = ["route", "position", "id"]

    def __str__(self) -> str:
        return f"{self.route}#{self.position} {self.provider}/{self.model}"
