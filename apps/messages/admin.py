"""Supervisor back office: conversation timeline, review queue (approve / edit / reject), takeover."""

from django.contrib import admin, messages
from django.db.models import Count, Q
from django.http import HttpResponseRedirect
from django.urls import reverse
from django.utils.html import format_html
from django.utils.translation import gettext_lazy as _

from apps.messages import review
from apps.messages.models import Conversation, Message, Reply

STATUS_COLOURS = {
    "pending_review": "#ef6c00",
    "queued": "#1565c0",
    "sent": "#1565c0",
    "delivered": "#2e7d32",
    "failed": "#c62828",
    "rejected": "#757575",
    "skipped": "#9e9e9e",
}


def message_trace_link(message: Message):
    """The message's trace (rules, retrieval, model calls, delivery) on the monitoring dashboard."""
    url = reverse("dashboard-trace", args=[message.trace_id.hex])
    return format_html('<a href="{}">{}</a>', url, message.trace_id.hex)


def status_badge(reply: Reply | None):
    if reply is None:
        return "—"
    return format_html(
        '<b style="color:{}">{}</b>', STATUS_COLOURS.get(reply.status, "#000"), reply.get_status_display()
    )


class TimelineInline(admin.TabularInline):
    """Each message of the conversation with its reply, status and latency (oldest first)."""

    model = Message
    verbose_name = _("消息")
    verbose_name_plural = _("会话时间线")
    extra = 0
    can_delete = False
    ordering = ["id"]
    fields = ["received_at", "sender", "content", "reply_content", "reply_status", "confidence", "latency", "review"]
    readonly_fields = fields
    show_change_link = False

    def get_queryset(self, request):
        return super().get_queryset(request).select_related("reply")

    def has_add_permission(self, request, obj=None):
        return False

    @staticmethod
    def _reply(obj):
        try:
            return obj.reply
        except Reply.DoesNotExist:
            return None

    @admin.display(description=_("回复"))
    def reply_content(self, obj):
        reply = self._reply(obj)
        if reply is None:
            return obj.get_status_display()
        if reply.action == Reply.Action.IGNORE:
            return format_html("<i>{}</i>", reply.review_reason or _("不回复"))
        return reply.content or "—"

    @admin.display(description=_("状态"))
    def reply_status(self, obj):
        return status_badge(self._reply(obj))

    @admin.display(description=_("置信度"))
    def confidence(self, obj):
        reply = self._reply(obj)
        return f"{reply.confidence:.2f}" if reply else "—"

    @admin.display(description=_("耗时(ms)"))
    def latency(self, obj):
        reply = self._reply(obj)
        if not reply or not reply.latency_ms:
            return "—"
        parts = reply.latency_ms
        return format_html(
            "<b>{}</b><br><small>排队 {} · 规则 {} · 检索 {} · 模型 {}</small>",
            parts.get("total", "—"),
            parts.get("queue_wait", "—"),
            parts.get("rules", "—"),
            parts.get("retrieval", "—"),
            parts.get("llm", "—"),
        )

    @admin.display(description=_("审核"))
    def review(self, obj):
        reply = self._reply(obj)
        if reply is None or reply.status != Reply.Status.PENDING_REVIEW:
            return ""
        url = reverse("admin:wxmessages_reply_change", args=[reply.pk])
        return format_html('<a class="button" href="{}">{}</a>', url, _("审核 / 修改"))


@admin.register(Conversation)
class ConversationAdmin(admin.ModelAdmin):
    list_display = (
        "chat_name",
        "agent",
        "chat_type",
        "taken_over",
        "pending_count",
        "message_count",
        "last_message_at",
    )
    list_filter = ("taken_over", "chat_type", "agent")
    search_fields = ("chat_name", "chat_id")
    readonly_fields = (
        "agent",
        "chat_name",
        "chat_id",
        "chat_type",
        "taken_over",
        "taken_over_by",
        "taken_over_at",
        "created_at",
        "last_message_at",
        "trace_link",
    )
    fields = (
        ("agent", "chat_type"),
        ("chat_name", "chat_id"),
        ("taken_over", "taken_over_by", "taken_over_at"),
        ("engine_override", "personality_id"),
        ("created_at", "last_message_at"),
        "trace_link",
    )
    inlines = [TimelineInline]
    actions = ["take_over", "hand_back"]
    change_form_template = "admin/wxmessages/conversation/change_form.html"

    def get_queryset(self, request):
        return (
            super()
            .get_queryset(request)
            .annotate(
                _pending=Count("replies", filter=Q(replies__status=Reply.Status.PENDING_REVIEW), distinct=True),
                _messages=Count("messages", distinct=True),
            )
        )

    def has_add_permission(self, request):
        return False

    @admin.display(description=_("待审核"), ordering="_pending")
    def pending_count(self, obj):
        return obj._pending

    @admin.display(description=_("消息数"), ordering="_messages")
    def message_count(self, obj):
        return obj._messages

    @admin.action(description=_("人工接管（暂停机器人）"))
    @admin.display(description=_("追踪"))
    def trace_link(self, obj):
        url = reverse("dashboard-conversation-trace", args=[obj.pk])
        return format_html('<a href="{}">{}</a>', url, _("查看最近消息的处理追踪"))

    def take_over(self, request, queryset):
        for conversation in queryset:
            review.take_over(conversation.pk, request.user)
        self.message_user(request, _("已接管 %d 个会话") % queryset.count())

    @admin.action(description=_("交还机器人"))
    def hand_back(self, request, queryset):
        for conversation in queryset:
            review.hand_back(conversation.pk)
        self.message_user(request, _("已交还 %d 个会话") % queryset.count())

    def response_change(self, request, obj):
        if "_take_over" in request.POST:
            review.take_over(obj.pk, request.user)
            self.message_user(request, _("已接管，机器人暂停；新回复将进入待审核"))
            return HttpResponseRedirect(request.path)
        if "_hand_back" in request.POST:
            review.hand_back(obj.pk)
            self.message_user(request, _("已交还机器人"))
            return HttpResponseRedirect(request.path)
        return super().response_change(request, obj)


