"""Reads of the agents app for other apps (monitoring)."""

import math

from apps.agents.heartbeat import COUNT_MAX
from apps.agents.models import Agent


def heartbeat_count(heartbeat, field: str) -> int:
    """A counter from a stored heartbeat, 0 when absent or not a sane number: rows stored before heartbeats were
    validated (apps.agents.heartbeat) may hold anything, and must not break a page or /metrics."""
    value = heartbeat.get(field) if isinstance(heartbeat, dict) else None
    if isinstance(value, bool) or not isinstance(value, int | float):
        return 0
    try:
        number = float(value)
    except OverflowError:
        return 0
    return int(number) if math.isfinite(number) and 0 <= number <= COUNT_MAX else 0


def enabled_agents() -> list[dict]:
    """Every enabled agent: id, name, presence (online / degraded / offline) and the offline-queue size from its
    last heartbeat. An offline agent's queue size is 0: its last report is no current backlog (the queue it had
    may have been flushed since), and its being offline is what the offline alert says."""
    readings = []
    for agent in Agent.objects.filter(is_active=True).only(
        "id", "name", "last_seen", "reported_presence", "heartbeat_interval", "last_heartbeat"
    ):
        presence = str(agent.presence)
        queue_size = heartbeat_count(agent.last_heartbeat, "queue_size") if presence != Agent.Presence.OFFLINE else 0
        readings.append({"id": agent.id, "name": agent.name, "presence": presence, "queue_size": queue_size})
    return readings


def heartbeat_interval(agent_id: str) -> int:
    """Seconds between the agent's heartbeats (told to it in the `hello` frame)."""
    interval = Agent.objects.filter(pk=agent_id).values_list("heartbeat_interval", flat=True).first()
    return interval or 30
