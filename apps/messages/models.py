"""Conversations, inbound messages and the reply outbox (app label `wxmessages`).

Idempotency lives in the schema: a message is unique per (agent, client_msg_id); a reply is
one-to-one with its message, so a redelivered task can never make a second reply.
"""

import uuid

from django.conf import settings
from django.db import models
from django.utils import timezone
from django.utils.translation import gettext_lazy as _


class ChatType(models.TextChoices):
    PRIVATE = "private", _("私聊")
    GROUP = "group", _("群聊")


class Conversation(models.Model):
    agent = models.ForeignKey(
        "agents.Agent", on_delete=models.CASCADE, related_name="conversations", verbose_name=_("客服终端")
    )
    chat_name = models.CharField(_("会话"), max_length=200)
    chat_id = models.CharField(_("客户端会话 ID"), max_length=200, blank=True)
    chat_type = models.CharField(_("类型"), max_length=10, choices=ChatType.choices, default=ChatType.PRIVATE)
    taken_over = models.BooleanField(_("人工接管"), default=False, help_text=_("接管期间机器人暂停：回复进入待审核"))
    taken_over_by = models.ForeignKey(
        settings.AUTH_USER_MODEL,
        null=True,
        blank=True,
        on_delete=models.SET_NULL,
        related_name="+",
        verbose_name=_("接管人"),
    )
    taken_over_at = models.DateTimeField(_("接管时间"), null=True, blank=True)
    engine_override = models.CharField(
        _("指定引擎"), max_length=30, blank=True, help_text=_("留空 = 人设或全局的当前引擎")
    )
    personality_id = models.IntegerField(_("指定人设 ID"), null=True, blank=True)
    created_at = models.DateTimeField(_("创建时间"), default=timezone.now)
    last_message_at = models.DateTimeField(_("最后消息"), default=timezone.now)

    class Meta:
        verbose_name = _("会话")
        verbose_name_plural = _("会话")
        constraints = [models.UniqueConstraint(fields=["agent", "chat_name"], name="conversation_agent_chat_uniq")]
        indexes = [models.Index(fields=["-last_message_at"], name="conversation_recent_idx")]

    def __str__(self) -> str:
        return self.chat_name


class Message(models.Model):
    class Status(models.TextChoices):
        RECEIVED = "received", _("已接收")
        PROCESSING = "processing", _("处理中")
        DECIDED = "decided", _("已决策")
        JOINED = "joined", _("已合并")  # a fragment decided with the customer's next message (one question)
        FAILED = "failed", _("失败")

    agent = models.ForeignKey(
        "agents.Agent", on_delete=models.CASCADE, related_name="messages", verbose_name=_("客服终端")
    )
    conversation = models.ForeignKey(
        Conversation, on_delete=models.CASCADE, related_name="messages", verbose_name=_("会话")
    )
    client_msg_id = models.CharField(_("客户端消息 ID"), max_length=128)
    trace_id = models.UUIDField(_("追踪 ID"), default=uuid.uuid4, editable=False, db_index=True)
    sender = models.CharField(_("发送人"), max_length=200, blank=True)
    content = models.TextField(_("内容"))
    msg_type = models.CharField(_("消息类型"), max_length=20, default="text")
    is_at_me = models.BooleanField(_("@我"), default=False)
    client_timestamp = models.DateTimeField(_("客户端时间"), null=True, blank=True)
    received_at = models.DateTimeField(_("接收时间"), default=timezone.now, db_index=True)
    status = models.CharField(_("状态"), max_length=12, choices=Status.choices, default=Status.RECEIVED)
    claimed_at = models.DateTimeField(_("开始处理"), null=True, blank=True)
    decided_at = models.DateTimeField(_("决策时间"), null=True, blank=True)
    attempts = models.PositiveIntegerField(_("处理次数"), default=0)
    error = models.TextField(_("错误"), blank=True)

    class Meta:
        verbose_name = _("消息")
        verbose_name_plural = _("消息")
        # GET /api/v1/stats for staff (all agents' numbers); an agent token sees its own without it.
        permissions = [("view_stats", _("可以查看消息统计"))]
        constraints = [models.UniqueConstraint(fields=["agent", "client_msg_id"], name="message_agent_client_uniq")]
        indexes = [models.Index(fields=["conversation", "status", "id"], name="message_conv_status_idx")]

    def __str__(self) -> str:
        return f"{self.sender}: {self.content[:40]}"


