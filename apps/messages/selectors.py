"""Reads of the messages app (conversations, messages, replies) for other apps."""

from datetime import datetime, timedelta

from django.db.models import Count, DurationField, ExpressionWrapper, F, Min, Q, Sum
from django.db.models.functions import Coalesce, TruncDate, TruncMinute
from django.utils import timezone

from apps.agents.models import Agent
from apps.messages.models import Conversation, Message, Reply
from apps.messages.store import OutboxReply


# --- monitoring: dashboard, alert rules, /metrics, trace views -------------------------------------
def _response_time():
    return ExpressionWrapper(F("created_at") - F("message__received_at"), output_field=DurationField())


def response_times_ms(since: datetime, limit: int = 500) -> list[float]:
    """Server response time (reply created − message received) of the latest `limit` replies since `since`."""
    rows = (
        Reply.objects.filter(created_at__gte=since)
        .order_by("-created_at")
        .annotate(took=_response_time())
        .values_list("took", flat=True)[:limit]
    )
    return [max(0.0, took.total_seconds() * 1000) for took in rows if took is not None]


def recent_response_times(points: int = 30) -> list[dict]:
    """The latest `points` replies' response times, oldest first: {"id", "at", "ms"}."""
    rows = Reply.objects.order_by("-created_at").annotate(took=_response_time()).values_list("id", "created_at", "took")
    return [
        {"id": pk, "at": created.isoformat(), "ms": round(max(0.0, took.total_seconds() * 1000), 1)}
        for pk, created, took in reversed(rows[:points])
        if took is not None
    ]


def reply_status_counts(since: datetime | None = None) -> dict[str, int]:
    queryset = Reply.objects.all() if since is None else Reply.objects.filter(created_at__gte=since)
    return dict(queryset.values_list("status").annotate(n=Count("id")).values_list("status", "n"))


def failed_sends_by_agent(since: datetime) -> dict[str, int]:
    """Replies each agent acked `failed` (WeChat did not send them) since `since`, by agent id."""
    failed = Reply.objects.filter(status=Reply.Status.FAILED, acked_at__gte=since)
    return dict(failed.values_list("agent_id").annotate(n=Count("id")).values_list("agent_id", "n"))


def message_status_counts() -> dict[str, int]:
    return dict(Message.objects.values_list("status").annotate(n=Count("id")).values_list("status", "n"))


def messages_since(since: datetime) -> int:
    return Message.objects.filter(received_at__gte=since).count()


def conversations_taken_over() -> int:
    """Conversations a human has taken over right now."""
    return Conversation.objects.filter(taken_over=True).count()


def pending_reviews() -> int:
    return Reply.objects.filter(status=Reply.Status.PENDING_REVIEW).count()


def _per_minute(queryset, field: str, value, minutes: int) -> tuple[datetime, dict]:
    start = timezone.now().replace(second=0, microsecond=0) - timedelta(minutes=minutes - 1)
    rows = (
        queryset.filter(**{f"{field}__gte": start})
        .annotate(minute=TruncMinute(field))
        .values_list("minute")
        .annotate(value=value)
        .values_list("minute", "value")
    )
    return start, {minute.replace(second=0, microsecond=0): total for minute, total in rows}


def messages_per_minute(minutes: int = 30) -> list[dict]:
    """Messages received in each of the last `minutes` minutes, oldest first: {"at", "n"}."""
    start, counts = _per_minute(Message.objects.all(), "received_at", Count("id"), minutes)
    at = [start + timedelta(minutes=i) for i in range(minutes)]
    return [{"at": minute.isoformat(), "n": counts.get(minute, 0)} for minute in at]


def cost_per_minute(minutes: int = 30) -> list[dict]:
    """LLM cost of the replies of each of the last `minutes` minutes, oldest first: {"at", "cost"}."""
    start, sums = _per_minute(Reply.objects.all(), "created_at", Sum("cost"), minutes)
    at = [start + timedelta(minutes=i) for i in range(minutes)]
    return [{"at": minute.isoformat(), "cost": float(sums.get(minute) or 0)} for minute in at]


