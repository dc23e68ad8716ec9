import re

from django.core.exceptions import ValidationError
from django.db import models
from django.utils.translation import gettext_lazy as _

ANY = "any"


def split_list(text: str) -> list[str]:
    """One item per line, or separated by commas (，, 、) — for keywords, chat names, senders, tags."""
    return [item.strip() for item in re.split(r"[\n,，、]+", text or "") if item.strip()]


class Rule(models.Model):
    ACTIONS = [
        ("reply", _("固定回复")),
        ("ignore", _("忽略")),
        ("handoff", _("转人工")),
        ("route", _("路由到人格/引擎")),
        ("tag", _("打标签")),
    ]
    KEYWORD_MODES = [("any", _("任一")), ("all", _("全部"))]
    CHAT_TYPES = [(ANY, _("不限")), ("private", _("私聊")), ("group", _("群聊"))]
    AT_ME = [(ANY, _("不限")), ("yes", _("@了我")), ("no", _("没有@我"))]

    name = models.CharField(_("名称"), max_length=100)
    priority = models.IntegerField(_("优先级"), default=100, help_text=_("数字小的先执行"))
    enabled = models.BooleanField(_("启用"), default=True)
    stop = models.BooleanField(_("到此为止"), default=True, help_text=_("命中后不再执行后面的规则"))
    # conditions (all given ones must hold)
    keywords = models.TextField(_("关键词"), blank=True, help_text=_("每行一个或用逗号分隔；不区分大小写"))
    keyword_mode = models.CharField(_("关键词匹配"), max_length=3, choices=KEYWORD_MODES, default="any")
    regex = models.CharField(_("正则表达式"), max_length=500, blank=True)
    chat_names = models.TextField(_("会话名"), blank=True, help_text=_("每行一个，支持通配符 *，空为不限"))
    chat_type = models.CharField(_("会话类型"), max_length=10, choices=CHAT_TYPES, default=ANY)
    senders = models.TextField(_("发送者"), blank=True, help_text=_("每行一个，支持通配符 *，空为不限"))
    at_me = models.CharField(_("@我"), max_length=3, choices=AT_ME, default=ANY)
    time_start = models.TimeField(
        _("开始时间"), null=True, blank=True, help_text=_("北京时间；可跨午夜，如 22:00–08:00")
    )
    time_end = models.TimeField(_("结束时间"), null=True, blank=True)
    weekdays = models.CharField(_("星期"), max_length=7, blank=True, help_text=_("1=周一 … 7=周日，如 12345；空为每天"))
    max_length = models.PositiveIntegerField(_("消息最多字数"), null=True, blank=True)
    # action
    action = models.CharField(_("动作"), max_length=10, choices=ACTIONS, default="reply")
    reply_templates = models.TextField(
        _("回复模板"),
        blank=True,
        help_text=_("每行一个，按消息确定性地选一个；变量：{sender} {chat_name} {time} {date} {weekday} {keyword}"),
    )
    handoff_reason = models.CharField(_("转人工原因"), max_length=200, blank=True)
    personality_id = models.IntegerField(_("人格 ID"), null=True, blank=True)
    engine = models.CharField(_("引擎"), max_length=50, blank=True)
    tags = models.CharField(_("标签"), max_length=200, blank=True, help_text=_("逗号分隔"))
    note = models.CharField(_("备注"), max_length=200, blank=True)
    updated_at = models.DateTimeField(_("更新时间"), auto_now=True)

    class Meta:
        verbose_name = _("规则")
        verbose_name_plural = _("规则")
        ordering = ["priority", "id"]

    def __str__(self):
        return self.name

    def clean(self):
        if self.regex:
            try:
                re.compile(self.regex)
            except re.error as exc:
                raise ValidationError({"regex": _("正则表达式无效：%s") % exc}) from exc
        if bool(self.time_start) != bool(self.time_end):
            raise ValidationError(_("开始时间和结束时间要同时填写"))
        if self.weekdays and not re.fullmatch(r"[1-7]+", self.weekdays):
            raise ValidationError({"weekdays": _("只能包含数字 1–7")})
        if self.action == "reply" and not split_list_lines(self.reply_templates):
            raise ValidationError({"reply_templates": _("固定回复需要至少一个模板")})
        if self.action == "route" and not (self.personality_id or self.engine):
            raise ValidationError(_("路由需要人格 ID 或引擎"))


def split_list_lines(text: str) -> list[str]:
    return [line.strip() for line in (text or "").splitlines() if line.strip()]


class RateLimit(models.Model):
    SCOPES = [("group", _("每个群")), ("user", _("每个用户"))]
    APPLIES = [(ANY, _("所有会话")), ("group", _("仅群聊")), ("private", _("仅私聊"))]
    ACTIONS = [("ignore", _("忽略")), ("handoff", _("转人工")), ("reply", _("回复提示"))]

    name = models.CharField(_("名称"), max_length=100)
    scope = models.CharField(_("范围"), max_length=10, choices=SCOPES)
    applies_to = models.CharField(_("适用会话"), max_length=10, choices=APPLIES, default="group")
    limit = models.PositiveIntegerField(_("次数上限"))
    window_seconds = models.PositiveIntegerField(_("时间窗(秒)"))
    action = models.CharField(_("超限动作"), max_length=10, choices=ACTIONS, default="ignore")
    reply_text = models.CharField(_("超限回复"), max_length=200, blank=True)
    enabled = models.BooleanField(_("启用"), default=True)

    class Meta:
        verbose_name = _("限流")
        verbose_name_plural = _("限流")
        ordering = ["id"]

    def __str__(self):
        return f"{self.name}（{self.limit} 次 / {self.window_seconds} 秒）"


class AdminNickname(models.Model):
    nickname = models.CharField(
        _("管理员昵称"),
        max_length=100,
        unique=True,
        help_text=_("这些人在微信里发 #mute / #unmute / #status 可控制机器人"),
    )
    enabled = models.BooleanField(_("启用"), default=True)

    class Meta:
        verbose_name = _("管理员昵称")
        verbose_name_plural = _("管理员昵称")

    def __str__(self):
        return self.nickname


class ChatMute(models.Model):
    agent_id = models.CharField(_("客户端"), max_length=100)
    chat_name = models.CharField(_("会话名"), max_length=200)
    muted_by = models.CharField(_("操作人"), max_length=100, blank=True)
    muted_at = models.DateTimeField(_("静音时间"), auto_now_add=True)
    until = models.DateTimeField(_("静音至"), null=True, blank=True)

    class Meta:
        verbose_name = _("静音会话")
        verbose_name_plural = _("静音会话")
        constraints = [models.UniqueConstraint(fields=["agent_id", "chat_name"], name="rules_chatmute_unique_chat")]

    def __str__(self):
        return self.chat_name
