from django.contrib import admin
from django.core.exceptions import PermissionDenied
from django.http import HttpResponseNotAllowed, HttpResponseRedirect
from django.urls import path, reverse
from django.utils.html import format_html
from django.utils.translation import gettext_lazy as _

from apps.core.permissions import staff_can
from apps.customers import services
from apps.customers.api import EXPORT_PERMISSION, export_response
from apps.customers.models import BindingChange, Contact, Customer, WeChatBinding

CONFIRM_PERMISSION = "customers.confirm_wechatbinding"

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


class WeChatBindingInline(ReadOnlyInline):
    """Read-only: a binding changes only through its own admin page, where every change is recorded."""

    model = WeChatBinding
    fields = ("agent_id", "chat_name", "sender", "remark", "status", "method", "source", "matched_text")
    readonly_fields = fields
    show_change_link = True


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


class BindingChangeInline(ReadOnlyInline):
    model = BindingChange
    fields = ("at", "actor_name", "action", "from_status", "from_customer", "to_status", "to_customer", "source")
    readonly_fields = fields
    ordering = ("-at", "-id")


@admin.register(WeChatBinding)
class WeChatBindingAdmin(admin.ModelAdmin):
    list_display = (
        "chat_name",
        "sender",
        "is_group",
        "agent_id",
        "customer",
        "status",
        "method",
        "source",
        "matched_text",
        "updated_at",
    )
    list_filter = ("status", "source", "method", "is_group", "agent_id")
    search_fields = ("chat_name", "sender", "remark", "customer__name", "customer__k_code")
    autocomplete_fields = ("customer",)
    list_select_related = ("customer",)
    inlines = [BindingChangeInline]
    actions = ["confirm", "reject", "rematch"]

    def get_fields(self, request, obj=None):
        return (
            "agent_id",
            "chat_name",
            "sender",
            "is_group",
            "remark",
            "customer",
            *self.get_readonly_fields(request, obj),
        )

    def get_readonly_fields(self, request, obj=None):
        state = ("status", "method", "source", "matched_text", "created_at", "updated_at")
        return ("agent_id", "chat_name", "sender", "is_group", *state) if obj else state

    def get_list_display(self, request):
        shown = super().get_list_display(request)
        return (*shown, "decide_buttons") if self.has_confirm_permission(request) else shown

    def has_delete_permission(self, request, obj=None):
        return False  # unbind instead: the change is recorded, a deleted row would not be

    def has_confirm_permission(self, request) -> bool:
        return request.user.has_perm(CONFIRM_PERMISSION)

    def save_model(self, request, obj, form, change):
        """A customer chosen here is a manual (trusted) binding; a remark is the staff's own field."""
        if "customer" in form.changed_data or not change:
            services.bind(obj, obj.customer, request.user)
        if "remark" in form.changed_data:
            services.set_remark(obj, obj.remark, request.user)

    @admin.display(description=_("处理建议"))
    def decide_buttons(self, obj):
        if obj.status != WeChatBinding.Status.SUGGESTED or obj.customer_id is None:
            return "-"
        # Buttons of the change list's own form (it carries the CSRF token) posted to the one-row views.
        return format_html(
            '<button type="submit" class="button" formaction="{}">{}</button> '
            '<button type="submit" class="button" formaction="{}">{}</button>',
            reverse("admin:customers_wechatbinding_confirm_one", args=[obj.pk]),
            _("确认"),
            reverse("admin:customers_wechatbinding_reject_one", args=[obj.pk]),
            _("拒绝"),
        )

    def get_urls(self):
        decide = [
            path(
                f"<int:object_id>/{name}/",
                self.admin_site.admin_view(getattr(self, f"{name}_one")),
                name=f"customers_wechatbinding_{name}_one",
            )
            for name in ("confirm", "reject")
        ]
        return decide + super().get_urls()

    def _decide_one(self, request, object_id: int, decide) -> HttpResponseRedirect:
        if request.method != "POST":
            return HttpResponseNotAllowed(["POST"])
        if not self.has_confirm_permission(request):
            raise PermissionDenied
        decide(request, WeChatBinding.objects.filter(pk=object_id))
        return HttpResponseRedirect(reverse("admin:customers_wechatbinding_changelist"))

    def confirm_one(self, request, object_id: int):
        return self._decide_one(request, object_id, self.confirm)

    def reject_one(self, request, object_id: int):
        return self._decide_one(request, object_id, self.reject)

    @admin.action(description=_("确认所选建议（绑定到建议的客户）"), permissions=["confirm"])
    def confirm(self, request, queryset):
        count = services.confirm(queryset, request.user)
        self.message_user(request, _("已确认 %(count)d 条绑定") % {"count": count})

    @admin.action(description=_("拒绝所选建议"), permissions=["confirm"])
    def reject(self, request, queryset):
        count = services.reject(queryset, request.user)
        self.message_user(request, _("已拒绝 %(count)d 条建议") % {"count": count})

    @admin.action(description=_("重新生成建议（只处理未匹配和待确认的）"), permissions=["change"])
    def rematch(self, request, queryset):
        count = services.rematch(queryset, request.user)
        self.message_user(request, _("%(count)d 条匹配到了建议客户") % {"count": count})


@admin.register(BindingChange)
class BindingChangeAdmin(admin.ModelAdmin):
    """The binding audit trail: read-only for everyone."""

    list_display = (
        "at",
        "actor_name",
        "action",
        "chat_name",
        "sender",
        "from_status",
        "from_customer",
        "to_status",
        "to_customer",
        "method",
        "source",
    )
    list_filter = ("action", "to_status", "source")
    search_fields = ("chat_name", "sender", "actor_name", "to_customer__name", "from_customer__name")
    list_select_related = ("from_customer", "to_customer")
    date_hierarchy = "at"

    def has_add_permission(self, request):
        return False

    def has_change_permission(self, request, obj=None):
        return False

    def has_delete_permission(self, request, obj=None):
        return False
