from django.contrib import admin, messages
from django.utils.html import format_html
from django.utils.translation import gettext_lazy as _

from apps.monitoring import services
from apps.monitoring.models import AlertEvent, AlertRule, NotificationChannel


@admin.register(NotificationChannel)
class NotificationChannelAdmin(admin.ModelAdmin):
    list_display = ["name", "kind", "enabled"]
    list_filter = ["kind", "enabled"]
    search_fields = ["name"]
    actions = ["send_test"]

    @admin.action(description=_("发送测试通知"))
    def send_test(self, request, queryset):
        sent, failed = services.deliver(
            str(_("测试通知")), str(_("这是一条来自微信客服中台的测试通知。")), "info", list(queryset)
        )
        self.message_user(request, _("已发送 %(n)d 条") % {"n": sent})
        for failure in failed:
            self.message_user(request, failure, level=messages.ERROR)


@admin.register(AlertRule)
class AlertRuleAdmin(admin.ModelAdmin):
    list_display = [
        "name",
        "metric",
        "comparison",
        "threshold",
        "window_seconds",
        "cooldown_seconds",
        "severity",
        "enabled",
        "last_value",
        "last_evaluated_at",
    ]
    list_filter = ["enabled", "metric", "severity"]
    list_editable = ["enabled"]
    search_fields = ["name"]
    filter_horizontal = ["channels"]
    readonly_fields = ["last_value", "last_evaluated_at"]


@admin.register(AlertEvent)
class AlertEventAdmin(admin.ModelAdmin):
    list_display = [
        "rule",
        "agent",
        "state",
        "value",
        "fired_at",
        "resolved_at",
        "fire_notified_at",
        "resolve_notified_at",
    ]
    list_filter = ["rule", ("resolved_at", admin.EmptyFieldListFilter)]
    search_fields = ["agent_id", "agent_name", "rule__name"]
    list_select_related = ["rule"]
    readonly_fields = [field.name for field in AlertEvent._meta.fields]

    def has_add_permission(self, request):
        return False

    @admin.display(description=_("客服终端"), ordering="agent_name")
    def agent(self, event):
        return event.agent_label or "–"

    @admin.display(description=_("状态"))
    def state(self, event):
        color, label = ("#c0392b", _("告警中")) if event.active else ("#27ae60", _("已恢复"))
        return format_html('<b style="color:{}">{}</b>', color, label)
