"""Costs: prices, usage tracking, budgets (reserve-then-settle), alerts and reports.

Hot path (called by the gateway for every LLM call, async, no database):
- `reserve(provider, model, agent, estimate)` before a call: one Lua script over the budgets that apply
  (global, provider, model, agent) admits the call only if spent + reserved + estimate ≤ limit for every
  enforcing budget, and reserves the estimate. Concurrent calls therefore never overshoot a limit by more
  than one call's (actual − estimated) cost. A refused reservation names the budget and its policy.
- `atrack(...)` after it: one Lua script counts the call once per call id (daily counters by total /
  provider / model / agent / customer / route), queues the usage for the database, settles the
  reservation (reserved −= estimate, spent += actual) and reports thresholds crossed for the first time
  this period; those become BudgetAlert rows + a log line + monitoring's notify().
The usage queue is written to UsageRecord in batches by `flush_usage()` (Celery beat every few seconds,
and kicked by the gateway when the queue grows); UsageRecord.call_id is unique and a batch leaves the
queue only after its rows are in, so a crash can neither lose nor double-count a call.

Sync entry points for other code: `track()`, `check_budget()`, `daily_report(date)`, `flush_usage()`.
"""

import json
import logging
import time
import uuid
from dataclasses import dataclass, field
from datetime import date, datetime
from decimal import Decimal

from django.conf import settings
from django.db import DatabaseError, IntegrityError, transaction
from django.db.models import Count, Sum
from django.utils import timezone

from apps.costs import metrics, store
from apps.llm_gateway import aredis
from apps.llm_gateway.dbwork import CachedLoad

logger = logging.getLogger(__name__)

_MONTHLY = "month"


# --- configuration: prices and budgets (cached in-process) ----------------------------------------
@dataclass(frozen=True)
class BudgetConf:
    id: int
    name: str
    scope: str
    target: str
    period: str
    limit: float
    thresholds: tuple[int, ...]
    policy: str

    def applies(self, provider: str, model: str, agent: str) -> bool:
        if self.scope == "global":
            return True
        if self.scope == "provider":
            return self.target == provider
        if self.scope == "model":
            return self.target in (model, f"{provider}/{model}")
        if self.scope == "agent":
            return bool(agent) and self.target == agent
        return False

    @property
    def enforcing(self) -> bool:
        return self.policy != "alert"


@dataclass
class CostConfig:
    prices: dict[tuple[str, str], tuple[float, float]] = field(default_factory=dict)
    by_model: dict[str, tuple[float, float]] = field(default_factory=dict)
    budgets: list[BudgetConf] = field(default_factory=list)


def _load() -> CostConfig:
    from apps.costs.models import Budget, ModelPrice

    config = CostConfig()
    try:
        today = timezone.localdate()
        for p in ModelPrice.objects.filter(effective_date__lte=today).order_by("effective_date"):
            price = (float(p.input_per_1k), float(p.output_per_1k))
            config.prices[(p.provider, p.model)] = price  # later effective dates overwrite earlier ones
            config.by_model[p.model] = price
        for b in Budget.objects.filter(enabled=True):
            config.budgets.append(
                BudgetConf(
                    b.id,
                    b.name,
                    b.scope,
                    b.target,
                    b.period,
                    float(b.limit),
                    tuple(sorted(int(t) for t in (b.thresholds or []))),
                    b.policy,
                )
            )
    except DatabaseError as exc:
        logger.debug("costs config: database unavailable (%s)", exc)
    return config


_cached = CachedLoad(_load, lambda: settings.LLM_CONFIG_TTL)


async def get_config() -> CostConfig:
    return await _cached.get()


def get_config_sync() -> CostConfig:
    return _cached.get_sync()


def invalidate(*args, **kwargs) -> None:
    _cached.invalidate()


