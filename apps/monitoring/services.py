"""Monitoring logic: notifications, alert evaluation, the dashboard snapshot, /metrics access."""

import ipaddress
import logging
import secrets
from collections.abc import Iterable
from datetime import timedelta

from django.conf import settings
from django.db import IntegrityError, transaction
from django.db.models import Q
from django.utils import timezone

from apps.core import jobs
from apps.monitoring import metrics, notifiers, sources
from apps.monitoring.models import AGENT_METRICS, AlertEvent, AlertRule, NotificationChannel

logger = logging.getLogger(__name__)

NOTIFY_EVENT_TASK = "monitoring.notify_alert_event"


# --- notifications ---------------------------------------------------------------------------


def notify(title: str, body: str, severity: str = "warning", channels=None) -> None:
    """Send through the configured channels (webhook / DingTalk / email).

    `channels`: None = every enabled channel; else channel objects, ids, names or kinds
    ("webhook", "dingtalk", "email"). A failing channel is logged and does not stop the others.
    """
    sent, failed = deliver(title, body, severity, channels)
    if failed:
        logger.warning("notification %r: %d sent, failed: %s", title, sent, "; ".join(failed))


def deliver(title: str, body: str, severity: str = "warning", channels=None) -> tuple[int, list[str]]:
    """notify() that reports (number sent, list of failure descriptions)."""
    sent, failed = 0, []
    for channel in resolve_channels(channels):
        try:
            notifiers.send(channel, title, body, severity)
        except notifiers.NotificationError as exc:
            metrics.ALERT_NOTIFICATIONS.labels(channel=channel.kind, outcome="failed").inc()
            failed.append(str(exc))
        else:
            metrics.ALERT_NOTIFICATIONS.labels(channel=channel.kind, outcome="sent").inc()
            sent += 1
    return sent, failed


def resolve_channels(channels) -> list[NotificationChannel]:
    enabled = NotificationChannel.objects.filter(enabled=True)
    if channels is None:
        return list(enabled)
    if isinstance(channels, str | NotificationChannel | int):
        channels = [channels]
    wanted = Q(pk__in=[])
    for item in channels:
        if isinstance(item, NotificationChannel):
            wanted |= Q(pk=item.pk)
        elif isinstance(item, int):
            wanted |= Q(pk=item)
        else:
            wanted |= Q(name=item) | Q(kind=item)
    return list(enabled.filter(wanted))


# --- alert rules -------------------------------------------------------------------------------


def metric_value(metric: str, window_seconds: int) -> float:
    """Current value of one alert metric over the last `window_seconds`; for a per-agent metric the highest of
    the agents' values (what a rule shows as its latest value)."""
    if metric in AGENT_METRICS:
        return max(agent_values(metric, window_seconds).values(), default=0.0)
    since = timezone.now() - timedelta(seconds=window_seconds)
    Metric = AlertRule.Metric
    if metric == Metric.P95_LATENCY:
        return sources.percentile(sources.response_times_ms(since), 0.95)
    if metric == Metric.ERROR_RATE:
        counts = sources.reply_status_counts(since)
        total = sum(counts.values())
        return 100.0 * counts.get("failed", 0) / total if total else 0.0
    if metric == Metric.BUDGET:
        ratio = sources.budget()["used_ratio"]
        return 100.0 * ratio if ratio is not None else 0.0
    if metric == Metric.CIRCUIT_OPEN:
        return float(sum(1 for state in sources.circuit_states().values() if state == "open"))
    if metric == Metric.ERP_SYNC_FAILURES:
        return float(sources.erp_sync_failures(since))
    raise ValueError(f"unknown alert metric {metric!r}")


def agent_values(metric: str, window_seconds: int, agents: list[dict] | None = None) -> dict[str, float]:
    """A per-agent metric's value for every enabled agent, by agent id."""
    agents = sources.agents() if agents is None else agents
    Metric = AlertRule.Metric
    if metric == Metric.AGENTS_OFFLINE:
        return {agent["id"]: float(agent["presence"] == "offline") for agent in agents}
    if metric == Metric.AGENT_DEGRADED:
        return {agent["id"]: float(agent["presence"] == "degraded") for agent in agents}
    if metric == Metric.OFFLINE_QUEUE:
        return {agent["id"]: float(agent["queue_size"]) for agent in agents}
    if metric == Metric.AGENT_SEND_FAILURES:
        failed = sources.failed_sends_by_agent(timezone.now() - timedelta(seconds=window_seconds))
        return {agent["id"]: float(failed.get(agent["id"], 0)) for agent in agents}
    if metric == Metric.STUCK_REPLY_AGE:
        oldest = {row["agent_id"]: row["oldest_seconds"] for row in sources.stuck_replies()}
        return {agent["id"]: float(oldest.get(agent["id"], 0)) for agent in agents}
    raise ValueError(f"not a per-agent alert metric {metric!r}")


