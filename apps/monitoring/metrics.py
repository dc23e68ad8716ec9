"""Product metrics owned by monitoring, and the /metrics registry.

Cross-process: every process (Daphne, Celery worker, beat) writes its samples to the prometheus_client
multiprocess directory (settings.PROMETHEUS_MULTIPROC_DIR); /metrics merges them with
`MultiProcessCollector`. A Gauge defined anywhere in the project must say how to merge:
`Gauge(..., multiprocess_mode="livesum" | "max" | "mostrecent" | ...)`.

Readings that live in the database (messages by status, active agents, offline queues, handoffs,
budget, circuits) are not counted in-process at all: `ProductCollector` reads them at scrape time.
"""

import time

from django.conf import settings
from django.core.cache import cache
from django.utils import timezone
from prometheus_client import REGISTRY, CollectorRegistry, Counter
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.multiprocess import MultiProcessCollector

CACHE_REQUESTS = Counter(
    "wxcs_cache_requests_total", "Cache lookups by cache type and result (hit / miss)", ["cache", "result"]
)
ALERT_NOTIFICATIONS = Counter(
    "wxcs_alert_notifications_total", "Alert notifications sent by channel kind and outcome", ["channel", "outcome"]
)
CACHE_STATS_TTL = 3 * 86400


def cache_hit(cache_type: str, hit: bool) -> None:
    """Count one cache lookup (e.g. cache_hit("memory", True)); feeds /metrics and the dashboard's hit rate."""
    result = "hit" if hit else "miss"
    CACHE_REQUESTS.labels(cache=cache_type, result=result).inc()
    key = _cache_stats_key(timezone.localdate())
    try:
        cache.incr(f"{key}:{result}")
    except ValueError:
        cache.add(f"{key}:{result}", 0, CACHE_STATS_TTL)
        cache.incr(f"{key}:{result}")


def cache_hit_counts(day=None) -> tuple[int, int]:
    key = _cache_stats_key(day or timezone.localdate())
    values = cache.get_many([f"{key}:hit", f"{key}:miss"])
    return int(values.get(f"{key}:hit") or 0), int(values.get(f"{key}:miss") or 0)


def _cache_stats_key(day) -> str:
    return f"monitoring:cache:{day:%Y%m%d}"


class ProductCollector:
    """Database-backed readings, taken when Prometheus scrapes."""

    def collect(self):
        from apps.monitoring import sources

        messages = GaugeMetricFamily("wxcs_messages", "Inbound messages by status", labels=["status"])
        for status, n in sources.message_status_counts().items():
            messages.add_metric([status], n)
        yield messages

        replies = GaugeMetricFamily("wxcs_replies", "Replies by status", labels=["status"])
        for status, n in sources.reply_status_counts().items():
            replies.add_metric([status], n)
        yield replies

        yield GaugeMetricFamily(
            "wxcs_conversations_taken_over", "Conversations handed to a human now", value=sources.handoffs()
        )

        agents = sources.agents()
        yield GaugeMetricFamily(
            "wxcs_agents_active",
            "Enabled agents online now with WeChat logged in",
            value=sum(1 for agent in agents if agent["presence"] == "online"),
        )
        yield GaugeMetricFamily(
            "wxcs_agents_degraded",
            "Enabled agents connected but degraded (WeChat logged out, sends failing)",
            value=sum(1 for agent in agents if agent["presence"] == "degraded"),
        )
        queue = GaugeMetricFamily(
            "wxcs_agent_offline_queue_size",
            "Offline queue size from the last heartbeat (0 while offline)",
            labels=["agent"],
        )
        for agent in agents:
            queue.add_metric([agent["id"]], agent["queue_size"])
        yield queue

        yield from _stuck_reply_metrics(sources.stuck_replies())

        budget = sources.budget()
        if budget["used_ratio"] is not None:
            yield GaugeMetricFamily(
                "wxcs_budget_used_ratio_current", "Global budget used ratio (0..1+)", value=budget["used_ratio"]
            )
        circuits = GaugeMetricFamily(
            "wxcs_llm_circuit_open", "1 when the (provider, model) circuit is open", labels=["target", "state"]
        )
        for target, state in sources.circuit_states().items():
            circuits.add_metric([target, state], 1 if state == "open" else 0)
        yield circuits

        hits, misses = cache_hit_counts()
        yield GaugeMetricFamily(
            "wxcs_cache_hit_ratio_today",
            "Cache hit ratio today (all cache types)",
            value=hits / (hits + misses) if hits + misses else 0,
        )
        yield GaugeMetricFamily(
            "wxcs_metrics_scrape_timestamp_seconds", "When this exposition was produced", value=time.time()
        )


def _stuck_reply_metrics(stuck: list[dict]):
    count = GaugeMetricFamily(
        "wxcs_outbox_stuck_replies",
        "Unacked replies of a connected agent older than OUTBOX_REDELIVER_AFTER (pushed again by beat)",
        labels=["agent"],
    )
    oldest = GaugeMetricFamily(
        "wxcs_outbox_stuck_oldest_seconds", "Age of a connected agent's oldest stuck unacked reply", labels=["agent"]
    )
    for row in stuck:
        count.add_metric([row["agent_id"]], row["count"])
        oldest.add_metric([row["agent_id"]], row["oldest_seconds"])
    yield count
    yield oldest


class _Chain:
    def __init__(self, *collectors):
        self.collectors = collectors

    def collect(self):
        for collector in self.collectors:
            yield from collector.collect()


def exposition_registry():
    """What /metrics exposes: all processes' samples (multiprocess dir) or this process's, plus DB readings."""
    if settings.PROMETHEUS_MULTIPROC_DIR:
        registry = CollectorRegistry()
        MultiProcessCollector(registry, path=settings.PROMETHEUS_MULTIPROC_DIR)
        return _Chain(registry, ProductCollector())
    return _Chain(REGISTRY, ProductCollector())
