"""Reads of costs: budget status and the daily report (sync: admin, commands, monitoring).

Budgets are read from the database (the current truth, not a process's cached copy), their spending
from the Redis counters the gateway keeps.
"""

from dataclasses import dataclass
from datetime import date

from django.db.models import Count, Sum
from django.utils import timezone

from apps.core import redis
from apps.costs import store
from apps.costs.config import BudgetConf, enabled_budgets
from apps.costs.models import UsageRecord


@dataclass(frozen=True)
class BudgetStatus:
    allowed: bool
    policy: str
    used_ratio: float
    used: float = 0.0
    limit: float | None = None
    budget: str = ""


def budget_spending(budgets: list[BudgetConf]) -> list[tuple[float, float]]:
    """(spent, reserved) CNY of each budget in its current period."""
    pipe = redis.client().pipeline(transaction=False)
    for budget in budgets:
        pipe.hmget(store.budget_key(budget), "spent", "reserved")
    return [(float(spent or 0), float(reserved or 0)) for spent, reserved in pipe.execute()]


def check_budget(provider: str = "", model: str = "", agent: str = "", estimate: float = 0.0) -> BudgetStatus:
    """Would a call (of `estimate` CNY) for this provider / model / agent be admitted now? Without
    arguments: the global budgets. The most constraining budget's status; read-only (the gateway itself
    reserves atomically)."""
    scoped = bool(provider or model or agent)
    budgets = [b for b in enabled_budgets() if (b.applies(provider, model, agent) if scoped else b.scope == "global")]
    if not budgets:
        return BudgetStatus(True, "", 0.0)
    worst = None
    for budget, (spent, reserved) in zip(budgets, budget_spending(budgets), strict=True):
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


# --- the daily report -------------------------------------------------------------------------------
GROUPS = {
    "provider": ["provider"],
    "model": ["provider", "model"],
    "agent": ["agent"],
    "customer": ["customer"],
    "route": ["route"],
}


def daily_report(day: date | None = None) -> dict:
    """Cost, calls, average cost per call, tokens, budgets used %, per provider / model / agent / customer /
    route for one day (default today). Reads the Redis day counters, or the usage records when Redis no
    longer has that day."""
    day = day or timezone.localdate()
    counters = _redis_counters(day)
    source = "redis"
    if counters is None:
        source, counters = "database", _database_counters(day)
    total, calls = counters.get("total:cost", 0.0), int(counters.get("total:calls", 0))
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
        **{f"by_{prefix}": _group_rows(counters, prefix) for prefix in GROUPS},
        "budgets": _budget_rows() if day == timezone.localdate() else [],
    }


def _redis_counters(day: date) -> dict[str, float] | None:
    raw = redis.client().hgetall(store.day_key(day.strftime("%Y%m%d")))
    return {(k.decode() if isinstance(k, bytes) else k): float(v) for k, v in raw.items()} or None


def _database_counters(day: date) -> dict[str, float]:
    """The same counters as Redis keeps, summed from the day's usage records."""
    usage = UsageRecord.objects.filter(day=day)
    sums = {"cost": Sum("cost"), "calls": Count("id"), "in": Sum("input_tokens"), "out": Sum("output_tokens")}
    out: dict[str, float] = {}

    def add(label: str, row: dict) -> None:
        if row["calls"]:
            out.update({f"{label}:{name}": float(row[name] or 0) for name in sums})

    add("total", usage.aggregate(**sums))
    for prefix, fields in GROUPS.items():
        for row in usage.values(*fields).annotate(**sums):
            if all(row[f] for f in fields):
                add(f"{prefix}:" + "/".join(str(row[f]) for f in fields), row)
    add("unpriced", usage.filter(price_known=False).aggregate(**sums))
    return out


def _group_rows(counters: dict[str, float], prefix: str) -> list[dict]:
    names = {k[len(prefix) + 1 :].rsplit(":", 1)[0] for k in counters if k.startswith(prefix + ":")}
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
    return sorted(rows, key=lambda r: (-r["cost"], r["name"]))


def _budget_rows() -> list[dict]:
    budgets = enabled_budgets()
    if not budgets:
        return []
    return [
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
        for budget, (spent, reserved) in zip(budgets, budget_spending(budgets), strict=True)
    ]