def evaluate_rules() -> list[tuple[int, str]]:
    """Evaluate every enabled rule once; returns [(event_id, "fired"|"resolved")] of this round."""
    changes = []
    agents = None  # read once per round for every per-agent rule
    for rule in AlertRule.objects.filter(enabled=True):
        if rule.per_agent and agents is None:
            agents = sources.agents()
        changes.extend(evaluate_rule(rule, agents))
    return changes


def evaluate_rule(rule: AlertRule, agents: list[dict] | None = None) -> list[tuple[int, str]]:
    """Compare each subject of the rule (the rule itself, or each enabled agent for a per-agent rule) with the
    threshold: fire an event for a newly breached one, resolve the open event of one no longer breached (or of
    an agent disabled or deleted since)."""
    now = timezone.now()
    if rule.per_agent:
        agents = sources.agents() if agents is None else agents
        names = {agent["id"]: agent["name"] for agent in agents}
        values = agent_values(rule.metric, rule.window_seconds, agents)
    else:
        names, values = {}, {"": metric_value(rule.metric, rule.window_seconds)}
    AlertRule.objects.filter(pk=rule.pk).update(last_value=max(values.values(), default=0.0), last_evaluated_at=now)
    open_events = {event.agent_id: event for event in AlertEvent.objects.filter(rule=rule, resolved_at__isnull=True)}
    changes = []
    for agent_id, value in values.items():
        if not rule.breached(value):
            continue
        if agent_id not in open_events and not _cooling_down(rule, agent_id, now):
            event_id = _fire(rule, agent_id, names.get(agent_id, ""), value)
            if event_id is not None:
                changes.append((event_id, "fired"))
    for agent_id, event in open_events.items():
        value = values.get(agent_id)
        if value is None or not rule.breached(value):
            if _resolve(event, value or 0.0, now):
                changes.append((event.pk, "resolved"))
    return changes


def _fire(rule: AlertRule, agent_id: str, agent_name: str, value: float) -> int | None:
    try:
        with transaction.atomic():
            event = AlertEvent.objects.create(rule=rule, agent_id=agent_id, agent_name=agent_name, value=value)
    except IntegrityError:  # another evaluator opened it first
        return None
    jobs.enqueue(NOTIFY_EVENT_TASK, event.pk, "fired")
    return event.pk


def _resolve(event: AlertEvent, value: float, now) -> bool:
    # Conditional update: only one evaluator can resolve (and so notify) an event.
    if AlertEvent.objects.filter(pk=event.pk, resolved_at__isnull=True).update(resolved_at=now, resolved_value=value):
        jobs.enqueue(NOTIFY_EVENT_TASK, event.pk, "resolved")
        return True
    return False


def _cooling_down(rule: AlertRule, agent_id: str, now) -> bool:
    last = (
        AlertEvent.objects.filter(rule=rule, agent_id=agent_id, resolved_at__isnull=False)
        .order_by("-resolved_at")
        .first()
    )
    return last is not None and now - last.resolved_at < timedelta(seconds=rule.cooldown_seconds)


def notify_event(event_id: int, kind: str) -> bool:
    """Send the one notification of an event's firing or resolving; False when already sent or gone.

    Claimed by a conditional UPDATE before sending, so a redelivered task never notifies twice; a
    failure on every channel releases the claim and raises for the task to retry.
    """
    field = "fire_notified_at" if kind == "fired" else "resolve_notified_at"
    if not AlertEvent.objects.filter(pk=event_id, **{f"{field}__isnull": True}).update(**{field: timezone.now()}):
        return False
    event = AlertEvent.objects.select_related("rule").get(pk=event_id)
    rule = event.rule
    title, body = alert_message(event, kind)
    channels = list(rule.channels.filter(enabled=True))
    if not channels:
        logger.warning("alert rule %s has no enabled channel; event %s %s not sent", rule.name, event_id, kind)
        return True
    sent, failed = deliver(title, body, rule.severity if kind == "fired" else "info", channels)
    if failed:
        logger.warning("alert %s %s: %d sent, failed: %s", event_id, kind, sent, "; ".join(failed))
    if sent == 0:
        AlertEvent.objects.filter(pk=event_id).update(**{field: None})
        raise notifiers.NotificationError("; ".join(failed))
    return True


