"""Engines: which engine answers (global / per personality; per chat lives on the conversation), the
personalities, and what an engine remembers about a conversation and a contact.

Conversation ids are plain integers (the conversation model belongs to the message pipeline), so this
app's migrations do not depend on another app's."""

from django.conf import settings
from django.db import models
from django.db.models import Q
from django.utils.translation import gettext_lazy as _


class EngineName(models.TextChoices):
    OFFLINE = "offline", _("离线应答（知识库）")
    CHAT = "chat", _("对话引擎（ChatEngine）")
    MEM0 = "mem0", _("记忆引擎（Mem0Engine）")


class EngineSetting(models.Model):
    """One row (pk=1): the engine answering every chat that has no personality/chat override."""

    SINGLETON_ID = 1

    active_engine = models.CharField(_("当前引擎"), max_length=20, choices=EngineName.choices)
    changed_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, verbose_name=_("切换人"), null=True, blank=True, on_delete=models.SET_NULL
    )
    changed_at = models.DateTimeField(_("切换时间"), auto_now=True)

    class Meta:
        verbose_name = _("引擎设置")
        verbose_name_plural = _("引擎设置")

    def __str__(self) -> str:
        return str(self.get_active_engine_display())


class EngineSwitch(models.Model):
    """Audit trail of switches (who moved what to which engine), refused ones included."""

    class Scope(models.TextChoices):
        GLOBAL = "global", _("全局")
        PERSONALITY = "personality", _("人设")
        CHAT = "chat", _("会话")

    scope = models.CharField(_("范围"), max_length=20, choices=Scope.choices)
    target = models.CharField(_("对象"), max_length=200, blank=True)
    engine = models.CharField(_("引擎"), max_length=20, blank=True)
    accepted = models.BooleanField(_("已生效"), default=True)
    detail = models.TextField(_("说明"), blank=True)
    user = models.ForeignKey(
        settings.AUTH_USER_MODEL, verbose_name=_("操作人"), null=True, blank=True, on_delete=models.SET_NULL
    )
    created_at = models.DateTimeField(_("时间"), auto_now_add=True)

    class Meta:
        verbose_name = _("引擎切换记录")
        verbose_name_plural = _("引擎切换记录")
        ordering = ["-created_at"]

    def __str__(self) -> str:
        return f"{self.get_scope_display()} {self.target} → {self.engine}"


class Personality(models.Model):
    name = models.CharField(_("名称"), max_length=100, unique=True)
    system_prompt = models.TextField(_("系统提示词"))
    tone = models.CharField(_("语气"), max_length=100, blank=True, help_text=_("例如：亲切、专业、简洁"))
    max_reply_length = models.PositiveIntegerField(_("回复最大字数"), default=300)
    temperature = models.FloatField(_("温度"), default=0.3)
    route = models.CharField(_("模型路由"), max_length=100, default="default", help_text=_("大模型网关的路由名"))
    few_shot_examples = models.JSONField(
        _("示例对话"), default=list, blank=True, help_text=_('列表：[{"user": "客户的话", "assistant": "示范回复"}]')
    )
    engine = models.CharField(
        _("指定引擎"), max_length=20, choices=EngineName.choices, blank=True, help_text=_("留空则使用全局引擎")
    )
    is_default = models.BooleanField(_("默认人设"), default=False)
    active = models.BooleanField(_("启用"), default=True)
    created_at = models.DateTimeField(_("创建时间"), auto_now_add=True)
    updated_at = models.DateTimeField(_("更新时间"), auto_now=True)

    class Meta:
        verbose_name = _("人设")
        verbose_name_plural = _("人设")
        ordering = ["name"]
        constraints = [
            models.UniqueConstraint(fields=["is_default"], condition=Q(is_default=True), name="one_default_personality")
        ]

    def __str__(self) -> str:
        return self.name

    def validate_constraints(self, exclude=None):
        # Making a personality the default takes the flag from the previous one
        # (services.save_personality), so a second default is not a validation error.
        super().validate_constraints(exclude={*(exclude or ()), "is_default"})


class ConversationSummary(models.Model):
    """Rolling summary of the turns that fell out of the recent-memory window."""

    conversation_id = models.BigIntegerField(_("会话"), unique=True)
    summary = models.TextField(_("摘要"), blank=True)
    covered_until = models.DateTimeField(_("已覆盖到"), null=True, blank=True)
    updated_at = models.DateTimeField(_("更新时间"), auto_now=True)

    class Meta:
        verbose_name = _("会话摘要")
        verbose_name_plural = _("会话摘要")

    def __str__(self) -> str:
        return f"#{self.conversation_id}"


class ContactFact(models.Model):
    """A long-term fact about one contact (an agent's WeChat contact in one chat)."""

    class Source(models.TextChoices):
        MODEL = "model", _("模型记录")
        SUPERVISOR = "supervisor", _("人工录入")

    agent_id = models.CharField(_("终端"), max_length=64)
    chat_name = models.CharField(_("聊天"), max_length=200)
    contact = models.CharField(_("联系人"), max_length=200)
    fact = models.CharField(_("事实"), max_length=500)
    source = models.CharField(_("来源"), max_length=20, choices=Source.choices, default=Source.MODEL)
    conversation_id = models.BigIntegerField(_("会话"), null=True, blank=True)
    created_at = models.DateTimeField(_("记录时间"), auto_now_add=True)

    class Meta:
        verbose_name = _("联系人长期记忆")
        verbose_name_plural = _("联系人长期记忆")
        ordering = ["-created_at"]
        indexes = [models.Index(fields=["agent_id", "chat_name", "contact"])]
        constraints = [
            models.UniqueConstraint(fields=["agent_id", "chat_name", "contact", "fact"], name="unique_contact_fact")
        ]

    def __str__(self) -> str:
        return f"{self.contact}: {self.fact}"
