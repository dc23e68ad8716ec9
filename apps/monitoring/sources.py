"""Readings taken from other apps, for the dashboard, the alert rules and /metrics.

Monitoring reads other apps only through their selectors, here. Every reading is guarded: a database
that fails (or is not migrated yet) yields "no data" instead of breaking the dashboard or the alerts.
"""

import functools
import logging
import math
from contextlib import nullcontext
from datetime import timedelta
from decimal import Decimal

from django.conf import settings
from django.db import DatabaseError, connection, transaction
from django.utils import timezone

from apps.agents import selectors as agents_selectors
from apps.costs.selectors import check_budget, daily_report
from apps.erp import selectors as erp_selectors
from apps.llm_gateway.selectors import circuit_states as gateway_circuit_states
from apps.messages import selectors as messages_selectors

logger = logging.getLogger(__name__)


def _safe(default):
    """Decorator: a reading whose query fails (e.g. the table is not there yet) answers `default`."""

    def wrap(function):
        @functools.wraps(function)
        def guarded(*args, **kwargs):
            try:
                # Inside a transaction (a caller's, or a test's) a failed query must not poison it.
                with transaction.atomic() if connection.in_atomic_block else nullcontext():
                    return function(*args, **kwargs)
            except DatabaseError as exc:
                logger.debug("monitoring source %s unavailable: %s", function.__name__, exc)
                return default() if callable(default) else default

        return guarded

    return wrap


def percentile(values: list[float], fraction: float) -> float:
    if not values:
        return 0.0
    ordered = sorted(values)
    rank = max(0, math.ceil(fraction * len(ordered)) - 1)
    return ordered[rank]


response_times_ms = _safe(list)(messages_selectors.response_times_ms)
recent_response_times = _safe(list)(messages_selectors.recent_response_times)
reply_status_counts = _safe(dict)(messages_selectors.reply_status_counts)
failed_sends_by_agent = _safe(dict)(messages_selectors.failed_sends_by_agent)
message_status_counts = _safe(dict)(messages_selectors.message_status_counts)
messages_since = _safe(0)(messages_selectors.messages_since)
handoffs = _safe(0)(messages_selectors.conversations_taken_over)
messages_per_minute = _safe(list)(messages_selectors.messages_per_minute)
cost_per_minute = _safe(list)(messages_selectors.cost_per_minute)
pending_reviews = _safe(0)(messages_selectors.pending_reviews)
agents = _safe(list)(agents_selectors.enabled_agents)
erp_sync_failures = _safe(0)(erp_selectors.failed_syncs_since)


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


@_safe(dict)
def circuit_states() -> dict[str, str]:
    """{"provider/model": "closed"|"open"|"half_open"} from the gateway's cross-process circuit breaker."""
    return {str(key): str(value) for key, value in gateway_circuit_states().items()}


@_safe(list)
def stuck_replies() -> list[dict]:
    """Per connected agent (oldest first): unacked replies older than OUTBOX_REDELIVER_AFTER, their count and the
    oldest's age in seconds — what beat's outbox sweep keeps pushing again."""
    return messages_selectors.stuck_replies(timezone.now() - timedelta(seconds=settings.OUTBOX_REDELIVER_AFTER))
