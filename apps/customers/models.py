"""ERP customers (the ERP owns their company/contact fields) and the WeChat contacts bound to them."""

from django.conf import settings
from django.db import models
from django.utils import timezone
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
        help_text=_("本地编码，如 K3208；员工填写的微信备注以它开头即可绑定，昵称中出现只作为待确认建议"),
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
    """A WeChat contact seen by an agent (chat + sender, with its remark) and the customer it is, or may be.

    Only status BOUND is trusted (apps.customers.selectors): it is set by a person (a supervisor binding
    by hand or confirming a suggestion) or from the staff-written remark. A match found in a name the
    customer can edit (nickname, chat name) is only ever SUGGESTED."""

    class Status(models.TextChoices):
        BOUND = "bound", _("已绑定")
        SUGGESTED = "suggested", _("待确认")
        UNMATCHED = "unmatched", _("未匹配")
        REJECTED = "rejected", _("已拒绝")

    class Method(models.TextChoices):
        """What matched."""

        MANUAL = "manual", _("手动")
        CODE = "code", _("客户编码")
        PHONE = "phone", _("电话号码")
        NAME = "name", _("名称")
        NONE = "", _("无")

    class Source(models.TextChoices):
        """Where the match was found: staff-controlled (trusted) or customer-editable (a suggestion)."""

        STAFF = "staff", _("人工指定")
        REMARK = "remark", _("员工备注")
        SENDER = "sender", _("私聊昵称")
        GROUP_MEMBER = "group_member", _("群成员昵称")
        CHAT_NAME = "chat_name", _("会话名称")
        NONE = "", _("无")

    agent_id = models.CharField(_("终端 ID"), max_length=64, db_index=True)
    chat_name = models.CharField(_("会话名称"), max_length=200)
    sender = models.CharField(_("发送人"), max_length=200, blank=True, help_text=_("留空表示整个会话（私聊）"))
    remark = models.CharField(
        _("微信备注"),
        max_length=200,
        blank=True,
        help_text=_("由员工填写，如 K3208-渝A-张三-VIP-微信；编码或电话唯一匹配时直接绑定"),
    )
    is_group = models.BooleanField(_("群聊成员"), default=False)
    customer = models.ForeignKey(
        Customer,
        on_delete=models.SET_NULL,
        null=True,
        blank=True,
        related_name="wechat_bindings",
        verbose_name=_("客户"),
        help_text=_("已绑定时为该联系人的客户；待确认时为建议的客户"),
    )
    status = models.CharField(_("状态"), max_length=16, choices=Status.choices, default=Status.UNMATCHED)
    method = models.CharField(_("匹配方式"), max_length=16, choices=Method.choices, blank=True)
    source = models.CharField(_("匹配来源"), max_length=16, choices=Source.choices, blank=True)
    matched_text = models.CharField(_("匹配内容"), max_length=200, blank=True)
    created_at = models.DateTimeField(_("创建时间"), auto_now_add=True)
    updated_at = models.DateTimeField(_("更新时间"), auto_now=True)

    class Meta:
        verbose_name = _("微信绑定")
        verbose_name_plural = _("微信绑定")
        constraints = [
            models.UniqueConstraint(fields=["agent_id", "chat_name", "sender"], name="uniq_wechat_binding"),
        ]
        indexes = [models.Index(fields=["status", "-updated_at"], name="wechatbinding_status_idx")]
        ordering = ["-updated_at"]
        permissions = [("confirm_wechatbinding", _("可以确认或拒绝绑定建议"))]

    def __str__(self) -> str:
        who = f"{self.chat_name}/{self.sender}" if self.sender else self.chat_name
        return f"{who} → {self.customer or '-'}"


class BindingChange(models.Model):
    """One change of a WeChat binding: who (a staff user, or the system and why), when, from what to what."""

    class Action(models.TextChoices):
        SUGGEST = "suggest", _("自动建议")
        CONFIRM = "confirm", _("确认建议")
        REJECT = "reject", _("拒绝建议")
        BIND = "bind", _("人工绑定")
        UNBIND = "unbind", _("解除绑定")
        REMARK = "remark", _("按员工备注绑定")
        MIGRATE = "migrate", _("系统升级：自动绑定改为建议")

    binding = models.ForeignKey(
        WeChatBinding, on_delete=models.SET_NULL, null=True, related_name="changes", verbose_name=_("绑定")
    )
    # Copies of the contact, so the record keeps its meaning if the binding row goes.
    agent_id = models.CharField(_("终端 ID"), max_length=64)
    chat_name = models.CharField(_("会话名称"), max_length=200)
    sender = models.CharField(_("发送人"), max_length=200, blank=True)
    action = models.CharField(_("操作"), max_length=16, choices=Action.choices)
    actor = models.ForeignKey(
        settings.AUTH_USER_MODEL,
        on_delete=models.SET_NULL,
        null=True,
        blank=True,
        related_name="+",
        verbose_name=_("操作人"),
    )
    actor_name = models.CharField(_("操作人名称"), max_length=150, help_text=_("员工用户名，或 system:原因"))
    from_status = models.CharField(_("原状态"), max_length=16, choices=WeChatBinding.Status.choices, blank=True)
    to_status = models.CharField(_("新状态"), max_length=16, choices=WeChatBinding.Status.choices)
    from_customer = models.ForeignKey(
        Customer, on_delete=models.SET_NULL, null=True, blank=True, related_name="+", verbose_name=_("原客户")
    )
    to_customer = models.ForeignKey(
        Customer, on_delete=models.SET_NULL, null=True, blank=True, related_name="+", verbose_name=_("新客户")
    )
    method = models.CharField(_("匹配方式"), max_length=16, choices=WeChatBinding.Method.choices, blank=True)
    source = models.CharField(_("匹配来源"), max_length=16, choices=WeChatBinding.Source.choices, blank=True)
    at = models.DateTimeField(_("时间"), default=timezone.now, db_index=True)

    class Meta:
        verbose_name = _("绑定变更记录")
        verbose_name_plural = _("绑定变更记录")
        ordering = ["-at", "-id"]

    def __str__(self) -> str:
        return f"{self.actor_name} {self.get_action_display()} {self.chat_name}/{self.sender}"
