"""Senders for one notification channel each: generic webhook, DingTalk robot (signed), email."""

import base64
import hashlib
import hmac
import logging
import time
from urllib.parse import quote_plus

import httpx
from django.conf import settings
from django.core.mail import send_mail

from apps.monitoring.models import NotificationChannel

logger = logging.getLogger(__name__)

SEVERITY_LABELS = {"info": "提示", "warning": "警告", "critical": "严重"}


class NotificationError(Exception):
    """A channel refused or could not be reached."""


def dingtalk_sign(secret: str, timestamp_ms: int) -> str:
    """DingTalk robot signature: base64(HMAC-SHA256(secret, "{timestamp}\\n{secret}")), URL-encoded."""
    digest = hmac.new(secret.encode(), f"{timestamp_ms}\n{secret}".encode(), hashlib.sha256).digest()
    return quote_plus(base64.b64encode(digest).decode())


def dingtalk_url(url: str, secret: str, timestamp_ms: int | None = None) -> str:
    if not secret:
        return url
    timestamp_ms = timestamp_ms or int(time.time() * 1000)
    separator = "&" if "?" in url else "?"
    return f"{url}{separator}timestamp={timestamp_ms}&sign={dingtalk_sign(secret, timestamp_ms)}"


def send(channel: NotificationChannel, title: str, body: str, severity: str) -> None:
    """Deliver one notification through `channel`; raises NotificationError on failure."""
    label = SEVERITY_LABELS.get(severity, severity)
    try:
        if channel.kind == NotificationChannel.Kind.WEBHOOK:
            _post(channel.target, {"title": title, "body": body, "severity": severity, "source": "wxcs"})
        elif channel.kind == NotificationChannel.Kind.DINGTALK:
            answer = _post(
                dingtalk_url(channel.target, channel.secret),
                {"msgtype": "markdown", "markdown": {"title": title, "text": f"### 【{label}】{title}\n\n{body}"}},
            )
            if answer.get("errcode", 0) != 0:
                raise NotificationError(f"dingtalk errcode {answer.get('errcode')}: {answer.get('errmsg')}")
        elif channel.kind == NotificationChannel.Kind.EMAIL:
            recipients = [address.strip() for address in channel.target.split(",") if address.strip()]
            send_mail(f"[wxcs {label}] {title}", body, settings.DEFAULT_FROM_EMAIL, recipients)
        else:
            raise NotificationError(f"unknown channel kind {channel.kind!r}")
    except httpx.HTTPStatusError as exc:
        # Not str(exc): it contains the URL, and a robot URL carries its access token.
        raise NotificationError(f"{channel.name}: HTTP {exc.response.status_code}") from exc
    except (httpx.HTTPError, OSError) as exc:
        raise NotificationError(f"{channel.name}: {type(exc).__name__}") from exc


def _post(url: str, payload: dict) -> dict:
    response = httpx.post(url, json=payload, timeout=settings.ALERT_HTTP_TIMEOUT)
    response.raise_for_status()
    try:
        return response.json()
    except ValueError:
        return {}
