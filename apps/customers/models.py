"""ERP customers (the ERP owns their company/contact fields) and the WeChat contacts bound to them."""

from django.db import models
from django.utils.translation import gettext_lazy as _

SOURCE_CHOICES = [
    ("171", _("网站注册")),
    ("172", _("朋友介绍")),
    ("173", _("陌生开发")),
    ("174", _("广告宣传")),
    ("977", _("VIP")),
]
VALUE_CHOICES = [("175", _("很高")), ("289", _("较高")), ("176", _("一般")), ("177", _("较低")), ("290", _("很低"))]


class Customer(models.Model):
    # (model field, ERP column) for the 13 fields of an ERP customer row, in the ERP's order. The ERP
    # wins for these (and source / value rating); local fields (k_code, tags, intent_score, bindings)
    # are never touched by a sync.
    ERP_COLUMNS = (
        ("erp_id", "ord"),
        ("name", "name"),
        ("salesperson", "catename"),
        ("category", "sortname"),
        ("status", "sort1name"),
        ("contact_name", "personname"),
        ("contact_title", "personjob"),
        ("phone", "phone"),
        ("mobile", "mobile"),
        ("latest_followup", "telintro"),
        ("erp_contact_id", "person"),
        ("erp_url", "url"),
        ("contact_url", "personurl"),
    )

    erp_id = models.BigIntegerField(_("ERP 编号"), unique=True)
    name = models.CharField(_("客户名称"), max_length=200)
    salesperson = models.CharField(_("销售人员"), max_length=64, blank=True)
    category = models.CharField(_("客户分类"), max_length=32, blank=True)
    status = models.CharField(_("客户状态"), max_length=32, blank=True)
    contact_name = models.CharField(_("联系人"), max_length=64, blank=True)
    contact_title = models.CharField(_("职务"), max_length=64, blank=True)
    phone = models.CharField(_("电话"), max_length=64, blank=True)
    mobile = models.CharField(_("手机"), max_length=64, blank=True)
    latest_followup = models.TextField(_("最新跟进"), blank=True)
    erp_contact_id = models.BigIntegerField(_("联系人编号"), null=True, blank=True)
    erp_url = models.CharField(_("客户链接"), max_length=500, blank=True)
    contact_url = models.CharField(_("联系人链接"), max_length=500, blank=True)
    source = models.CharField(_("客户来源"), max_length=8, choices=SOURCE_CHOICES, blank=True)
    value_rating = models.CharField(_("价值评估"), max_length=8, choices=VALUE_CHOICES, blank=True)
    in_erp = models.BooleanField(_("ERP 中存在"), default=True, help_text=_("最近一次同步时 ERP 仍有此客户"))
    last_synced_at = models.DateTimeField(_("最近同步"), null=True, blank=True)
    # Local fields: a sync never overwrites them.
    k_code = models.CharField(
        _("客户编码"),
        max_length=32,
        blank=True,
        help_text=_("本地编码，如 K3208；微信备注以它开头即可自动绑定"),
    )
    tags = models.JSONField(_("标签"), default=list, blank=True)
    intent_score = models.PositiveSmallIntegerField(_("意向分"), default=0, help_text=_("0–100，本地维护"))
    created_at = models.DateTimeField(_("创建时间"), auto_now_add=True)
    updated_at = models.DateTimeField(_("更新时间"), auto_now=True)

    class Meta:
        verbose_name = _("客户")
        verbose_name_plural = _("客户")
        ordering = ["erp_id"]
        permissions = [("export_customer", _("可以导出客户"))]
        # Plain b-tree indexes (db_index=True would add a second `_like` index per column on
        # PostgreSQL, which only prefix LIKE uses; admin search is icontains) — half the index
        # upkeep on a bulk sync.
        indexes = [
            models.Index(fields=[name], name=f"customer_{name}_idx")
            for name in ("name", "salesperson", "category", "status", "phone", "mobile", "k_code")
        ]

    def __str__(self) -> str:
        return self.name


class Contact(models.Model):
    erp_id = models.BigIntegerField(_("ERP 编号"), unique=True)
    customer = models.ForeignKey(Customer, on_delete=models.CASCADE, related_name="contacts", verbose_name=_("客户"))
    name = models.CharField(_("姓名"), max_length=64)
    sex = models.CharField(_("性别"), max_length=8, blank=True)
    title = models.CharField(_("职务"), max_length=64, blank=True)
    phone = models.CharField(_("电话"), max_length=64, blank=True)
    mobile = models.CharField(_("手机"), max_length=64, blank=True)
    email = models.CharField(_("邮箱"), max_length=200, blank=True)
    last_synced_at = models.DateTimeField(_("最近同步"), null=True, blank=True)

    class Meta:
        verbose_name = _("联系人")
        verbose_name_plural = _("联系人")
        ordering = ["erp_id"]
        indexes = [
            models.Index(fields=["name"], name="contact_name_idx"),
            models.Index(fields=["mobile"], name="contact_mobile_idx"),
        ]

    def __str__(self) -> str:
        return self.name


class WeChatBinding(models.Model):
    """A WeChat contact seen by an agent (chat + sender, with its remark) bound to a customer."""

    class Status(models.TextChoices):
        BOUND = "bound", _("已绑定")
        SUGGESTED = "suggested", _("待确认")
        UNMATCHED = "unmatched", _("未匹配")
        REJECTED = "rejected", _("已拒绝")

    class Method(models.TextChoices):
        MANUAL = "manual", _("手动")
        CODE = "code", _("备注编码")
        PHONE = "phone", _("电话号码")
        NAME = "name", _("名称")
        NONE = "", _("无")

    agent_id = models.CharField(_("终端 ID"), max_length=64, db_index=True)
    chat_name = models.CharField(_("会话名称"), max_length=200)
    sender = models.CharField(_("发送人"), max_length=200, blank=True, help_text=_("留空表示整个会话（私聊）"))
    remark = models.CharField(_("微信备注"), max_length=200, blank=True, help_text=_("如 K3208-渝A-张三-VIP-微信"))
    customer = models.ForeignKey(
        Customer,
        on_delete=models.SET_NULL,
        null=True,
        blank=True,
        related_name="wechat_bindings",
        verbose_name=_("客户"),
    )
    status = models.CharField(_("状态"), max_length=16, choices=Status.choices, default=Status.UNMATCHED)
    method = models.CharField(_("匹配方式"), max_length=16, choices=Method.choices, blank=True)
    created_at = models.DateTimeField(_("创建时间"), auto_now_add=True)
    updated_at = models.DateTimeField(_("更新时间"), auto_now=True)

    class Meta:
        verbose_name = _("微信绑定")
        verbose_name_plural = _("微信绑定")
        constraints = [
            models.UniqueConstraint(fields=["agent_id", "chat_name", "sender"], name="uniq_wechat_binding"),
        ]
        ordering = ["-updated_at"]

    def __str__(self) -> str:
        who = f"{self.chat_name}/{self.sender}" if self.sender else self.chat_name
        return f"{who} → {self.customer or '-'}"