def latest_messages(conversation_id: int, limit: int = 20) -> list[dict] | None:
    """The conversation's latest messages, newest first ({"trace_id", "sender", "content"}); None when
    there is no such conversation."""
    messages = [
        {"trace_id": trace_id.hex, "sender": sender, "content": content}
        for trace_id, sender, content in Message.objects.filter(conversation_id=conversation_id)
        .order_by("-received_at")
        .values_list("trace_id", "sender", "content")[:limit]
    ]
    if not messages and not Conversation.objects.filter(pk=conversation_id).exists():
        return None
    return messages


# --- the pipeline's own reads ----------------------------------------------------------------------
def decision(message_id: int) -> dict:
    """The seed's `?wait` contract for a message: {action, content, confidence, message_id, reply_id, status}."""
    reply = Reply.objects.filter(message_id=message_id).first()
    if reply is None and Message.objects.filter(pk=message_id, status=Message.Status.JOINED).exists():
        return _joined_decision(message_id)
    if reply is None:
        return {
            "action": None,
            "content": "",
            "confidence": None,
            "message_id": message_id,
            "reply_id": None,
            "status": "processing",
        }
    action, content = reply.action, reply.content
    if reply.status in (Reply.Status.PENDING_REVIEW, Reply.Status.REJECTED):
        action, content = Reply.Action.TRANSFER_HUMAN, ""  # a human has it; nothing to send now
    elif reply.status == Reply.Status.SKIPPED:
        action, content = Reply.Action.IGNORE, ""
    return {
        "action": action,
        "content": content,
        "confidence": reply.confidence,
        "message_id": message_id,
        "reply_id": reply.id,
        "status": reply.status,
    }


def _joined_decision(message_id: int) -> dict:
    """A fragment answered with the customer's next message (PIPELINE_DEBOUNCE_MS): nothing to send for it; the
    reply is the one to the first message decided after it (the fragments of one question are consecutive)."""
    question = Message.objects.filter(pk=message_id).values_list("conversation_id", flat=True)
    answer = (
        Reply.objects.filter(conversation_id__in=question, message_id__gt=message_id).order_by("message_id").first()
    )
    return {
        "action": Reply.Action.IGNORE,
        "content": "",
        "confidence": None,
        "message_id": message_id,
        "reply_id": answer.id if answer else None,
        "status": Message.Status.JOINED,
    }


STATS_COUNTS = ("messages", "replies", "handoffs", "ignored", "pending_review", "delivered")


def stats(days: int = 7, agent_id: str | None = None) -> dict:
    """Per day (server time zone): messages, replies, handoffs, ignored, pending, delivered, avg/p95 decision
    latency, cost; and their totals."""
    tz = timezone.get_current_timezone()
    first_day = timezone.localdate() - timedelta(days=days - 1)
    start = timezone.make_aware(datetime.combine(first_day, datetime.min.time()), tz)
    messages = Message.objects.filter(received_at__gte=start)
    replies = Reply.objects.filter(created_at__gte=start)
    if agent_id:
        messages, replies = messages.filter(agent_id=agent_id), replies.filter(agent_id=agent_id)
    per_day = {first_day + timedelta(days=i): _empty_day(first_day + timedelta(days=i)) for i in range(days)}
    for day, n in (
        messages.annotate(day=TruncDate("received_at", tzinfo=tz))
        .values_list("day")
        .annotate(n=Count("id"))
        .values_list("day", "n")
    ):
        if day in per_day:
            per_day[day]["messages"] = n
    for row in replies.annotate(day=TruncDate("created_at", tzinfo=tz)).values("day").annotate(**_reply_counts()):
        if row["day"] in per_day:
            cost = float(row.pop("cost") or 0)
            per_day[row.pop("day")].update(row, cost=cost)
    latencies = _latencies_by_day(replies, tz)
    for day, values in latencies.items():
        if day in per_day:
            per_day[day].update(avg_latency_ms=_mean(values), p95_latency_ms=_p95(values))
    days_list = [per_day[day] for day in sorted(per_day)]
    every_latency = sorted(value for values in latencies.values() for value in values)
    totals = {key: sum(day[key] for day in days_list) for key in STATS_COUNTS}
    totals.update(
        cost=round(sum(day["cost"] for day in days_list), 6),
        avg_latency_ms=_mean(every_latency),
        p95_latency_ms=_p95(every_latency),
    )
    return {"days": days, "agent_id": agent_id, "per_day": days_list, "totals": totals}


