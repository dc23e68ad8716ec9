import json

from django.contrib import admin
from django.template.response import TemplateResponse
from django.utils.html import format_html
from django.utils.translation import gettext_lazy as _

from apps.agents import services
from apps.agents.models import Agent
from apps.agents.selectors import heartbeat_count

HEARTBEAT_SHOWN_CHARS = 2000  # rows stored before heartbeats were validated may be megabytes

PRESENCE_COLOURS = {"online": "#2e7d32", "degraded": "#ef6c00", "offline": "#9e9e9e"}


@admin.register(Agent)
class AgentAdmin(admin.ModelAdmin):
    list_display = (
        "name",
        "id",
        "presence_badge",
        "last_heartbeat_at",
        "wechat_account",
        "driver",
        "agent_version",
        "queue_size",
        "dead_letters",
        "is_active",
    )
    list_filter = ("is_active", "driver")
    actions = ["rotate_secrets"]
    search_fields = ("id", "name", "wechat_account")
    readonly_fields = (
        "id",
        "presence_badge",
        "last_seen",
        "last_heartbeat_at",
        "dead_letters",
        "heartbeat_summary",
        "created_at",
        "reported_presence",
    )
    fields = (
        "id",
        "name",
        "is_active",
        "wechat_account",
        "driver",
        "agent_version",
        "heartbeat_interval",
        "presence_badge",
        "reported_presence",
        "last_seen",
        "last_heartbeat_at",
        "dead_letters",
        "heartbeat_summary",
        "created_at",
    )

    def has_add_permission(self, request):
        return False  # agents are created with `manage.py create_agent` so the secret is shown once

    def save_model(self, request, obj, form, change):
        services.save_agent(obj)

    def delete_model(self, request, obj):
        services.delete_agents(Agent.objects.filter(pk=obj.pk))

    def delete_queryset(self, request, queryset):
        services.delete_agents(queryset)

    @admin.action(description=_("轮换密钥（旧密钥和全部令牌作废，断开在线连接）"), permissions=["change"])
    def rotate_secrets(self, request, queryset):
        """New secrets, shown once on the page this action answers with (never stored in the session/messages)."""
        rotated = [(agent, services.rotate_secret(agent)) for agent in queryset]
        context = {**self.admin_site.each_context(request), "title": _("新密钥"), "rotated": rotated}
        return TemplateResponse(request, "admin/agents/agent/rotated_secrets.html", context)  # admin: no-store

    @admin.display(description=_("状态"))
    def presence_badge(self, obj):
        presence = obj.presence
        return format_html(
            '<b style="color:{}">●</b> {}', PRESENCE_COLOURS.get(presence, "#999"), Agent.Presence(presence).label
        )

    @admin.display(description=_("离线队列"))
    def queue_size(self, obj):
        return heartbeat_count(obj.last_heartbeat, "queue_size")

    @admin.display(description=_("被拒消息"))
    def dead_letters(self, obj):
        """Messages the server refused for good, set aside by the agent in its dead-letter file."""
        return heartbeat_count(obj.last_heartbeat, "dead_letters")

    @admin.display(description=_("最后心跳内容"))
    def heartbeat_summary(self, obj):
        shown = json.dumps(obj.last_heartbeat, ensure_ascii=False, indent=1, default=str)
        if len(shown) > HEARTBEAT_SHOWN_CHARS:
            shown = shown[:HEARTBEAT_SHOWN_CHARS] + " …"
        return format_html("<pre>{}</pre>", shown)
