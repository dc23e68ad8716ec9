from django import forms
from django.conf import settings
from django.contrib import admin, messages
from django.template.response import TemplateResponse
from django.urls import path, reverse
from django.utils.html import format_html
from django.utils.translation import gettext_lazy as _

from apps.core import aio
from apps.core.permissions import admin_page

from . import services
from .documents import parse_document
from .models import Candidate, CustomWord, Document, Entry, Gap, Synonym


class TryForm(forms.Form):
    query = forms.CharField(
        label=_("问题"), max_length=500, widget=forms.TextInput(attrs={"size": 60, "autofocus": True})
    )
    k = forms.IntegerField(label=_("返回条数"), min_value=1, max_value=20, initial=5)
    mode = forms.ChoiceField(
        label=_("检索方式"),
        choices=[("hybrid", _("混合（向量+关键词）")), ("keyword", _("仅关键词"))],
        initial="hybrid",
    )


@admin.register(Entry)
class EntryAdmin(admin.ModelAdmin):
    list_display = ("id", "question", "document", "section", "enabled", "has_vector", "updated_at")
    list_filter = ("enabled", "document", "embedding_model")
    search_fields = ("question", "answer", "section")
    list_select_related = ("document",)
    readonly_fields = ("embedding_model", "created_at", "updated_at")
    actions = ["enable", "disable", "reembed"]
    change_list_template = "admin/knowledge/entry/change_list.html"

    @admin.display(boolean=True, description=_("已向量化"))
    def has_vector(self, obj):
        return bool(obj.embedding_model)

    def save_model(self, request, obj, form, change):
        services.save_entry(obj)

    def delete_model(self, request, obj):
        services.delete_entries(obj)

    def delete_queryset(self, request, queryset):
        services.delete_entries(queryset)

    @admin.action(description=_("启用所选条目"))
    def enable(self, request, queryset):
        services.set_entries_enabled(queryset, True)

    @admin.action(description=_("停用所选条目"))
    def disable(self, request, queryset):
        services.set_entries_enabled(queryset, False)

    @admin.action(description=_("重新生成向量"))
    def reembed(self, request, queryset):
        count = services.reembed_entries(queryset)
        self.message_user(request, _("已排队重新生成 %d 条向量") % count)

    def get_urls(self):
        return [
            path("try/", admin_page(self, self.try_view), name="knowledge_entry_try"),
            *super().get_urls(),
        ]

    def try_view(self, request):
        form = TryForm(request.GET or None)
        result = None
        if form.is_valid():
            query, k, hybrid = form.cleaned_data["query"], form.cleaned_data["k"], form.cleaned_data["mode"] == "hybrid"
            result = aio.run(services.search(query, k=k, hybrid=hybrid), timeout=30)
        context = {
            **self.admin_site.each_context(request),
            "opts": self.model._meta,
            "form": form,
            "result": result,
            "title": _("知识库：试一试"),
            "offline_threshold": settings.KNOWLEDGE_OFFLINE_MIN_SCORE,
        }
        return TemplateResponse(request, "admin/knowledge/try.html", context)


class DocumentForm(forms.ModelForm):
    upload = forms.FileField(
        label=_("文件"),
        required=False,
        help_text=_("txt、md、csv（csv 需 question/answer 或 问题/答案 列）；重新上传会替换该文档的全部条目"),
    )

    class Meta:
        model = Document
        fields = ["title", "version", "chunk_size", "chunk_overlap", "upload"]

    def clean(self):
        data = super().clean()
        upload = data.get("upload")
        if upload is not None:
            try:
                parse_document(
                    upload.name, upload.read(), data.get("chunk_size") or 400, data.get("chunk_overlap") or 0
                )
            except ValueError as exc:
                raise forms.ValidationError(str(exc)) from exc
            upload.seek(0)
        elif not self.instance.pk:
            raise forms.ValidationError(_("请上传文件"))
        return data


@admin.register(Document)
class DocumentAdmin(admin.ModelAdmin):
    form = DocumentForm
    list_display = ("title", "version", "kind", "source_name", "entry_count", "created_at")
    search_fields = ("title", "source_name")
    list_filter = ("kind",)

    @admin.display(description=_("条目数"))
    def entry_count(self, obj):
        url = reverse("admin:knowledge_entry_changelist") + f"?document__id__exact={obj.pk}"
        return format_html('<a href="{}">{}</a>', url, obj.entries.count())

    def save_model(self, request, obj, form, change):
        upload = form.cleaned_data.get("upload")
        if upload is None:
            services.save_document(obj)
            return
        count = services.import_document(
            upload.name,
            upload.read(),
            version=obj.version,
            chunk_size=obj.chunk_size,
            chunk_overlap=obj.chunk_overlap,
            document=obj,
        )[1]
        self.message_user(request, _("已导入 %d 个分块，向量将在后台生成") % count, messages.SUCCESS)

    def delete_model(self, request, obj):
        services.delete_documents(obj)

    def delete_queryset(self, request, queryset):
        services.delete_documents(queryset)


class DictionaryAdmin(admin.ModelAdmin):
    """Synonyms and custom words change how every entry and question is tokenised."""

    def save_model(self, request, obj, form, change):
        services.save_dictionary_item(obj)

    def delete_model(self, request, obj):
        services.delete_dictionary_items(obj)

    def delete_queryset(self, request, queryset):
        services.delete_dictionary_items(queryset)


@admin.register(Synonym)
class SynonymAdmin(DictionaryAdmin):
    list_display = ("terms", "enabled")
    list_editable = ("enabled",)
    search_fields = ("terms",)


@admin.register(CustomWord)
class CustomWordAdmin(DictionaryAdmin):
    list_display = ("word", "enabled")
    list_editable = ("enabled",)
    search_fields = ("word",)


@admin.register(Candidate)
class CandidateAdmin(admin.ModelAdmin):
    list_display = ("question", "answer_short", "status", "source_reply_id", "created_at", "reviewed_by")
    list_filter = ("status",)
    search_fields = ("question", "answer")
    readonly_fields = ("source_reply_id", "status", "entry", "created_at", "reviewed_at", "reviewed_by")
    actions = ["approve", "reject"]

    @admin.display(description=_("答案"))
    def answer_short(self, obj):
        return obj.answer[:60]

    @admin.action(description=_("采纳为知识条目"))
    def approve(self, request, queryset):
        count = 0
        for candidate in queryset.filter(status="pending"):
            services.approve_candidate(candidate, reviewer=request.user.get_username())
            count += 1
        self.message_user(request, _("已采纳 %d 条") % count, messages.SUCCESS)

    @admin.action(description=_("拒绝"))
    def reject(self, request, queryset):
        for candidate in queryset.filter(status="pending"):
            services.reject_candidate(candidate, reviewer=request.user.get_username())


@admin.register(Gap)
class GapAdmin(admin.ModelAdmin):
    list_display = ("question", "reason", "count", "last_seen", "resolved")
    list_filter = ("resolved", "reason")
    search_fields = ("question",)
    readonly_fields = ("question", "question_hash", "reason", "count", "first_seen", "last_seen")
    actions = ["mark_resolved"]

    @admin.action(description=_("标记为已处理"))
    def mark_resolved(self, request, queryset):
        queryset.update(resolved=True)
