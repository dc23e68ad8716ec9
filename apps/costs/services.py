"""Costs: every write — prices and budgets, budget reservations, usage tracking, the usage queue, alerts.

Hot path (the gateway, for every LLM call; async, no database):
- `reserve(provider, model, agent, estimate)` before a call: one Lua script over the budgets that apply
  (global, provider, model, agent) admits the call only if spent + reserved + estimate ≤ limit for every
  enforcing budget, and reserves the estimate. Concurrent calls therefore never overshoot a limit by more
  than one call's (actual − estimated) cost. A refused reservation names the budget and its policy.
- `track(...)` after it (the gateway spawns it off the reply's path): one Lua script counts the call once
  per call id (daily counters by total / provider / model / agent / customer / route), queues the usage
  for the database, settles the reservation (reserved −= estimate, spent += actual) and reports thresholds
  crossed for the first time this period; those become BudgetAlert rows + a log line + the task
  "monitoring.notify" (enqueued by name: costs never imports monitoring).
The usage queue is written to UsageRecord in batches by `flush_usage()` (Celery beat every few seconds,
and kicked by `track` when the queue grows); UsageRecord.call_id is unique and a batch leaves the queue
only after its rows are in, so a crash can neither lose nor double-count a call.

Reads (budget status, the daily report) are in `apps.costs.selectors`.
"""

import asyncio
import json
import logging
import time
import uuid
from dataclasses import dataclass, field
from datetime import datetime
from decimal import Decimal

from django.conf import settings
from django.db import IntegrityError, transaction
from django.utils import timezone
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import TimeoutError as RedisTimeoutError

from apps.core import aio, jobs, redis
from apps.core.db import run_db
from apps.costs import metrics, store
from apps.costs.config import CONFIG, BudgetConf, cost_of, get_config, price_for
from apps.costs.models import Budget, BudgetAlert, ModelPrice, UsageRecord

logger = logging.getLogger(__name__)

TRACK_ATTEMPTS = 4  # a Redis connection failure while tracking is retried (the call id makes a repeat a no-op)


# --- prices and budgets -----------------------------------------------------------------------------
def save_price(price: ModelPrice) -> ModelPrice:
    price.save()
    CONFIG.bump()
    return price


def delete_prices(prices) -> None:
    """Delete a queryset of prices."""
    prices.delete()
    CONFIG.bump()


def save_budget(budget: Budget) -> Budget:
    budget.save()
    CONFIG.bump()
    return budget


def delete_budgets(budgets) -> None:
    """Delete a queryset of budgets (their alerts go with them)."""
    budgets.delete()
    CONFIG.bump()


def agent_and_customer(user) -> tuple[str, str]:
    """(agent, customer) from the gateway's `user`: "agent-id", or {"agent": ..., "customer": ...}."""
    if not user:
        return "", ""
    if isinstance(user, dict):
        return str(user.get("agent") or ""), str(user.get("customer") or "")
    return str(user), ""


# --- reserve / release ------------------------------------------------------------------------------
@dataclass
class Reservation:
    keys: list[str] = field(default_factory=list)
    budgets: list[BudgetConf] = field(default_factory=list)
    estimate: float = 0.0


@dataclass
class Refusal:
    budget: BudgetConf
    spent: float


async def reserve(
    provider: str, model: str, agent: str, estimate: float, exempt: frozenset[int] = frozenset()
) -> Reservation | Refusal:
    """Reserve `estimate` CNY on every budget that applies, atomically; a refusal names the budget.

    `exempt`: budgets that already degraded this call to the cheap route — still counted, no longer
    refusing (a "cheap" budget keeps the service answering at the cheaper rate past its limit)."""
    config = await get_config()
    budgets = [b for b in config.budgets if b.applies(provider, model, agent)]
    if not budgets:
        return Reservation()
    keys = [store.budget_key(b) for b in budgets]
    args: list = [estimate, store.BUDGET_TTL]
    for b in budgets:
        flags = ("e" if b.enforcing and b.id not in exempt else "") + ("a" if 100 in b.thresholds else "")
        args += [b.limit, flags or "-"]
    result = await redis.script(store.RESERVE_LUA, keys, args)
    if int(result[0]) == 0:
        return Reservation(keys, budgets, estimate)
    budget = budgets[int(result[0]) - 1]
    spent = float(result[1])
    metrics.budget_used(budget, spent)
    if int(result[2]):
        await _record_alerts_off_loop([(budget, store.period_key(budget.period), 100, spent)])
    return Refusal(budget, spent)


async def release(reservation: Reservation) -> None:
    if reservation.keys and reservation.estimate != 0:
        await redis.script(store.RELEASE_LUA, reservation.keys, [reservation.estimate])


