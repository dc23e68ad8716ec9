from datetime import date

from django.contrib import admin
from django.template.response import TemplateResponse
from django.urls import path
from django.utils import timezone

from apps.core.permissions import admin_page
from apps.costs import services
from apps.costs.models import Budget, BudgetAlert, ModelPrice, UsageRecord
from apps.costs.selectors import daily_report


@admin.register(ModelPrice)
class ModelPriceAdmin(admin.ModelAdmin):
    list_display = ("provider", "model", "input_per_1k", "output_per_1k", "effective_date", "note")
    list_filter = ("provider",)
    search_fields = ("provider", "model")

    def save_model(self, request, obj, form, change):
        services.save_price(obj)

    def delete_model(self, request, obj):
        services.delete_prices(ModelPrice.objects.filter(pk=obj.pk))

    def delete_queryset(self, request, queryset):
        services.delete_prices(queryset)


@admin.register(Budget)
class BudgetAdmin(admin.ModelAdmin):
    list_display = ("name", "scope", "target", "period", "limit", "thresholds", "policy", "enabled")
    list_filter = ("scope", "period", "policy", "enabled")

    def save_model(self, request, obj, form, change):
        services.save_budget(obj)

    def delete_model(self, request, obj):
        services.delete_budgets(Budget.objects.filter(pk=obj.pk))

    def delete_queryset(self, request, queryset):
        services.delete_budgets(queryset)


@admin.register(BudgetAlert)
class BudgetAlertAdmin(admin.ModelAdmin):
    list_display = ("created_at", "budget", "period_key", "threshold", "used", "limit", "policy")
    list_filter = ("threshold", "policy")
    readonly_fields = [f.name for f in BudgetAlert._meta.fields]

    def has_add_permission(self, request):
        return False


@admin.register(UsageRecord)
class UsageRecordAdmin(admin.ModelAdmin):
    list_display = (
        "created_at",
        "provider",
        "model",
        "kind",
        "route",
        "agent",
        "customer",
        "input_tokens",
        "output_tokens",
        "cost",
        "price_known",
        "latency_ms",
    )
    list_filter = ("provider", "kind", "price_known", "day")
    search_fields = ("call_id", "agent", "customer", "model")
    date_hierarchy = "created_at"
    readonly_fields = [f.name for f in UsageRecord._meta.fields]
    change_list_template = "admin/costs/usagerecord/change_list.html"

    def has_add_permission(self, request):
        return False

    def get_urls(self):
        return [
            path("report/", admin_page(self, self.report_view), name="costs_report"),
            *super().get_urls(),
        ]

    def report_view(self, request):
        try:
            day = date.fromisoformat(request.GET.get("date", "")) if request.GET.get("date") else timezone.localdate()
        except ValueError:
            day = timezone.localdate()
        context = {
            **self.admin_site.each_context(request),
            "title": f"LLM 成本日报 {day.isoformat()}",
            "report": daily_report(day),
            "day": day,
            "opts": self.model._meta,
        }
        return TemplateResponse(request, "admin/costs/report.html", context)
