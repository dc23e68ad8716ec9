"""Readings taken from other apps' data, for the dashboard, the alert rules and /metrics.

The one place that knows other apps' models and services. Every reading is guarded: a database that
fails (or is not migrated yet) yields "no data" instead of breaking the dashboard or the alerts.
"""

import logging
import math
from contextlib import nullcontext
from datetime import datetime, timedelta
from decimal import Decimal

from django.db import DatabaseError, connection, transaction
from django.db.models import Count, DurationField, ExpressionWrapper, F, Sum
from django.db.models.functions import TruncMinute
from django.utils import timezone

from apps.agents.models import Agent
from apps.costs.services import check_budget, daily_report
from apps.erp.models import SyncRun
from apps.llm_gateway.services import circuit_states as gateway_circuit_states
from apps.messages.models import Conversation, Message, Reply

logger = logging.getLogger(__name__)


def _safe(default):
    """Decorator: a reading whose query fails (e.g. the table is not there yet) answers `default`."""

    def wrap(function):
        def guarded(*args, **kwargs):
            try:
                # Inside a transaction (a caller's, or a test's) a failed query must not poison it.
                with transaction.atomic() if connection.in_atomic_block else nullcontext():
                    return function(*args, **kwargs)
            except DatabaseError as exc:
                logger.debug("monitoring source %s unavailable: %s", function.__name__, exc)
                return default() if callable(default) else default

        guarded.__name__ = function.__name__
        return guarded

    return wrap


def percentile(values: list[float], fraction: float) -> float:
    if not values:
        return 0.0
    ordered = sorted(values)
    rank = max(0, math.ceil(fraction * len(ordered)) - 1)
    return ordered[rank]


def _response_time():
    return ExpressionWrapper(F("created_at") - F("message__received_at"), output_field=DurationField())


@_safe(list)
def response_times_ms(since: datetime, limit: int = 500) -> list[float]:
    """Server response time (reply created − message received) of the latest `limit` replies since `since`."""
    rows = (
        Reply.objects.filter(created_at__gte=since)
        .order_by("-created_at")
        .annotate(took=_response_time())
        .values_list("took", flat=True)[:limit]
    )
    return [max(0.0, took.total_seconds() * 1000) for took in rows if took is not None]


@_safe(list)
def recent_response_times(points: int = 30) -> list[dict]:
    rows = Reply.objects.order_by("-created_at").annotate(took=_response_time()).values_list("id", "created_at", "took")
    return [
        {"id": pk, "at": created.isoformat(), "ms": round(max(0.0, took.total_seconds() * 1000), 1)}
        for pk, created, took in reversed(rows[:points])
        if took is not None
    ]


@_safe(dict)
def reply_status_counts(since: datetime | None = None) -> dict[str, int]:
    queryset = Reply.objects.all() if since is None else Reply.objects.filter(created_at__gte=since)
    return dict(queryset.values_list("status").annotate(n=Count("id")).values_list("status", "n"))


@_safe(dict)
def message_status_counts() -> dict[str, int]:
    return dict(Message.objects.values_list("status").annotate(n=Count("id")).values_list("status", "n"))


@_safe(0)
def messages_since(since: datetime) -> int:
    return Message.objects.filter(received_at__gte=since).count()


@_safe(0)
def handoffs() -> int:
    """Conversations a human has taken over right now."""
    return Conversation.objects.filter(taken_over=True).count()


@_safe(list)
def messages_per_minute(minutes: int = 30) -> list[dict]:
    now = timezone.now().replace(second=0, microsecond=0)
    start = now - timedelta(minutes=minutes - 1)
    counts = dict(
        Message.objects.filter(received_at__gte=start)
        .annotate(minute=TruncMinute("received_at"))
        .values_list("minute")
        .annotate(n=Count("id"))
        .values_list("minute", "n")
    )
    counts = {minute.replace(second=0, microsecond=0): n for minute, n in counts.items()}
    return [
        {"at": (start + timedelta(minutes=i)).isoformat(), "n": counts.get(start + timedelta(minutes=i), 0)}
        for i in range(minutes)
    ]


@_safe(list)
def cost_per_minute(minutes: int = 30) -> list[dict]:
    now = timezone.now().replace(second=0, microsecond=0)
    start = now - timedelta(minutes=minutes - 1)
    sums = dict(
        Reply.objects.filter(created_at__gte=start)
        .annotate(minute=TruncMinute("created_at"))
        .values_list("minute")
        .annotate(total=Sum("cost"))
        .values_list("minute", "total")
    )
    sums = {minute.replace(second=0, microsecond=0): total for minute, total in sums.items()}
    return [
        {"at": (start + timedelta(minutes=i)).isoformat(), "cost": float(sums.get(start + timedelta(minutes=i)) or 0)}
        for i in range(minutes)
    ]


@_safe(lambda: Decimal(0))
def cost_today() -> Decimal:
    """Today's LLM spend, from the costs app's daily report."""
    return Decimal(str(daily_report(timezone.localdate())["total_cost"]))


@_safe(lambda: {"used_ratio": None, "policy": "", "limit": None})
def budget() -> dict:
    status = check_budget()
    return {
        "used_ratio": float(status.used_ratio),
        "policy": str(status.policy),
        "limit": float(status.limit) if status.limit is not None else None,
    }


@_safe(list)
def agents() -> list[dict]:
    """Every enabled agent: presence and the offline-queue size from its last heartbeat."""
    return [
        {
            "id": agent.id,
            "name": agent.name,
            "presence": str(agent.presence),
            "queue_size": int((agent.last_heartbeat or {}).get("queue_size") or 0),
        }
        for agent in Agent.objects.filter(is_active=True).only(
            "id", "name", "last_seen", "reported_presence", "heartbeat_interval", "last_heartbeat"
        )
    ]


@_safe(dict)
def circuit_states() -> dict[str, str]:
    """{"provider/model": "closed"|"open"|"half_open"} from the gateway's cross-process circuit breaker."""
    return {str(key): str(value) for key, value in gateway_circuit_states().items()}


@_safe(0)
def erp_sync_failures(since: datetime) -> int:
    return SyncRun.objects.filter(status=SyncRun.Status.FAILED, started_at__gte=since).count()


@_safe(0)
def pending_reviews() -> int:
    return Reply.objects.filter(status=Reply.Status.PENDING_REVIEW).count()