# --- tracking ---------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Tracked:
    call_id: str
    cost: float
    price_known: bool
    duplicate: bool = False


@dataclass(frozen=True)
class UsageEvent:
    """One call to count: who, what it used, and its price (from the in-memory price table)."""

    provider: str
    model: str
    input_tokens: int
    output_tokens: int
    agent: str
    customer: str
    call_id: str
    kind: str
    route: str
    latency_ms: float
    cost: float
    known: bool
    price_in: float
    price_out: float


_flush_state = {"at": 0.0, "running": False}
_unpriced_logged: set[tuple[str, str]] = set()  # warn once per process and model


async def track(
    provider: str,
    model: str,
    input_tokens: int,
    output_tokens: int,
    user=None,
    *,
    call_id: str | None = None,
    kind: str = "chat",
    route: str = "",
    latency_ms: float = 0.0,
    reservation: Reservation | None = None,
    provider_kind: str = "",
) -> Tracked:
    """Count one call (once per call id: a repeat returns `duplicate=True`) and settle its budget
    reservation (`reservation`: the gateway's; None: a call made elsewhere, charged to its budgets)."""
    config = await get_config()
    price_in, price_out, known = price_for(config, provider, model, provider_kind)
    agent, customer = agent_and_customer(user)
    event = UsageEvent(
        provider,
        model,
        input_tokens,
        output_tokens,
        agent,
        customer,
        call_id or uuid.uuid4().hex,
        kind,
        route,
        latency_ms,
        cost_of(price_in, price_out, input_tokens, output_tokens),
        known,
        price_in,
        price_out,
    )
    if reservation is None:
        budgets = [b for b in config.budgets if b.applies(provider, model, agent)]
        reservation = Reservation([store.budget_key(b) for b in budgets], budgets, 0.0)
    for attempt in range(TRACK_ATTEMPTS):
        try:
            return await _commit(event, reservation)
        except (RedisConnectionError, RedisTimeoutError):
            if attempt == TRACK_ATTEMPTS - 1:
                raise
            await asyncio.sleep(0.2 * 2**attempt)
    raise AssertionError("unreachable")


async def _commit(event: UsageEvent, reservation: Reservation) -> Tracked:
    now = timezone.now()
    result = await _track_script(event, reservation, now)
    if int(result[0]) == -1:
        return Tracked(event.call_id, event.cost, event.known, duplicate=True)
    _observe(event)
    alerts = []
    for i, budget in enumerate(reservation.budgets):
        spent = float(result[1 + 2 * i])
        metrics.budget_used(budget, spent)
        for threshold in filter(None, str(result[2 + 2 * i]).split(",")):
            alerts.append((budget, store.period_key(budget.period, now), int(threshold), spent))
    if alerts:
        await _record_alerts_off_loop(alerts)
    _maybe_flush(int(result[0]))
    return Tracked(event.call_id, event.cost, event.known)


async def _track_script(event: UsageEvent, reservation: Reservation, now: datetime) -> list:
    fields = ["total", f"provider:{event.provider}", f"model:{event.provider}/{event.model}", f"kind:{event.kind}"]
    for name, value in (("agent", event.agent), ("customer", event.customer), ("route", event.route)):
        if value:
            fields.append(f"{name}:{value}")
    if not event.known:
        fields.append("unpriced")
    args: list = [
        event.cost,
        event.input_tokens,
        event.output_tokens,
        _queued_usage(event, now),
        reservation.estimate,
        store.BUDGET_TTL,
        len(fields),
        *fields,
        store.SEEN_TTL,
        store.DAY_TTL,
    ]
    for budget in reservation.budgets:
        args += [budget.limit, ",".join(str(t) for t in budget.thresholds) or "-"]
    day = store.day_key(timezone.localtime(now).strftime("%Y%m%d"))
    keys = [store.seen_key(event.call_id), day, store.pending_key(), *reservation.keys]
    return await redis.script(store.TRACK_LUA, keys, args)


def _queued_usage(event: UsageEvent, now: datetime) -> str:
    """The usage record as it waits in the Redis queue (see `_insert`)."""
    return json.dumps(
        {
            "call_id": event.call_id,
            "at": now.isoformat(),
            "provider": event.provider,
            "model": event.model,
            "kind": event.kind,
            "route": event.route,
            "agent": event.agent,
            "customer": event.customer,
            "in": event.input_tokens,
            "out": event.output_tokens,
            "cost": event.cost,
            "known": event.known,
            "latency_ms": round(event.latency_ms, 2),
        },
        ensure_ascii=False,
    )


