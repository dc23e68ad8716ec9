from django import forms
from django.contrib import admin
from django.db import models

from apps.llm_gateway import services
from apps.llm_gateway.models import Provider, Route, RouteEntry


@admin.register(Provider)
class ProviderAdmin(admin.ModelAdmin):
    list_display = ("name", "kind", "api_base", "default_model", "has_key", "enabled", "updated_at")
    list_filter = ("kind", "enabled")
    formfield_overrides = {models.URLField: {"assume_scheme": "https"}}

    @admin.display(boolean=True, description="Key")
    def has_key(self, obj: Provider) -> bool:
        return bool(obj.api_key)

    def get_form(self, request, obj=None, **kwargs):
        form = super().get_form(request, obj, **kwargs)
        # Never echo a stored key back to the browser; a blank submission keeps the stored one.
        form.base_fields["api_key"].widget = forms.PasswordInput(render_value=False)
        form.base_fields["api_key"].required = False
        return form

    def save_model(self, request, obj, form, change):
        services.save_provider(obj, keep_stored_key=change)

    def delete_model(self, request, obj):
        services.delete_providers(Provider.objects.filter(pk=obj.pk))

    def delete_queryset(self, request, queryset):
        services.delete_providers(queryset)


class RouteEntryInline(admin.TabularInline):
    model = RouteEntry
    extra = 1


@admin.register(Route)
class RouteAdmin(admin.ModelAdmin):
    list_display = ("name", "description", "chain", "updated_at")
    inlines = [RouteEntryInline]

    @admin.display(description="链路")
    def chain(self, obj: Route) -> str:
        return " → ".join(f"{e.provider.name}/{e.model or e.provider.default_model}" for e in obj.entries.all())

    def save_model(self, request, obj, form, change):
        services.save_route(obj)

    def save_formset(self, request, form, formset, change):
        saved = formset.save(commit=False)
        services.save_route_entries(saved, formset.deleted_objects)

    def delete_model(self, request, obj):
        services.delete_routes(Route.objects.filter(pk=obj.pk))

    def delete_queryset(self, request, queryset):
        services.delete_routes(queryset)
