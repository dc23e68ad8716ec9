import json

from django import forms
from django.contrib import admin, messages
from django.shortcuts import redirect
from django.template.response import TemplateResponse
from django.utils.translation import gettext_lazy as _

from apps.core import aio
from apps.engines import facts as fact_rules
from apps.engines import manager, services
from apps.engines.models import ContactFact, ConversationSummary, EngineName, EngineSetting, EngineSwitch, Personality


class PersonalityForm(forms.ModelForm):
    class Meta:
        model = Personality
        fields = (
            "name",
            "active",
            "is_default",
            "system_prompt",
            "tone",
            "few_shot_examples",
            "route",
            "temperature",
            "max_reply_length",
        )

    def clean_few_shot_examples(self):
        examples = self.cleaned_data["few_shot_examples"] or []
        if not isinstance(examples, list) or not all(
            isinstance(item, dict) and str(item.get("user", "")).strip() and str(item.get("assistant", "")).strip()
            for item in examples
        ):
            raise forms.ValidationError(_('示例对话须为列表，每项形如 {"user": "客户的话", "assistant": "示范回复"}'))
        return examples

    def clean_temperature(self):
        temperature = self.cleaned_data["temperature"]
        if not 0 <= temperature <= 2:
            raise forms.ValidationError(_("温度须在 0 到 2 之间"))
        return temperature


@admin.register(Personality)
class PersonalityAdmin(admin.ModelAdmin):
    form = PersonalityForm
    list_display = ("name", "tone", "route", "max_reply_length", "temperature", "engine", "is_default", "active")
    list_filter = ("active", "is_default", "route")
    search_fields = ("name", "system_prompt")
    # The engine is switched on the engine manager page, which checks its health first.
    readonly_fields = ("engine", "created_at", "updated_at")
    fieldsets = (
        (None, {"fields": ("name", "active", "is_default", "engine")}),
        (_("提示词"), {"fields": ("system_prompt", "tone", "few_shot_examples")}),
        (_("生成参数"), {"fields": ("route", "temperature", "max_reply_length")}),
        (_("时间"), {"fields": ("created_at", "updated_at")}),
    )

    def save_model(self, request, obj, form, change):
        services.save_personality(obj)

    def delete_model(self, request, obj):
        services.delete_personality(obj)

    def delete_queryset(self, request, queryset):
        for personality in queryset:
            services.delete_personality(personality)


class SwitchForm(forms.Form):
    SCOPES = (("global", _("全局")), ("personality", _("指定人设")), ("chat", _("指定会话")))

    scope = forms.ChoiceField(label=_("范围"), choices=SCOPES)
    engine = forms.ChoiceField(label=_("引擎"), choices=(), required=False)
    personality = forms.ModelChoiceField(label=_("人设"), queryset=Personality.objects.all(), required=False)
    conversation_id = forms.IntegerField(label=_("会话 ID"), required=False, min_value=1)

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        labels = dict(EngineName.choices)
        self.fields["engine"].choices = [("", _("（清除覆盖，跟随上级）"))] + [
            (name, labels.get(name, name)) for name in manager.engine_names()
        ]

    def clean(self):
        data = super().clean()
        scope = data.get("scope")
        if scope == "personality" and not data.get("personality"):
            self.add_error("personality", _("请选择人设"))
        if scope == "chat" and not data.get("conversation_id"):
            self.add_error("conversation_id", _("请填写会话 ID"))
        if scope == "global" and not data.get("engine"):
            self.add_error("engine", _("全局引擎不能为空"))
        return data


@admin.register(EngineSetting)
class EngineManagerAdmin(admin.ModelAdmin):
    """The engine manager page: every engine with its info and health, and the switch form."""

    def has_add_permission(self, request):
        return False

    def has_delete_permission(self, request, obj=None):
        return False

    def changelist_view(self, request, extra_context=None):
        if not self.has_change_permission(request):
            return redirect("admin:index")
        form = SwitchForm(request.POST or None)
        if request.method == "POST" and form.is_valid():
            data = form.cleaned_data
            personality = data.get("personality")
            try:
                services.switch_engine(
                    data["engine"],
                    personality_id=personality.pk if data["scope"] == "personality" else None,
                    conversation_id=data["conversation_id"] if data["scope"] == "chat" else None,
                    user=request.user,
                )
            except manager.SwitchRefused as exc:
                self.message_user(request, str(exc), messages.ERROR)
            else:
                self.message_user(request, _("已切换，所有进程将在 1 秒内生效。"), messages.SUCCESS)
                return redirect(request.path)
        engines = aio.run(manager.engines_overview(), timeout=60)
        for engine in engines:
            engine["info_json"] = json.dumps(engine["info"], ensure_ascii=False, indent=2, default=str)
        context = {
            **self.admin_site.each_context(request),
            "title": _("引擎管理"),
            "opts": self.model._meta,
            "engines": engines,
            "form": form,
            "setting": EngineSetting.objects.filter(pk=EngineSetting.SINGLETON_ID).first(),
            "personalities": Personality.objects.all(),
            "recent_switches": EngineSwitch.objects.select_related("user")[:20],
            **(extra_context or {}),
        }
        return TemplateResponse(request, "admin/engines/engine_manager.html", context)


@admin.register(EngineSwitch)
class EngineSwitchAdmin(admin.ModelAdmin):
    list_display = ("created_at", "scope", "target", "engine", "accepted", "user", "detail")
    list_filter = ("scope", "accepted", "engine")

    def has_add_permission(self, request):
        return False

    def has_change_permission(self, request, obj=None):
        return False


@admin.register(ConversationSummary)
class ConversationSummaryAdmin(admin.ModelAdmin):
    list_display = ("conversation_id", "covered_until", "updated_at")
    search_fields = ("summary",)
    readonly_fields = ("updated_at",)


class ContactFactForm(forms.ModelForm):
    class Meta:
        model = ContactFact
        fields = ("agent_id", "chat_name", "contact", "fact", "conversation_id")

    def clean_fact(self):
        fact = self.cleaned_data["fact"]
        if fact_rules.refused(fact, "admin"):
            raise forms.ValidationError(_("这条内容像是给助手的指令（改变身份、权限或规则），不能作为联系人的事实保存"))
        return fact


@admin.register(ContactFact)
class ContactFactAdmin(admin.ModelAdmin):
    form = ContactFactForm
    list_display = ("contact", "chat_name", "agent_id", "fact", "source", "created_at")
    list_filter = ("source",)
    search_fields = ("contact", "chat_name", "fact")

    def save_model(self, request, obj, form, change):
        if not change:
            obj.source = ContactFact.Source.SUPERVISOR
        services.save_contact_fact(obj)