@admin.register(Reply)
class ReplyAdmin(admin.ModelAdmin):
    list_display = (
        "id",
        "conversation",
        "question",
        "content_short",
        "status_badge_",
        "action",
        "confidence",
        "review_reason",
        "engine",
        "total_ms",
        "created_at",
    )
    list_filter = ("status", "action", "source", "engine", "agent")
    search_fields = ("content", "message__content", "conversation__chat_name")
    list_select_related = ("conversation", "message")
    date_hierarchy = "created_at"
    actions = ["approve_selected", "reject_selected"]
    change_form_template = "admin/wxmessages/reply/change_form.html"
    readonly_fields = (
        "message",
        "conversation",
        "agent",
        "question",
        "action",
        "status",
        "source",
        "confidence",
        "review_reason",
        "draft",
        "at",
        "engine",
        "model",
        "provider",
        "rule_id",
        "rule_name",
        "input_tokens",
        "output_tokens",
        "cost",
        "citations",
        "tool_calls",
        "latency_ms",
        "decision_ms",
        "reviewed_by",
        "reviewed_at",
        "created_at",
        "queued_at",
        "pushed_at",
        "acked_at",
        "delivery_attempts",
        "delivery_error",
        "trace_link",
    )
    fieldsets = (
        (None, {"fields": ("conversation", "question", "content", "status", "action", "review_reason", "confidence")}),
        (
            _("来源"),
            {
                "fields": (
                    "source",
                    "engine",
                    "model",
                    "provider",
                    "rule_name",
                    "draft",
                    "citations",
                    "tool_calls",
                    "input_tokens",
                    "output_tokens",
                    "cost",
                )
            },
        ),
        (
            _("耗时与送达"),
            {
                "fields": (
                    "latency_ms",
                    "decision_ms",
                    "created_at",
                    "queued_at",
                    "pushed_at",
                    "acked_at",
                    "delivery_attempts",
                    "delivery_error",
                    "reviewed_by",
                    "reviewed_at",
                    "trace_link",
                )
            },
        ),
    )

    def has_add_permission(self, request):
        return False

    def get_readonly_fields(self, request, obj=None):
        fields = list(self.readonly_fields)
        if obj is None or obj.status != Reply.Status.PENDING_REVIEW:
            fields.append("content")
        return fields

    @admin.display(description=_("客户消息"))
    def question(self, obj):
        return obj.message.content

    @admin.display(description=_("回复"))
    def content_short(self, obj):
        return (obj.content[:60] + "…") if len(obj.content) > 60 else obj.content

    @admin.display(description=_("状态"), ordering="status")
    def status_badge_(self, obj):
        return status_badge(obj)

    @admin.display(description=_("总耗时(ms)"))
    def total_ms(self, obj):
        return (obj.latency_ms or {}).get("total", "—")

    @admin.display(description=_("追踪"))
    def trace_link(self, obj):
        return message_trace_link(obj.message)

    def save_model(self, request, obj, form, change):
        # content edits are only applied through approve (below) so a review is always recorded
        if "_approve" not in request.POST:
            super().save_model(request, obj, form, change)

    def response_change(self, request, obj):
        if "_approve" in request.POST:
            if review.approve(obj.pk, request.user, content=request.POST.get("content")):
                self.message_user(request, _("已批准并推送给客服终端"))
            else:
                self.message_user(request, _("无法批准：回复不在待审核状态或内容为空"), messages.ERROR)
            return HttpResponseRedirect(reverse("admin:wxmessages_reply_changelist") + "?status__exact=pending_review")
        if "_reject" in request.POST:
            if review.reject(obj.pk, request.user):
                self.message_user(request, _("已驳回，不会发送"))
            return HttpResponseRedirect(reverse("admin:wxmessages_reply_changelist") + "?status__exact=pending_review")
        return super().response_change(request, obj)

    @admin.action(description=_("批准并发送所选回复"))
    def approve_selected(self, request, queryset):
        done = sum(review.approve(pk, request.user) for pk in queryset.values_list("pk", flat=True))
        self.message_user(request, _("已批准 %d 条") % done)

    @admin.action(description=_("驳回所选回复"))
    def reject_selected(self, request, queryset):
        done = sum(review.reject(pk, request.user) for pk in queryset.values_list("pk", flat=True))
        self.message_user(request, _("已驳回 %d 条") % done)


@admin.register(Message)
class MessageAdmin(admin.ModelAdmin):
    list_display = ("id", "conversation", "sender", "content", "status", "received_at", "decided_at", "trace_link")
    list_filter = ("status", "msg_type", "is_at_me", "agent")
    search_fields = ("content", "sender", "client_msg_id", "=trace_id")
    list_select_related = ("conversation",)
    readonly_fields = [*(f.name for f in Message._meta.fields), "trace_link"]

    @admin.display(description=_("追踪"))
    def trace_link(self, obj):
        return message_trace_link(obj)

    def has_add_permission(self, request):
        return False

    def has_change_permission(self, request, obj=None):
        return False
