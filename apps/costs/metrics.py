"""Prometheus metrics of the cost tracker (merged across processes by monitoring's /metrics)."""

from prometheus_client import Counter, Gauge

BUDGET_USED = Gauge(
    "wxcs_budget_used_ratio",
    "Spent / limit of each budget in its current period",
    ["budget", "scope", "target", "period"],
    multiprocess_mode="mostrecent",
)
COST = Counter("wxcs_cost_cny_total", "Tracked LLM cost (CNY)", ["provider", "model", "kind"])
CALLS = Counter("wxcs_cost_tracked_calls_total", "Tracked LLM calls", ["provider", "model", "kind", "priced"])
TOKENS = Counter("wxcs_cost_tokens_total", "Tracked LLM tokens", ["provider", "model", "type"])


def budget_used(budget, spent: float) -> None:
    if budget.limit > 0:
        BUDGET_USED.labels(budget.name, budget.scope, budget.target, budget.period).set(spent / budget.limit)


def tracked(
    provider: str, model: str, kind: str, input_tokens: int, output_tokens: int, cost: float, known: bool
) -> None:
    COST.labels(provider, model, kind).inc(cost)
    CALLS.labels(provider, model, kind, "yes" if known else "no").inc()
    TOKENS.labels(provider, model, "input").inc(input_tokens)
    TOKENS.labels(provider, model, "output").inc(output_tokens)
