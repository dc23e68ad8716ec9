from django.contrib import admin

from apps.llm_gateway.models import Provider, Route, RouteEntry


@admin.register(Provider)
class ProviderAdmin(admin.ModelAdmin):
    list_display = ("name", "kind", "api_base", "default_model", "has_key", "enabled", "updated_at")
    list_filter = ("kind", "enabled")

    @admin.display(boolean=True, description="Key")
    def has_key(self, obj: Provider) -> bool:
        return bool(obj.api_key)

    def get_form(self, request, obj=None, **kwargs):
        from django import forms

        form = super().get_form(request, obj, **kwargs)
        # Never echo a stored key back to the browser; a blank submission keeps the stored one.
        form.base_fields["api_key"].widget = forms.PasswordInput(render_value=False)
        form.base_fields["api_key"].required = False
        return form

    def save_model(self, request, obj, form, change):
        if change and not form.cleaned_data.get("api_key"):
            obj.api_key = Provider.objects.get(pk=obj.pk).api_key
        super().save_model(request, obj, form, change)


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
