"""Agent registration, credentials, enabling/disabling, heartbeats and presence.

Every write that changes which agents are enabled, or their secret versions, bumps `auth.ACTIVE_AGENTS`, so
token checks in every process follow it; disabling, deleting or rotating also closes the agent's open
WebSockets once the change commits (`close_sockets`: an event to the agent's socket group, on any process).
"""

import logging
import time

from channels.layers import get_channel_layer
from django.conf import settings
from django.db import transaction
from django.db.models import F, QuerySet
from django.utils import timezone
from redis.exceptions import RedisError

from apps.agents import auth, heartbeat
from apps.agents.models import Agent, RefreshTokenFamily
from apps.core import aio, redis

logger = logging.getLogger("wxcs.agents")

# WebSocket close codes of /ws/agent/ (apps/messages/PROTOCOL.md, "Credentials: close codes and login limits").
CLOSE_CODES = {
    "unauthorized": 4401,  # bad or missing token at connect, or no auth frame in time: log in again
    "agent_disabled": 4403,  # disabled or deleted in admin: stop until re-enabled
    "credentials_revoked": 4409,  # the secret was rotated: every token is void, log in with the (new) secret
    "token_expired": 4419,  # the access token expired on the open socket: refresh, reconnect
    "replaced": 4408,  # a newer socket of the same installation took over (apps/agents/sockets.py)
    "already_connected": 4423,  # another installation of the agent holds its socket: stand by, retry slowly
}


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


def socket_group(agent_id: str) -> str:
    """The channel-layer group of the agent's open WebSockets (on every web process)."""
    return f"agent.{agent_id}"


def rotate_secret(agent: Agent) -> str:
    """A new secret for `agent` (returned in clear once, stored hashed). The old secret and every access and
    refresh token issued before stop working, and the agent's open sockets are closed (4409)."""
    secret = auth.new_secret()
    with transaction.atomic():
        agent.set_secret(secret)
        Agent.objects.filter(pk=agent.pk).update(secret_hash=agent.secret_hash, secret_version=F("secret_version") + 1)
        agent.refresh_from_db(fields=["secret_version"])
        RefreshTokenFamily.objects.filter(agent=agent, revoked_at__isnull=True).update(
            revoked_at=timezone.now(), revoked_reason="secret_rotated"
        )
        auth.ACTIVE_AGENTS.bump()
        close_sockets(agent.pk, "credentials_revoked", "the agent's secret was rotated")
    logger.info("agent %s: secret rotated (version %s); its tokens are revoked", agent.pk, agent.secret_version)
    return secret


def save_agent(agent: Agent) -> None:
    """Admin's edit of an agent (name, enabled, heartbeat interval, …); disabling it closes its sockets."""
    with transaction.atomic():
        was_active = Agent.objects.filter(pk=agent.pk).values_list("is_active", flat=True).first()
        agent.save()
        auth.ACTIVE_AGENTS.bump()
        if was_active and not agent.is_active:
            close_sockets(agent.pk, "agent_disabled", "the agent was disabled")


def delete_agents(agents: QuerySet) -> int:
    with transaction.atomic():
        agent_ids = list(agents.values_list("pk", flat=True))
        deleted, _ = agents.delete()
        auth.ACTIVE_AGENTS.bump()
        for agent_id in agent_ids:
            close_sockets(agent_id, "agent_disabled", "the agent was deleted")
    return deleted


def close_sockets(agent_id: str, code: str, detail: str) -> None:
    """Once the transaction commits: every open WebSocket of the agent gets an error frame `code` and is closed
    with CLOSE_CODES[code] (the consumer's `agent_revoke`)."""
    event = {"type": "agent.revoke", "code": code, "detail": detail}

    def send() -> None:
        try:
            aio.run(get_channel_layer().group_send(socket_group(agent_id), event), timeout=10)
        except Exception:  # the periodic re-check on the socket closes it within AGENT_SOCKET_RECHECK_SECONDS
            logger.warning("could not tell agent %s's sockets to close", agent_id, exc_info=True)

    transaction.on_commit(send)


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


# --- presence of WebSocket agents ---------------------------------------------------------------------
# The agent's open sockets, on every web process: a Redis sorted set of socket ids scored by the time until
# which each may be open at most (its access token's expiry: the server closes it then, 4419). A web process
# killed outright cannot remove its sockets; their entries lapse at that time instead of counting for ever.


def _sockets_key(agent_id: str) -> str:
    return redis.key("agents", "sockets", agent_id)


def socket_opened(agent_id: str, socket_id: str, open_until: float) -> None:
    """An authenticated socket of the agent: counted among its open sockets, and the agent is online. Not
    counted when Redis fails (the login goes on): its close then leaves presence to the heartbeat timeout."""
    key = _sockets_key(agent_id)
    try:
        with redis.client().pipeline() as pipe:
            pipe.zadd(key, {socket_id: open_until})
            pipe.expire(key, settings.AGENT_ACCESS_TOKEN_TTL + 1)  # no member can be open longer than that
            pipe.execute()
    except RedisError:
        logger.warning("agent %s: socket not counted for presence", agent_id, exc_info=True)
    touch(agent_id, Agent.Presence.ONLINE)


def socket_closed(agent_id: str, socket_id: str) -> bool:
    """The socket closed: when it was the agent's last open one, the agent is offline now (not 3 heartbeat
    intervals later). True when it went offline. A socket that opened meanwhile set `last_seen` after
    `closed_at`, so the conditional update leaves that agent online; a socket that was not counted (closed
    twice, or its entry lost with Redis's data) changes nothing: the heartbeat timeout decides then."""
    closed_at = timezone.now()
    key = _sockets_key(agent_id)
    with redis.client().pipeline() as pipe:  # MULTI: the removal and the count see the same set
        pipe.zrem(key, socket_id)
        pipe.zremrangebyscore(key, "-inf", time.time())
        pipe.zcard(key)
        removed, _, still_open = pipe.execute()
    if not removed:
        return False
    if still_open:
        touch(agent_id)
        return False
    return bool(
        Agent.objects.filter(pk=agent_id, last_seen__lte=closed_at).update(
            last_seen=closed_at, reported_presence=Agent.Presence.OFFLINE
        )
    )
