"""Prometheus metrics of the LLM gateway (merged across processes by monitoring's /metrics)."""

from prometheus_client import Counter, Gauge, Histogram

CALLS = Counter("wxcs_llm_calls_total", "LLM attempts by outcome", ["provider", "model", "status"])
DURATION = Histogram(
    "wxcs_llm_call_duration_seconds",
    "Duration of successful LLM calls",
    ["provider", "model"],
    buckets=(0.05, 0.1, 0.25, 0.5, 1, 2, 3, 5, 8, 13, 21, 34, 60),
)
TOKENS = Counter("wxcs_llm_tokens_total", "LLM tokens", ["provider", "model", "type"])
COST = Counter("wxcs_llm_cost_cny_total", "LLM cost (CNY)", ["provider", "model"])
FALLBACKS = Counter("wxcs_llm_fallbacks_total", "Moves past a route entry (or to offline)", ["route", "reason"])
OFFLINE = Counter("wxcs_llm_offline_answers_total", "Answers by the offline provider", ["reason"])
CIRCUIT = Gauge(
    "wxcs_llm_circuit_state",
    "Circuit state: 0 closed, 1 half-open, 2 open",
    ["provider", "model"],
    multiprocess_mode="mostrecent",
)