def _observe(event: UsageEvent) -> None:
    metrics.tracked(
        event.provider, event.model, event.kind, event.input_tokens, event.output_tokens, event.cost, event.known
    )
    if not event.known and (event.provider, event.model) not in _unpriced_logged:
        _unpriced_logged.add((event.provider, event.model))
        logger.warning(
            "no price for %s/%s: charged the default %.4f/%.4f CNY per 1k tokens (flagged in the usage records)",
            event.provider,
            event.model,
            event.price_in,
            event.price_out,
        )


# --- usage queue → database -------------------------------------------------------------------------
def _maybe_flush(pending: int) -> None:
    """Write queued usage soon: when the queue is long or a couple of seconds have passed (batched)."""
    now = time.monotonic()
    if (
        not settings.COST_FLUSH_AUTO
        or _flush_state["running"]
        or (pending < settings.COST_FLUSH_BATCH and now - _flush_state["at"] < settings.COST_FLUSH_SECONDS)
    ):
        return
    _flush_state.update(running=True, at=now)
    aio.spawn(_flush_off_loop(), what="usage flush")


async def _flush_off_loop() -> None:
    try:
        await run_db(flush_usage)
    except Exception:
        logger.exception("usage flush failed (the queue keeps the records; beat retries)")
    finally:
        _flush_state["running"] = False


def flush_usage(batch: int = 1000) -> int:
    """Move queued usage into UsageRecord. Rows go in first (duplicates ignored by call id), then the batch
    leaves the queue, under a Redis lock so two flushers never trim each other's batch. Returns rows seen."""
    client = redis.client()
    total = 0
    lock = client.lock(store.flush_lock_key(), timeout=120, blocking_timeout=10)
    if not lock.acquire():
        return 0
    try:
        pending = store.pending_key()
        while True:
            items = client.lrange(pending, 0, batch - 1)
            if not items:
                break
            _insert([i.decode() if isinstance(i, bytes) else i for i in items])
            client.ltrim(pending, len(items), -1)
            total += len(items)
            if len(items) < batch:
                break
    finally:
        lock.release()
    return total


def _insert(items: list[str]) -> None:
    rows = []
    for item in items:
        u = json.loads(item)
        at = datetime.fromisoformat(u["at"])
        rows.append(
            UsageRecord(
                call_id=u["call_id"],
                created_at=at,
                day=timezone.localdate(at),
                provider=u["provider"],
                model=u["model"],
                kind=u.get("kind", "chat"),
                route=u.get("route", ""),
                agent=u.get("agent", ""),
                customer=u.get("customer", ""),
                input_tokens=u["in"],
                output_tokens=u["out"],
                cost=Decimal(str(u["cost"])),
                price_known=u.get("known", True),
                latency_ms=u.get("latency_ms", 0),
            )
        )
    if rows:
        UsageRecord.objects.bulk_create(rows, ignore_conflicts=True, batch_size=500)


# --- alerts -----------------------------------------------------------------------------------------
async def _record_alerts_off_loop(alerts: list[tuple[BudgetConf, str, int, float]]) -> None:
    try:
        await run_db(record_alerts, alerts)
    except Exception:
        logger.exception("budget alert could not be recorded")


def record_alerts(alerts: list[tuple[BudgetConf, str, int, float]]) -> list[BudgetAlert]:
    """One BudgetAlert per (budget, period, threshold) — a repeat is skipped — each logged and sent to the
    supervisors through the task "monitoring.notify"."""
    created = []
    for budget, period, threshold, spent in alerts:
        message = (
            f"预算「{budget.name}」({budget.scope} {budget.target or '全部'}, {budget.period} {period}) "
            f"已用 {spent:.4f} / {budget.limit:.2f} 元，达到 {threshold}%；超额策略：{budget.policy}"
        )
        try:
            with transaction.atomic():
                alert = BudgetAlert.objects.create(
                    budget_id=budget.id,
                    period_key=period,
                    threshold=threshold,
                    used=Decimal(str(round(spent, 6))),
                    limit=Decimal(str(budget.limit)),
                    policy=budget.policy,
                    message=message,
                )
        except IntegrityError:
            continue  # already alerted this period (e.g. Redis was flushed)
        created.append(alert)
        logger.warning("budget alert: %s", message)
        _notify(f"预算告警 {threshold}%", message, "critical" if threshold >= 100 else "warning")
    return created


def _notify(title: str, body: str, severity: str) -> None:
    try:
        jobs.enqueue("monitoring.notify", title, body, severity=severity)
    except Exception:
        logger.exception("budget alert notification could not be enqueued")
