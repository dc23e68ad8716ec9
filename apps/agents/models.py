"""Registered Windows agents: credentials (hashed), latest heartbeat, presence."""

import secrets
from datetime import timedelta

from django.db import models
from django.utils import timezone
from django.utils.translation import gettext_lazy as _


def new_agent_id() -> str:
    return f"agt_{secrets.token_hex(6)}"


class Agent(models.Model):
    class Presence(models.TextChoices):
        ONLINE = "online", _("在线")
        DEGRADED = "degraded", _("异常")
        OFFLINE = "offline", _("离线")

    id = models.CharField(_("终端 ID"), max_length=64, primary_key=True, default=new_agent_id)
    name = models.CharField(_("名称"), max_length=100)
    secret_hash = models.CharField(_("密钥哈希"), max_length=256, editable=False)
    # Carried in every token: rotating the secret bumps it, which invalidates every token issued before.
    secret_version = models.PositiveIntegerField(_("密钥版本"), default=1, editable=False)
    is_active = models.BooleanField(_("启用"), default=True)
    wechat_account = models.CharField(_("微信账号"), max_length=100, blank=True)
    agent_version = models.CharField(_("终端版本"), max_length=50, blank=True)
    driver = models.CharField(_("驱动"), max_length=30, blank=True, help_text="wxauto / wxauto4 / simulator")
    # Latest state reported by the agent; presence is derived from it and last_seen (see .presence).
    reported_presence = models.CharField(
        _("上报状态"), max_length=10, choices=Presence.choices, default=Presence.OFFLINE
    )
    last_seen = models.DateTimeField(_("最后在线"), null=True, blank=True)
    last_heartbeat_at = models.DateTimeField(_("最后心跳"), null=True, blank=True)
    last_heartbeat = models.JSONField(_("最后心跳内容"), default=dict, blank=True)
    heartbeat_interval = models.PositiveIntegerField(_("心跳间隔(秒)"), default=30)
    created_at = models.DateTimeField(_("创建时间"), auto_now_add=True)

    class Meta:
        verbose_name = _("客服终端")
        verbose_name_plural = _("客服终端")
        ordering = ["name"]

    def __str__(self) -> str:
        return f"{self.name} ({self.id})"

    @property
    def presence(self) -> str:
        """online / degraded / offline: offline once its last WebSocket closed (agents.services.socket_closed),
        or when silent for 3 heartbeat intervals (a lost network, a REST agent gone)."""
        if not self.last_seen or timezone.now() - self.last_seen > timedelta(seconds=3 * self.heartbeat_interval):
            return self.Presence.OFFLINE
        return self.reported_presence

    def set_secret(self, raw: str) -> None:
        from django.contrib.auth.hashers import make_password

        self.secret_hash = make_password(raw)


class RefreshTokenFamily(models.Model):
    """The refresh tokens descended from one login. Each refresh spends the current token and issues the next
    (`current_jti`); presenting a spent one means a copy is in someone else's hands, so the whole family is
    revoked. Kept in the database: a Redis flush must not log every agent out at once (a PBKDF2 login storm)."""

    id = models.CharField(max_length=32, primary_key=True)
    agent = models.ForeignKey(Agent, on_delete=models.CASCADE, related_name="token_families")
    current_jti = models.CharField(max_length=32)
    created_at = models.DateTimeField(auto_now_add=True)
    rotated_at = models.DateTimeField(null=True, blank=True)
    expires_at = models.DateTimeField(db_index=True)
    revoked_at = models.DateTimeField(null=True, blank=True)
    revoked_reason = models.CharField(max_length=32, blank=True)

    class Meta:
        verbose_name = _("刷新令牌族")
        verbose_name_plural = _("刷新令牌族")

    def __str__(self) -> str:
        return f"{self.agent_id}/{self.id}"
