from django.contrib import admin
from django.utils.translation import gettext_lazy as _

from apps.core.permissions import staff_can
from apps.customers import services
from apps.customers.api import EXPORT_PERMISSION, export_response
from apps.customers.models import Contact, Customer, WeChatBinding

ERP_FIELDS = [field for field, _column in Customer.ERP_COLUMNS]


class ReadOnlyInline(admin.TabularInline):
    extra = 0
    can_delete = False

    def has_add_permission(self, request, obj=None):
        return False

    def has_change_permission(self, request, obj=None):
        return False


class ContactInline(ReadOnlyInline):
    model = Contact
    fields = ("erp_id", "name", "sex", "title", "mobile", "phone", "email")
    readonly_fields = fields


class WeChatBindingInline(admin.TabularInline):
    model = WeChatBinding
    fields = ("agent_id", "chat_name", "sender", "remark", "status", "method")
    readonly_fields = ("method",)
    extra = 0


@admin.register(Customer)
class CustomerAdmin(admin.ModelAdmin):
    list_display = (
        "erp_id",
        "name",
        "k_code",
        "salesperson",
        "category",
        "status",
        "contact_name",
        "mobile",
        "phone",
        "intent_score",
        "in_erp",
        "last_synced_at",
    )
    list_display_links = ("erp_id", "name")
    list_filter = ("salesperson", "category", "status", "source", "value_rating", "in_erp")
    search_fields = (
        "name",
        "contact_name",
        "phone",
        "mobile",
        "k_code",
        "=erp_id",
        "contacts__name",
        "contacts__mobile",
    )
    readonly_fields = (*ERP_FIELDS, "source", "value_rating", "in_erp", "last_synced_at", "created_at", "updated_at")
    fieldsets = (
        (
            _("ERP 数据（以 ERP 为准，同步时覆盖）"),
            {"fields": (*ERP_FIELDS, "source", "value_rating", "in_erp", "last_synced_at")},
        ),
        (_("本地数据（同步不会覆盖）"), {"fields": ("k_code", "tags", "intent_score", "created_at", "updated_at")}),
    )
    inlines = [ContactInline, WeChatBindingInline]  # the erp app adds the customer's contracts
    actions = ["export_csv", "export_json"]
    list_per_page = 50

    def has_add_permission(self, request):
        return False  # customers come from the ERP

    def has_export_permission(self, request) -> bool:
        return staff_can(request.user, EXPORT_PERMISSION)

    @admin.action(description=_("导出所选客户为 CSV（Excel）"), permissions=["export"])
    def export_csv(self, request, queryset):
        return export_response(request, queryset, "csv")

    @admin.action(description=_("导出所选客户为 JSON"), permissions=["export"])
    def export_json(self, request, queryset):
        return export_response(request, queryset, "json")


@admin.register(WeChatBinding)
class WeChatBindingAdmin(admin.ModelAdmin):
    list_display = ("chat_name", "sender", "remark", "agent_id", "customer", "status", "method", "updated_at")
    list_filter = ("status", "method", "agent_id")
    search_fields = ("chat_name", "sender", "remark", "customer__name", "customer__k_code")
    autocomplete_fields = ("customer",)
    readonly_fields = ("method", "created_at", "updated_at")
    actions = ["confirm", "reject", "rematch"]

    def save_model(self, request, obj, form, change):
        if "customer" in form.changed_data:
            services.bind_manually(obj, obj.customer)
        else:
            super().save_model(request, obj, form, change)

    @admin.action(description=_("确认绑定"))
    def confirm(self, request, queryset):
        count = services.set_status(queryset, WeChatBinding.Status.BOUND)
        self.message_user(request, _("已确认 %(count)d 条绑定") % {"count": count})

    @admin.action(description=_("拒绝建议"))
    def reject(self, request, queryset):
        count = services.set_status(queryset, WeChatBinding.Status.REJECTED)
        self.message_user(request, _("已拒绝 %(count)d 条建议") % {"count": count})

    @admin.action(description=_("重新自动匹配"))
    def rematch(self, request, queryset):
        count = services.rematch(queryset)
        self.message_user(request, _("%(count)d 条匹配到了客户") % {"count": count})