def price_for(config: CostConfig, provider: str, model: str, kind: str = "") -> tuple[float, float, bool]:
    """(input, output) CNY per 1k tokens and whether the model is in the price table."""
    price = config.prices.get((provider, model)) or config.prices.get((kind, model)) or config.by_model.get(model)
    if price is None:
        return settings.COST_DEFAULT_INPUT_PER_1K, settings.COST_DEFAULT_OUTPUT_PER_1K, False
    return price[0], price[1], True


def cost_of(price_in: float, price_out: float, input_tokens: int, output_tokens: int) -> float:
    return round(price_in * input_tokens / 1000 + price_out * output_tokens / 1000, 8)


def who(user) -> tuple[str, str]:
    """(agent, customer) from the gateway's `user`: "agent-id", or {"agent": ..., "customer": ...}."""
    if not user:
        return "", ""
    if isinstance(user, dict):
        return str(user.get("agent") or ""), str(user.get("customer") or "")
    return str(user), ""


def period_key(period: str, now: datetime | None = None) -> str:
    local = timezone.localtime(now or timezone.now())
    return local.strftime("%Y%m" if period == _MONTHLY else "%Y%m%d")


def _budget_key(budget: BudgetConf, now: datetime | None = None) -> str:
    return aredis.key("budget", budget.id, period_key(budget.period, now))


# --- reserve / release ----------------------------------------------------------------------------
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
    keys = [_budget_key(b) for b in budgets]
    flags = [
        ("e" if b.enforcing and b.id not in exempt else "") + ("a" if 100 in b.thresholds else "") for b in budgets
    ]
    if aredis.client() is None:
        result = store.local.reserve(keys, estimate, [b.limit for b in budgets], flags)
    else:
        args: list = [estimate, store.BUDGET_TTL]
        for b, f in zip(budgets, flags, strict=True):
            args += [b.limit, f or "-"]
        result = await aredis.script(store.RESERVE_LUA, keys, args)
    if int(result[0]) == 0:
        return Reservation(keys, budgets, estimate)
    budget = budgets[int(result[0]) - 1]
    spent = float(result[1])
    metrics.budget_used(budget, spent)
    if int(result[2]):
        await _alerts([(budget, period_key(budget.period), 100, spent)])
    return Refusal(budget, spent)


async def release(reservation: Reservation) -> None:
    if not reservation.keys or reservation.estimate == 0:
        return
    redis = aredis.client()
    if redis is None:
        store.local.release(reservation.keys, reservation.estimate)
        return
    await aredis.script(store.RELEASE_LUA, reservation.keys, [reservation.estimate])


# --- tracking -------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Tracked:
    call_id: str
    cost: float
    price_known: bool
    duplicate: bool = False


_flush_state = {"at": 0.0, "running": False}
_unpriced_logged: set[tuple[str, str]] = set()  # warn once per process and model


@dataclass(frozen=True)
class UsageEvent:
    """One call to count: who, what it used, and its price (computed once, from the in-memory table)."""

    provider: str
    model: str
    input_tokens: int
    output_tokens: int
    user: object
    call_id: str
    kind: str
    route: str
    latency_ms: float
    reservation: Reservation | None
    cost: float
    known: bool
    price_in: float
    price_out: float


def _usage_event(
    config: CostConfig,
    provider,
    model,
    input_tokens,
    output_tokens,
    user,
    *,
    call_id,
    kind,
    route,
    latency_ms,
    reservation,
    provider_kind,
) -> UsageEvent:
    price_in, price_out, known = price_for(config, provider, model, provider_kind)
    cost = cost_of(price_in, price_out, input_tokens, output_tokens)
    return UsageEvent(
        provider,
        model,
        input_tokens,
        output_tokens,
        user,
        call_id,
        kind,
        route,
        latency_ms,
        reservation,
        cost,
        known,
        price_in,
        price_out,
    )


