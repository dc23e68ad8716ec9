"""Agent registration, credentials, enabling/disabling, heartbeats and presence.

Every write that changes which agents are enabled bumps `auth.ACTIVE_AGENTS`, so token checks in every
process follow it.
"""

from django.conf import settings
from django.db import transaction
from django.db.models import QuerySet
from django.utils import timezone

from apps.agents import auth, heartbeat
from apps.agents.models import Agent


def create_agent(name: str, *, agent_id: str | None = None, secret: str | None = None, **fields) -> tuple[Agent, str]:
    """Returns the agent and its secret in clear (shown once, stored hashed)."""
    secret = secret or auth.new_secret()
    agent = Agent(name=name, heartbeat_interval=settings.AGENT_HEARTBEAT_INTERVAL, **fields)
    if agent_id:
        agent.id = agent_id
    agent.set_secret(secret)
    agent.save(force_insert=True)
    auth.ACTIVE_AGENTS.bump()
    return agent, secret


def reset_secret(agent: Agent) -> str:
    """A new secret for `agent` (returned in clear once, stored hashed); the old one stops working."""
    secret = auth.new_secret()
    agent.set_secret(secret)
    agent.save(update_fields=["secret_hash"])
    return secret


def save_agent(agent: Agent) -> None:
    """Admin's edit of an agent (name, enabled, heartbeat interval, …)."""
    agent.save()
    auth.ACTIVE_AGENTS.bump()


def delete_agents(agents: QuerySet) -> int:
    with transaction.atomic():
        deleted, _ = agents.delete()
        auth.ACTIVE_AGENTS.bump()
    return deleted


def record_heartbeat(agent_id: str, received) -> dict:
    """Latest state + presence from a heartbeat as received (decoded JSON), validated here for REST and WebSocket
    alike (`heartbeat.Invalid`, `TooLarge`). degraded when WeChat is not logged in or sends keep failing."""
    data = heartbeat.validate(received)
    now = timezone.now()
    presence = Agent.Presence.ONLINE
    if data.get("wx_online") is False or data.get("status") == "degraded":
        presence = Agent.Presence.DEGRADED
    updates = {"last_seen": now, "last_heartbeat_at": now, "last_heartbeat": data, "reported_presence": presence}
    for field in ("agent_version", "driver", "wechat_account"):
        if isinstance(data.get(field), str) and data[field]:
            updates[field] = data[field]
    Agent.objects.filter(pk=agent_id).update(**updates)
    interval = Agent.objects.filter(pk=agent_id).values_list("heartbeat_interval", flat=True).first()
    return {"presence": presence, "server_time": now.isoformat(), "interval": interval or 30}


def touch(agent_id: str, presence: str | None = None) -> None:
    updates = {"last_seen": timezone.now()}
    if presence:
        updates["reported_presence"] = presence
    Agent.objects.filter(pk=agent_id).update(**updates)