class Reply(models.Model):
    class Action(models.TextChoices):
        REPLY = "reply", _("回复")
        IGNORE = "ignore", _("忽略")
        TRANSFER_HUMAN = "transfer_human", _("转人工")

    class Status(models.TextChoices):
        PENDING_REVIEW = "pending_review", _("待审核")
        QUEUED = "queued", _("待发送")
        SENT = "sent", _("已推送")
        DELIVERED = "delivered", _("已送达")
        FAILED = "failed", _("发送失败")
        REJECTED = "rejected", _("已驳回")
        SKIPPED = "skipped", _("不回复")

    class Source(models.TextChoices):
        RULE = "rule", _("规则")
        ENGINE = "engine", _("引擎")
        HUMAN = "human", _("人工")

    OUTBOX = (Status.QUEUED, Status.SENT)  # pushed (again) to the agent until acked

    message = models.OneToOneField(Message, on_delete=models.CASCADE, related_name="reply", verbose_name=_("消息"))
    conversation = models.ForeignKey(
        Conversation, on_delete=models.CASCADE, related_name="replies", verbose_name=_("会话")
    )
    agent = models.ForeignKey(
        "agents.Agent", on_delete=models.CASCADE, related_name="replies", verbose_name=_("客服终端")
    )
    action = models.CharField(_("动作"), max_length=16, choices=Action.choices, default=Action.REPLY)
    content = models.TextField(_("回复内容"), blank=True)
    draft = models.TextField(_("原始草稿"), blank=True, help_text=_("审核修改前机器给出的内容"))
    at = models.CharField(_("@ 对象"), max_length=200, blank=True)
    status = models.CharField(_("状态"), max_length=16, choices=Status.choices, db_index=True)
    source = models.CharField(_("来源"), max_length=10, choices=Source.choices, default=Source.ENGINE)
    confidence = models.FloatField(_("置信度"), default=0.0)
    review_reason = models.CharField(_("审核原因"), max_length=200, blank=True)
    # provenance
    engine = models.CharField(_("引擎"), max_length=50, blank=True)
    model = models.CharField(_("模型"), max_length=100, blank=True)
    provider = models.CharField(_("服务商"), max_length=50, blank=True)
    rule_id = models.IntegerField(_("规则 ID"), null=True, blank=True)
    rule_name = models.CharField(_("规则"), max_length=100, blank=True)
    input_tokens = models.PositiveIntegerField(_("输入 tokens"), default=0)
    output_tokens = models.PositiveIntegerField(_("输出 tokens"), default=0)
    cost = models.DecimalField(_("成本(元)"), max_digits=12, decimal_places=6, default=0)
    citations = models.JSONField(_("引用"), default=list, blank=True)
    tool_calls = models.JSONField(_("工具调用"), default=list, blank=True)
    latency_ms = models.JSONField(
        _("耗时分解(ms)"), default=dict, blank=True, help_text="queue_wait, rules, retrieval, llm, total"
    )
    decision_ms = models.FloatField(_("决策耗时(ms)"), null=True, blank=True)
    # review
    reviewed_by = models.ForeignKey(
        settings.AUTH_USER_MODEL,
        null=True,
        blank=True,
        on_delete=models.SET_NULL,
        related_name="+",
        verbose_name=_("审核人"),
    )
    reviewed_at = models.DateTimeField(_("审核时间"), null=True, blank=True)
    # delivery
    created_at = models.DateTimeField(_("创建时间"), default=timezone.now, db_index=True)
    queued_at = models.DateTimeField(_("入队时间"), null=True, blank=True)
    pushed_at = models.DateTimeField(_("推送时间"), null=True, blank=True)
    acked_at = models.DateTimeField(_("确认时间"), null=True, blank=True)
    delivery_attempts = models.PositiveIntegerField(_("推送次数"), default=0)
    delivery_error = models.TextField(_("发送错误"), blank=True)

    class Meta:
        verbose_name = _("回复")
        verbose_name_plural = _("回复")
        indexes = [models.Index(fields=["agent", "status", "id"], name="reply_outbox_idx")]

    def __str__(self) -> str:
        return f"#{self.pk} {self.get_action_display()} {self.content[:40]}"
