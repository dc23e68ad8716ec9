from django import forms
from django.contrib import admin, messages
from django.http import HttpResponseRedirect
from django.urls import path, reverse
from django.utils.translation import gettext_lazy as _
from django.views.decorators.http import require_POST

from apps.customers.admin import ContactInline, CustomerAdmin, ReadOnlyInline, WeChatBindingInline
from apps.customers.models import Customer
from apps.erp import services, tasks
from apps.erp.models import Contract, ErpConnection, SyncRun


class ErpConnectionForm(forms.ModelForm):
    base_url = forms.URLField(label=_("ERP 地址"), assume_scheme="http", help_text=_("如 http://erp.example.com:8080"))
    password = forms.CharField(
        label=_("密码"),
        required=False,
        widget=forms.PasswordInput(render_value=False),
        help_text=_("加密保存；留空则保持原密码"),
    )

    class Meta:
        model = ErpConnection
        fields = ("name", "base_url", "username", "password", "active")

    def clean_password(self):
        password = self.cleaned_data.get("password")
        return password or (self.instance.password if self.instance.pk else "")


class ContractInline(ReadOnlyInline):
    model = Contract
    fields = ("erp_id", "number", "title", "amount", "signed_on", "status")
    readonly_fields = fields
    show_change_link = True


# erp sits above customers: it extends the customer admin with the ERP's parts (contracts, the sync
# buttons) instead of customers importing erp — Django's way of adding to another app's admin.
admin.site.unregister(Customer)


@admin.register(Customer)
class ErpCustomerAdmin(CustomerAdmin):
    inlines = [ContactInline, ContractInline, WeChatBindingInline]
    change_list_template = "admin/erp/customer_change_list.html"


@admin.register(ErpConnection)
class ErpConnectionAdmin(admin.ModelAdmin):
    form = ErpConnectionForm
    list_display = ("name", "base_url", "username", "active", "updated_at")


@admin.register(Contract)
class ContractAdmin(admin.ModelAdmin):
    list_display = ("number", "title", "customer", "amount", "signed_on", "status", "last_synced_at")
    list_filter = ("status",)
    search_fields = ("number", "title", "customer__name", "=erp_id")
    list_select_related = ("customer",)
    readonly_fields = ("erp_id", "customer", "number", "title", "amount", "signed_on", "status", "last_synced_at")

    def has_add_permission(self, request):
        return False


@admin.register(SyncRun)
class SyncRunAdmin(admin.ModelAdmin):
    list_display = (
        "id",
        "started_at",
        "trigger",
        "full",
        "status",
        "created",
        "updated",
        "unchanged",
        "errors",
        "seconds",
    )
    list_filter = ("status", "trigger")
    readonly_fields = [field.name for field in SyncRun._meta.fields]
    change_list_template = "admin/erp/syncrun/change_list.html"

    @admin.display(description=_("耗时(秒)"))
    def seconds(self, run):
        return run.stats.get("seconds")

    def has_add_permission(self, request):
        return False

    def has_change_permission(self, request, obj=None):
        return False

    def get_urls(self):
        sync_now = self.admin_site.admin_view(require_POST(self.sync_now))
        return [path("sync-now/", sync_now, name="erp_syncrun_sync_now"), *super().get_urls()]

    def sync_now(self, request):
        if not request.user.has_perm("erp.view_syncrun"):
            messages.error(request, _("没有权限"))
        elif services.sync_running():
            messages.warning(request, _("ERP 同步正在进行中，请稍后查看同步记录"))
        else:
            full = request.POST.get("full") == "1"
            tasks.enqueue_sync(full=full, trigger=SyncRun.Trigger.ADMIN)
            messages.success(request, _("已开始从 ERP 同步，完成后刷新本页查看结果"))
        return HttpResponseRedirect(reverse("admin:erp_syncrun_changelist"))