async def atrack(
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
    """Count one call (once per call id) and settle its budget reservation. Async; `track()` is the sync one."""
    config = await get_config()
    event = _usage_event(
        config,
        provider,
        model,
        input_tokens,
        output_tokens,
        user,
        call_id=call_id or uuid.uuid4().hex,
        kind=kind,
        route=route,
        latency_ms=latency_ms,
        reservation=reservation,
        provider_kind=provider_kind,
    )
    return await _commit(config, event)


_pending: set = set()


def track_soon(
    config: CostConfig,
    provider: str,
    model: str,
    input_tokens: int,
    output_tokens: int,
    user=None,
    *,
    call_id: str,
    kind: str = "chat",
    route: str = "",
    latency_ms: float = 0.0,
    reservation: Reservation | None = None,
    provider_kind: str = "",
) -> Tracked:
    """`atrack` for the gateway's hot path: the cost is computed here (price table in memory) and returned at
    once; the Redis part (counters, queue, budget settle, alerts) runs as a task on this loop right after,
    off the caller's latency. Until it runs, the call's reservation still counts against the budgets, so
    budgets stay exact. `drain()` waits for such tasks (tests, shutdown)."""
    import asyncio

    event = _usage_event(
        config,
        provider,
        model,
        input_tokens,
        output_tokens,
        user,
        call_id=call_id,
        kind=kind,
        route=route,
        latency_ms=latency_ms,
        reservation=reservation,
        provider_kind=provider_kind,
    )
    task = asyncio.get_running_loop().create_task(_commit_retrying(config, event))
    _pending.add(task)
    task.add_done_callback(_tracked_done)
    return Tracked(call_id, event.cost, event.known)


def _tracked_done(task) -> None:
    _pending.discard(task)
    if not task.cancelled() and task.exception() is not None:
        logger.error("usage tracking failed", exc_info=task.exception())


async def drain() -> None:
    """Wait for every tracking task of this event loop (see track_soon)."""
    import asyncio

    loop = asyncio.get_running_loop()
    while mine := [t for t in _pending if t.get_loop() is loop]:
        await asyncio.gather(*mine, return_exceptions=True)


async def _commit_retrying(config: CostConfig, event: UsageEvent) -> Tracked:
    """_commit, retried on Redis connection trouble (safe: the call id makes a repeat a no-op)."""
    import asyncio

    from redis.exceptions import ConnectionError as RedisConnectionError
    from redis.exceptions import TimeoutError as RedisTimeoutError

    for attempt in range(4):
        try:
            return await _commit(config, event)
        except (RedisConnectionError, RedisTimeoutError):
            if attempt == 3:
                raise
            await asyncio.sleep(0.2 * 2**attempt)
    raise AssertionError("unreachable")


async def _commit(config: CostConfig, event: UsageEvent) -> Tracked:
    provider, model, kind, route, call_id = event.provider, event.model, event.kind, event.route, event.call_id
    input_tokens, output_tokens, cost, known = event.input_tokens, event.output_tokens, event.cost, event.known
    reservation = event.reservation
    agent, customer = who(event.user)
    if reservation is None:  # a call made outside the gateway: settle against its budgets directly
        budgets = [b for b in config.budgets if b.applies(provider, model, agent)]
        reservation = Reservation([_budget_key(b) for b in budgets], budgets, 0.0)
    now = timezone.now()
    day = timezone.localtime(now).strftime("%Y%m%d")
    fields = ["total", f"provider:{provider}", f"model:{provider}/{model}", f"kind:{kind}"]
    if agent:
        fields.append(f"agent:{agent}")
    if customer:
        fields.append(f"customer:{customer}")
    if route:
        fields.append(f"route:{route}")
    if not known:
        fields.append("unpriced")
    payload = json.dumps(
        {
            "call_id": call_id,
            "at": now.isoformat(),
            "provider": provider,
            "model": model,
            "kind": kind,
            "route": route,
            "agent": agent,
            "customer": customer,
            "in": input_tokens,
            "out": output_tokens,
            "cost": cost,
            "known": known,
            "latency_ms": round(event.latency_ms, 2),
        },
        ensure_ascii=False,
    )
    thresholds = [",".join(str(t) for t in b.thresholds) or "-" for b in reservation.budgets]
    limits = [b.limit for b in reservation.budgets]
    redis = aredis.client()
    if redis is None:
        result = store.local.track(
            aredis.key("costs", "seen", call_id),
            aredis.key("costs", "day", day),
            cost,
            input_tokens,
            output_tokens,
            payload,
            reservation.estimate,
            fields,
            reservation.keys,
            limits,
            thresholds,
        )
    else:
        args: list = [
            cost,
            input_tokens,
            output_tokens,
            payload,
            reservation.estimate,
            store.BUDGET_TTL,
            len(fields),
            *fields,
            store.SEEN_TTL,
            store.DAY_TTL,
        ]
        for limit, th in zip(limits, thresholds, strict=True):
            args += [limit, th]
        result = await aredis.script(
            store.TRACK_LUA,
            [
                aredis.key("costs", "seen", call_id),
                aredis.key("costs", "day", day),
                aredis.key("costs", "pending"),
                *reservation.keys,
            ],
            args,
        )
    if int(result[0]) == -1:
        return Tracked(call_id, cost, known, duplicate=True)
    metrics.tracked(provider, model, kind, input_tokens, output_tokens, cost, known)
    if not known and (provider, model) not in _unpriced_logged:
        _unpriced_logged.add((provider, model))
        logger.warning(
            "no price for %s/%s: charged the default %.4f/%.4f CNY per 1k tokens (flagged in the usage records)",
            provider,
            model,
            event.price_in,
            event.price_out,
        )
    alerts = []
    for i, budget in enumerate(reservation.budgets):
        spent = float(result[1 + 2 * i])
        metrics.budget_used(budget, spent)
        for t in filter(None, str(result[2 + 2 * i]).split(",")):
            alerts.append((budget, period_key(budget.period, now), int(t), spent))
    if alerts:
        await _alerts(alerts)
    _maybe_flush(int(result[0]))
    return Tracked(call_id, cost, known)


def track(provider: str, model: str, input_tokens: int, output_tokens: int, user=None, **kwargs) -> Tracked:
    """Sync `atrack` (for code outside an event loop)."""
    from apps.core import aio

    return aio.run(atrack(provider, model, input_tokens, output_tokens, user, **kwargs))


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
    import asyncio

    from apps.llm_gateway.dbwork import run_db

    async def go():
        try:
            await run_db(flush_usage)
        except Exception:
            logger.exception("usage flush failed (the queue keeps the records; beat retries)")
        finally:
            _flush_state["running"] = False

    asyncio.get_running_loop().create_task(go())


# --- usage queue → database -----------------------------------------------------------------------
def flush_usage(batch: int = 1000) -> int:
    """Move queued usage into UsageRecord. Rows go in first (duplicates ignored by call id), then the batch
    leaves the queue, under a Redis lock so two flushers never trim each other's batch. Returns rows seen."""
    redis = aredis.sync_client()
    total = 0
    if redis is None:
        with store.local.lock:
            items, store.local.pending[:] = list(store.local.pending), []
        _insert(items)
        return len(items)
    lock = redis.lock(aredis.key("costs", "flush-lock"), timeout=120, blocking_timeout=10)
    if not lock.acquire():
        return 0
    try:
        pending = aredis.key("costs", "pending")
        while True:
            items = redis.lrange(pending, 0, batch - 1)
            if not items:
                break
            _insert([i.decode() if isinstance(i, bytes) else i for i in items])
            redis.ltrim(pending, len(items), -1)
            total += len(items)
            if len(items) < batch:
                break
    finally:
        lock.release()
    return total


def _insert(items: list[str]) -> None:
    from apps.costs.models import UsageRecord

    rows = []
    for item in items:
        u = json.loads(item)
        at = datetime.fromisoformat(u["at"])
        rows.append(
            UsageRecord(
                call_id=u["call_id"],
                created_at=at,
                day=timezone.localtime(at).date(),
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


# --- alerts ---------------------------------------------------------------------------------------
async def _alerts(alerts: list[tuple[BudgetConf, str, int, float]]) -> None:
    from apps.llm_gateway.dbwork import run_db

    try:
        await run_db(record_alerts, alerts)
    except Exception:
        logger.exception("budget alert could not be recorded")


def _notifier():
    """monitoring's notify(title, body, severity) when that app offers it (the one guarded import)."""
    try:
        from apps.monitoring.services import notify
    except ImportError:
        return None
    return notify


def record_alerts(alerts: list[tuple[BudgetConf, str, int, float]]) -> list:
    from apps.costs.models import BudgetAlert

    created = []
    for budget, pkey, threshold, spent in alerts:
        message = (
            f"预算「{budget.name}」({budget.scope} {budget.target or '全部'}, {budget.period} {pkey}) "
            f"已用 {spent:.4f} / {budget.limit:.2f} 元，达到 {threshold}%；超额策略：{budget.policy}"
        )
        try:
            with transaction.atomic():
                alert = BudgetAlert.objects.create(
                    budget_id=budget.id,
                    period_key=pkey,
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
        notify = _notifier()
        if notify is not None:
            try:
                notify(f"预算告警 {threshold}%", message, severity="critical" if threshold >= 100 else "warning")
            except Exception:
                logger.exception("budget alert notification failed")
    return created


# --- reading: budget status and reports -----------------------------------------------------------
@dataclass(frozen=True)
class BudgetStatus:
    allowed: bool
    policy: str
    used_ratio: float
    used: float = 0.0
    limit: float | None = None
    budget: str = ""


def _spent_now(budgets: list[BudgetConf]) -> list[tuple[float, float]]:
    """(spent, reserved) for each budget in its current period."""
    keys = [_budget_key(b) for b in budgets]
    redis = aredis.sync_client()
    if redis is None:
        with store.local.lock:
            return [
                (store.local.hashes.get(k, {}).get("spent", 0.0), store.local.hashes.get(k, {}).get("reserved", 0.0))
                for k in keys
            ]
    pipe = redis.pipeline(transaction=False)
    for k in keys:
        pipe.hmget(k, "spent", "reserved")
    return [(float(s or 0), float(r or 0)) for s, r in pipe.execute()]


def check_budget(provider: str = "", model: str = "", agent: str = "", estimate: float = 0.0) -> BudgetStatus:
    """Would a call (of `estimate` CNY) for this provider / model / agent be admitted now? Without
    arguments: the global budgets. Read-only; the gateway itself reserves atomically."""
    budgets = [
        b
        for b in get_config_sync().budgets
        if (b.applies(provider, model, agent) if (provider or model or agent) else b.scope == "global")
    ]
    if not budgets:
        return BudgetStatus(True, "", 0.0)
    worst = None
    for budget, (spent, reserved) in zip(budgets, _spent_now(budgets), strict=True):
        ratio = spent / budget.limit if budget.limit > 0 else 0.0
        refused = budget.enforcing and (
            spent + reserved + estimate > budget.limit + store.EPSILON or spent >= budget.limit - store.EPSILON
        )
        status = BudgetStatus(not refused, budget.policy, ratio, spent, budget.limit, budget.name)
        if (
            worst is None
            or (not status.allowed and worst.allowed)
            or (status.allowed == worst.allowed and ratio > worst.used_ratio)
        ):
            worst = status
    return worst


def _day_counters(day: date) -> dict[str, float] | None:
    key = aredis.key("costs", "day", day.strftime("%Y%m%d"))
    redis = aredis.sync_client()
    if redis is None:
        with store.local.lock:
            raw = dict(store.local.hashes.get(key, {}))
    else:
        raw = {(k.decode() if isinstance(k, bytes) else k): float(v) for k, v in redis.hgetall(key).items()}
    return raw or None


def _db_counters(day: date) -> dict[str, float]:
    from apps.costs.models import UsageRecord

    out: dict[str, float] = {}
    qs = UsageRecord.objects.filter(day=day)
    groups = {
        "total": [],
        "provider": ["provider"],
        "model": ["provider", "model"],
        "agent": ["agent"],
        "customer": ["customer"],
        "route": ["route"],
    }
    for name, fields in groups.items():
        rows = (
            qs.values(*fields).annotate(
                cost=Sum("cost"), calls=Count("id"), tin=Sum("input_tokens"), tout=Sum("output_tokens")
            )
            if fields
            else [qs.aggregate(cost=Sum("cost"), calls=Count("id"), tin=Sum("input_tokens"), tout=Sum("output_tokens"))]
        )
        for row in rows:
            if not row["calls"]:
                continue
            label = name if not fields else f"{name}:" + "/".join(str(row[f]) for f in fields)
            if fields and not all(row[f] for f in fields):
                continue
            out[f"{label}:cost"] = float(row["cost"] or 0)
            out[f"{label}:calls"] = row["calls"]
            out[f"{label}:in"] = row["tin"] or 0
            out[f"{label}:out"] = row["tout"] or 0
    unpriced = qs.filter(price_known=False).aggregate(cost=Sum("cost"), calls=Count("id"))
    if unpriced["calls"]:
        out["unpriced:cost"], out["unpriced:calls"] = float(unpriced["cost"] or 0), unpriced["calls"]
    return out


def daily_report(day: date | None = None) -> dict:
    """Cost, calls, average cost per call, tokens, budgets used %, per provider / model / agent / customer /
    route for one day (default today). Reads the Redis day counters, or the usage records when Redis no
    longer has that day."""
    day = day or timezone.localdate()
    counters = _day_counters(day)
    source = "redis"
    if counters is None:
        source = "database"
        flush_usage()
        counters = _db_counters(day)

    def group(prefix: str) -> list[dict]:
        names = sorted({k[len(prefix) + 1 :].rsplit(":", 1)[0] for k in counters if k.startswith(prefix + ":")})
        rows = []
        for name in names:
            cost, calls = counters.get(f"{prefix}:{name}:cost", 0.0), int(counters.get(f"{prefix}:{name}:calls", 0))
            rows.append(
                {
                    "name": name,
                    "cost": round(cost, 6),
                    "calls": calls,
                    "avg_cost": round(cost / calls, 6) if calls else 0.0,
                    "input_tokens": int(counters.get(f"{prefix}:{name}:in", 0)),
                    "output_tokens": int(counters.get(f"{prefix}:{name}:out", 0)),
                }
            )
        return sorted(rows, key=lambda r: -r["cost"])

    total, calls = counters.get("total:cost", 0.0), int(counters.get("total:calls", 0))
    budgets = []
    config = get_config_sync()
    if day == timezone.localdate() and config.budgets:
        for budget, (spent, reserved) in zip(config.budgets, _spent_now(config.budgets), strict=True):
            budgets.append(
                {
                    "name": budget.name,
                    "scope": budget.scope,
                    "target": budget.target,
                    "period": budget.period,
                    "limit": budget.limit,
                    "used": round(spent, 6),
                    "used_pct": round(100 * spent / budget.limit, 2) if budget.limit else 0.0,
                    "reserved": round(reserved, 6),
                    "policy": budget.policy,
                }
            )
    return {
        "date": day.isoformat(),
        "source": source,
        "total_cost": round(total, 6),
        "calls": calls,
        "avg_cost": round(total / calls, 6) if calls else 0.0,
        "input_tokens": int(counters.get("total:in", 0)),
        "output_tokens": int(counters.get("total:out", 0)),
        "unpriced_calls": int(counters.get("unpriced:calls", 0)),
        "unpriced_cost": round(counters.get("unpriced:cost", 0.0), 6),
        "by_provider": group("provider"),
        "by_model": group("model"),
        "by_agent": group("agent"),
        "by_customer": group("customer"),
        "by_route": group("route"),
        "budgets": budgets,
    }