def alert_message(event: AlertEvent, kind: str) -> tuple[str, str]:
    """Title and body of an event's notification; an agent's event names the agent (name and id)."""
    rule = event.rule
    metric = rule.get_metric_display()
    condition = f"{metric} {rule.get_comparison_display()} {rule.threshold:g}"
    subject = f"：{event.agent_label}" if event.agent_id else ""
    agent_line = f"客服终端：{event.agent_label}\n\n" if event.agent_id else ""
    if kind == "fired":
        return (
            f"告警触发：{rule.name}{subject}",
            f"{agent_line}{condition}（当前值 {event.value:.2f}，窗口 {rule.window_seconds} 秒）\n\n"
            f"触发时间：{timezone.localtime(event.fired_at):%Y-%m-%d %H:%M:%S}",
        )
    return (
        f"告警恢复：{rule.name}{subject}",
        f"{agent_line}{condition} 已不再满足（当前值 {(event.resolved_value or 0):.2f}）\n\n"
        f"恢复时间：{timezone.localtime(event.resolved_at):%Y-%m-%d %H:%M:%S}",
    )


def active_alerts(limit: int = 20) -> list[dict]:
    return [
        {
            "id": event.pk,
            "rule": event.rule.name,
            "agent": event.agent_label,
            "severity": event.rule.severity,
            "value": round(event.value, 2),
            "fired_at": event.fired_at.isoformat(),
        }
        for event in AlertEvent.objects.filter(resolved_at__isnull=True).select_related("rule")[:limit]
    ]


# --- dashboard -----------------------------------------------------------------------------------


def dashboard_snapshot() -> dict:
    """Every number of /dashboard/, read from the database and Redis."""
    now = timezone.now()
    local = timezone.localtime(now)
    day_start = local.replace(hour=0, minute=0, second=0, microsecond=0)
    recent = sources.response_times_ms(now - timedelta(hours=1))
    hits, misses = metrics.cache_hit_counts()
    agents = sources.agents()
    budget = sources.budget()
    cost = sources.cost_today()
    return {
        "ts": now.isoformat(),
        "cards": {
            "avg_response_ms": round(sum(recent) / len(recent), 1) if recent else 0,
            "p95_response_ms": round(sources.percentile(recent, 0.95), 1),
            "cache_hit_rate": round(hits / (hits + misses), 4) if hits + misses else None,
            "total_requests": sources.messages_since(day_start),
            "active_agents": sum(1 for agent in agents if agent["presence"] == "online"),
            "degraded_agents": sum(1 for agent in agents if agent["presence"] == "degraded"),
            "agents": len(agents),
            "cost_today": float(cost),
            "budget_used_ratio": budget["used_ratio"],
            "budget_limit": budget["limit"],
            "pending_reviews": sources.pending_reviews(),
        },
        "charts": {
            "response_times": sources.recent_response_times(30),
            "messages_per_minute": sources.messages_per_minute(30),
            "cost_per_minute": sources.cost_per_minute(30),
        },
        "alerts": active_alerts(),
    }


# --- /metrics access -----------------------------------------------------------------------------


def metrics_access_allowed(remote_addr: str, authorization: str, proxied: bool = False) -> bool:
    """A matching `Authorization: Bearer <METRICS_TOKEN>`, or a client address in METRICS_ALLOWED_IPS.

    A request relayed by a reverse proxy (`proxied`) shows the proxy's address, often loopback, not the
    client's: it is judged by the token alone.
    """
    token = settings.METRICS_TOKEN
    if token and authorization.startswith("Bearer ") and secrets.compare_digest(authorization[7:].strip(), token):
        return True
    return not proxied and address_allowed(remote_addr, settings.METRICS_ALLOWED_IPS)


def address_allowed(remote_addr: str, allowed: Iterable[str]) -> bool:
    try:
        address = ipaddress.ip_address((remote_addr or "").strip())
    except ValueError:
        return False
    for entry in allowed:
        try:
            if address in ipaddress.ip_network(entry.strip(), strict=False):
                return True
        except ValueError:
            logger.warning("METRICS_ALLOWED_IPS: %r is not an address or network", entry)
    return False
