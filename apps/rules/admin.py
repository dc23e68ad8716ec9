from django import forms
from django.contrib import admin
from django.template.response import TemplateResponse
from django.urls import path
from django.utils import timezone
from django.utils.translation import gettext_lazy as _

from apps.core import aio
from apps.core.permissions import admin_page

from . import services
from .models import AdminNickname, ChatMute, RateLimit, Rule
from .types import MessageFacts


class PreviewForm(forms.Form):
    content = forms.CharField(label=_("消息内容"), widget=forms.Textarea(attrs={"rows": 2, "cols": 60}))
    chat_name = forms.CharField(label=_("会话名"), initial="张三", max_length=200)
    chat_type = forms.ChoiceField(label=_("会话类型"), choices=[("private", _("私聊")), ("group", _("群聊"))])
    sender = forms.CharField(label=_("发送者"), initial="张三", max_length=100)
    is_at_me = forms.BooleanField(label=_("@了我"), required=False)
    agent_id = forms.CharField(label=_("客户端"), initial="preview", max_length=100)
    received_at = forms.DateTimeField(
        label=_("时间（北京时间）"),
        required=False,
        widget=forms.DateTimeInput(attrs={"type": "datetime-local"}),
        input_formats=["%Y-%m-%dT%H:%M", "%Y-%m-%d %H:%M", "%Y-%m-%d %H:%M:%S"],
        help_text=_("空为现在"),
    )


class RulesConfigAdmin(admin.ModelAdmin):
    """Every change goes through the rules services, which make every process recompile the rule set."""

    def save_model(self, request, obj, form, change):
        services.save_rule_config(obj)

    def delete_model(self, request, obj):
        services.delete_rule_config(obj)

    def delete_queryset(self, request, queryset):
        services.delete_rule_config(queryset)


@admin.register(Rule)
class RuleAdmin(RulesConfigAdmin):
    list_display = ("priority", "name", "action", "enabled", "stop", "conditions", "updated_at")
    list_display_links = ("name",)
    list_editable = ("priority", "enabled", "stop")
    list_filter = ("enabled", "action", "chat_type")
    search_fields = ("name", "keywords", "regex", "note")
    change_list_template = "admin/rules/rule/change_list.html"
    fieldsets = [
        (None, {"fields": ("name", "priority", "enabled", "stop", "note")}),
        (
            _("条件（填写的条件都要满足）"),
            {
                "fields": (
                    "keywords",
                    "keyword_mode",
                    "regex",
                    "chat_type",
                    "chat_names",
                    "senders",
                    "at_me",
                    ("time_start", "time_end"),
                    "weekdays",
                    "max_length",
                )
            },
        ),
        (_("动作"), {"fields": ("action", "reply_templates", "handoff_reason", ("personality_id", "engine"), "tags")}),
    ]

    @admin.display(description=_("条件"))
    def conditions(self, obj):
        return "；".join(services.CompiledRule.build(obj).describe) or "—"

    def get_urls(self):
        return [
            path("preview/", admin_page(self, self.preview_view), name="rules_rule_preview"),
            *super().get_urls(),
        ]

    def preview_view(self, request):
        form = PreviewForm(request.POST or None)
        decision = None
        if request.method == "POST" and form.is_valid():
            data = form.cleaned_data
            when = data["received_at"] or timezone.now()
            if timezone.is_naive(when):
                when = timezone.make_aware(when, services.tz())
            facts = MessageFacts(
                agent_id=data["agent_id"],
                chat_name=data["chat_name"],
                chat_type=data["chat_type"],
                sender=data["sender"],
                content=data["content"],
                is_at_me=data["is_at_me"],
                received_at=when,
            )
            decision = aio.run(services.evaluate(facts, dry_run=True), timeout=30)
        context = {
            **self.admin_site.each_context(request),
            "opts": self.model._meta,
            "form": form,
            "decision": decision,
            "title": _("规则：测试一条消息"),
        }
        return TemplateResponse(request, "admin/rules/preview.html", context)


@admin.register(RateLimit)
class RateLimitAdmin(RulesConfigAdmin):
    list_display = ("name", "scope", "applies_to", "limit", "window_seconds", "action", "enabled")
    list_editable = ("limit", "window_seconds", "action", "enabled")


@admin.register(AdminNickname)
class AdminNicknameAdmin(RulesConfigAdmin):
    list_display = ("nickname", "enabled")


@admin.register(ChatMute)
class ChatMuteAdmin(RulesConfigAdmin):
    list_display = ("chat_name", "agent_id", "muted_by", "muted_at", "until")
    search_fields = ("chat_name",)
