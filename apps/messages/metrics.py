"""Prometheus metrics of the message pipeline (exposed on /metrics by the monitoring app)."""

from prometheus_client import Counter, Histogram

DECISION_LATENCY = Histogram(
    "wxcs_decision_latency_seconds",
    "Time from message received to reply decided",
    buckets=(0.05, 0.1, 0.25, 0.5, 1, 2, 3, 5, 8, 13, 20, 30, 60),
)
HANDOFFS = Counter("wxcs_handoffs_total", "Conversations handed to a human", ["reason"])


def observe_decision(seconds: float) -> None:
    DECISION_LATENCY.observe(seconds)


def handoff(reason: str = "") -> None:
    HANDOFFS.labels(reason=reason or "other").inc()
