"""Reads of the agents app for other apps (monitoring)."""

from apps.agents.models import Agent


def enabled_agents() -> list[dict]:
    """Every enabled agent: id, name, presence (online / degraded / offline) and the offline-queue size
    from its last heartbeat."""
    return [
        {
            "id": agent.id,
            "name": agent.name,
            "presence": str(agent.presence),
            "queue_size": int((agent.last_heartbeat or {}).get("queue_size") or 0),
        }
        for agent in Agent.objects.filter(is_active=True).only(
            "id", "name", "last_seen", "reported_presence", "heartbeat_interval", "last_heartbeat"
        )
    ]


def heartbeat_interval(agent_id: str) -> int:
    """Seconds between the agent's heartbeats (told to it in the `hello` frame)."""
    interval = Agent.objects.filter(pk=agent_id).values_list("heartbeat_interval", flat=True).first()
    return interval or 30
