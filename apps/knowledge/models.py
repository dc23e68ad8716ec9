import hashlib

import numpy as np
from django.db import models
from django.utils.translation import gettext_lazy as _


class Document(models.Model):
    """A source of entries: an imported file, the demo FAQ, or the learning loop."""

    KINDS = [
        ("txt", "TXT"),
        ("md", "Markdown"),
        ("csv", "CSV"),
        ("faq", _("FAQ")),
        ("learned", _("学习")),
        ("manual", _("手工")),
    ]

    title = models.CharField(_("标题"), max_length=200)
    version = models.CharField(_("版本"), max_length=50, blank=True)
    kind = models.CharField(_("类型"), max_length=10, choices=KINDS, default="manual")
    source_name = models.CharField(_("文件名"), max_length=255, blank=True)
    chunk_size = models.PositiveIntegerField(_("分块大小(字)"), default=400)
    chunk_overlap = models.PositiveIntegerField(_("分块重叠(字)"), default=80)
    created_at = models.DateTimeField(_("创建时间"), auto_now_add=True)

    class Meta:
        verbose_name = _("文档")
        verbose_name_plural = _("文档")
        ordering = ["-created_at"]

    def __str__(self):
        return f"{self.title} {self.version}".strip()


class Entry(models.Model):
    """One retrievable unit: a question (or chunk title) and its answer (or chunk text)."""

    question = models.CharField(_("问题/标题"), max_length=500)
    answer = models.TextField(_("答案/内容"))
    document = models.ForeignKey(
        Document, verbose_name=_("来源文档"), null=True, blank=True, on_delete=models.CASCADE, related_name="entries"
    )
    version = models.CharField(_("版本"), max_length=50, blank=True, help_text=_("空则用文档的版本"))
    section = models.CharField(_("章节"), max_length=200, blank=True)
    tags = models.JSONField(_("标签"), default=list, blank=True)
    enabled = models.BooleanField(_("启用"), default=True)
    embedding = models.BinaryField(_("向量"), null=True, blank=True, editable=False)  # float32 bytes
    embedding_model = models.CharField(_("向量模型"), max_length=100, blank=True, editable=False)
    content_hash = models.CharField(max_length=64, blank=True, editable=False)
    created_at = models.DateTimeField(_("创建时间"), auto_now_add=True)
    updated_at = models.DateTimeField(_("更新时间"), auto_now=True)

    class Meta:
        verbose_name = _("知识条目")
        verbose_name_plural = _("知识条目")
        ordering = ["id"]
        indexes = [models.Index(fields=["enabled", "embedding_model"])]

    def __str__(self):
        return self.question[:60]

    def embedding_text(self) -> str:
        return f"{self.question}\n{self.answer}"

    def compute_hash(self) -> str:
        return hashlib.sha256(self.embedding_text().encode()).hexdigest()

    def vector(self) -> np.ndarray | None:
        return np.frombuffer(bytes(self.embedding), dtype=np.float32) if self.embedding else None

    @property
    def effective_version(self) -> str:
        return self.version or (self.document.version if self.document_id else "")


class Synonym(models.Model):
    terms = models.CharField(_("同义词组"), max_length=500, help_text=_("第一个词为标准词，例如：质保 = 保修, 保质期"))
    enabled = models.BooleanField(_("启用"), default=True)

    class Meta:
        verbose_name = _("同义词")
        verbose_name_plural = _("同义词")
        ordering = ["id"]

    def __str__(self):
        return self.terms

    def group(self) -> list[str]:
        from .text import parse_synonym_line

        return parse_synonym_line(self.terms)


class CustomWord(models.Model):
    word = models.CharField(
        _("自定义词"), max_length=100, unique=True, help_text=_("分词时保持完整并加权，例如 E01、7kW、OCPP")
    )
    enabled = models.BooleanField(_("启用"), default=True)

    class Meta:
        verbose_name = _("自定义词")
        verbose_name_plural = _("自定义词")
        ordering = ["word"]

    def __str__(self):
        return self.word


class Candidate(models.Model):
    """A reply worth keeping, waiting for a supervisor (learning loop)."""

    STATUSES = [("pending", _("待审核")), ("approved", _("已采纳")), ("rejected", _("已拒绝"))]

    question = models.TextField(_("问题"))
    answer = models.TextField(_("答案"))
    source_reply_id = models.CharField(_("来源回复"), max_length=64, blank=True, db_index=True)
    status = models.CharField(_("状态"), max_length=10, choices=STATUSES, default="pending", db_index=True)
    entry = models.ForeignKey(Entry, verbose_name=_("生成的条目"), null=True, blank=True, on_delete=models.SET_NULL)
    created_at = models.DateTimeField(_("创建时间"), auto_now_add=True)
    reviewed_at = models.DateTimeField(_("审核时间"), null=True, blank=True)
    reviewed_by = models.CharField(_("审核人"), max_length=150, blank=True)

    class Meta:
        verbose_name = _("知识候选")
        verbose_name_plural = _("知识候选（待审核）")
        ordering = ["-created_at"]
        constraints = [
            models.UniqueConstraint(
                fields=["source_reply_id"],
                condition=~models.Q(source_reply_id=""),
                name="knowledge_candidate_unique_reply",
            )
        ]

    def __str__(self):
        return self.question[:60]


class Gap(models.Model):
    """A question the knowledge base could not answer well (keyword fallback, handed to a human)."""

    question = models.TextField(_("问题"))
    question_hash = models.CharField(max_length=64, unique=True)
    reason = models.CharField(_("原因"), max_length=200)
    count = models.PositiveIntegerField(_("次数"), default=1)
    first_seen = models.DateTimeField(_("首次"), auto_now_add=True)
    last_seen = models.DateTimeField(_("最近"), auto_now=True)
    resolved = models.BooleanField(_("已处理"), default=False)

    class Meta:
        verbose_name = _("知识缺口")
        verbose_name_plural = _("知识缺口")
        ordering = ["resolved", "-count", "-last_seen"]

    def __str__(self):
        return self.question[:60]