def _empty_day(day) -> dict:
    return {
        "date": day.isoformat(),
        **dict.fromkeys(STATS_COUNTS, 0),
        "avg_latency_ms": None,
        "p95_latency_ms": None,
        "cost": 0.0,
    }


def _reply_counts() -> dict:
    held = (Reply.Status.PENDING_REVIEW, Reply.Status.REJECTED)
    return {
        "replies": Count("id", filter=Q(action=Reply.Action.REPLY) & ~Q(status__in=held)),
        "handoffs": Count(
            "id",
            filter=Q(action=Reply.Action.TRANSFER_HUMAN)
            | Q(status=Reply.Status.PENDING_REVIEW)
            | Q(review_reason__startswith="conversation taken"),
        ),
        "ignored": Count("id", filter=Q(action=Reply.Action.IGNORE)),
        "pending_review": Count("id", filter=Q(status=Reply.Status.PENDING_REVIEW)),
        "delivered": Count("id", filter=Q(status=Reply.Status.DELIVERED)),
        "cost": Sum("cost"),
    }


def _latencies_by_day(replies, tz) -> dict:
    by_day: dict = {}
    rows = replies.exclude(latency_ms__total=None).annotate(day=TruncDate("created_at", tzinfo=tz))
    for day, total in rows.values_list("day", "latency_ms__total"):
        by_day.setdefault(day, []).append(float(total))
    return {day: sorted(values) for day, values in by_day.items()}


def _mean(values: list[float]) -> float | None:
    return round(sum(values) / len(values), 2) if values else None


def _p95(sorted_values: list[float]) -> float | None:
    if not sorted_values:
        return None
    index = min(len(sorted_values) - 1, max(0, int(round(0.95 * (len(sorted_values) - 1)))))
    return round(sorted_values[index], 2)


# --- the outbox: unacked replies of connected agents (beat's redelivery sweep, /metrics, alert rules) -----------
def _connected(agent_ids) -> dict[str, Agent]:
    """Those of the agents that are enabled and not offline (presence from last_seen and heartbeats)."""
    agents = Agent.objects.filter(pk__in=set(agent_ids), is_active=True).only(
        "id", "name", "last_seen", "reported_presence", "heartbeat_interval"
    )
    return {agent.id: agent for agent in agents if agent.presence != Agent.Presence.OFFLINE}


def agents_with_stale_outbox(before: datetime) -> list[str]:
    """Connected agents with an unacked reply last pushed (or queued, or made) before `before`."""
    stale = (
        Reply.objects.filter(status__in=Reply.OUTBOX)
        .alias(last_push=Coalesce("pushed_at", "queued_at", "created_at"))
        .filter(last_push__lt=before)
    )
    return sorted(_connected(stale.values_list("agent_id", flat=True).distinct()))


def stale_outbox(agent_id: str, before: datetime, limit: int) -> list[OutboxReply]:
    """The agent's unacked replies last pushed before `before`, oldest first."""
    rows = (
        Reply.objects.filter(agent_id=agent_id, status__in=Reply.OUTBOX)
        .alias(last_push=Coalesce("pushed_at", "queued_at", "created_at"))
        .filter(last_push__lt=before)
        .order_by("id")
        .values_list("id", "message_id", "conversation__chat_name", "content", "at", "created_at")[:limit]
    )
    return [OutboxReply(*row) for row in rows]


def stuck_replies(older_than: datetime) -> list[dict]:
    """Per connected agent: its unacked replies on their way (queued or decided) since before `older_than` —
    `count`, and `oldest_seconds`, the age of the oldest. Offline agents are left out: their replies wait for the
    reconnect, and their absence is an alert of its own."""
    now = timezone.now()
    rows = (
        Reply.objects.filter(status__in=Reply.OUTBOX)
        .alias(since=Coalesce("queued_at", "created_at"))
        .filter(since__lt=older_than)
        .values("agent_id")
        .annotate(count=Count("id"), oldest=Min(Coalesce("queued_at", "created_at")))
    )
    rows = list(rows)
    connected = _connected(row["agent_id"] for row in rows)
    return [
        {
            "agent_id": row["agent_id"],
            "agent_name": connected[row["agent_id"]].name,
            "count": row["count"],
            "oldest_seconds": max(0.0, (now - row["oldest"]).total_seconds()),
        }
        for row in sorted(rows, key=lambda row: row["oldest"])
        if row["agent_id"] in connected
    ]
