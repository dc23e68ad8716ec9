"""One sending socket per agent: the "current socket" lease in Redis, shared by every web process.

A socket that authenticates claims the agent's lease (`agent-socket:<agent id>` = "generation|installation|
channel", with a TTL its consumer renews). The claim is refused while another *installation* of the agent (another
state directory: a copied folder, a second PC) holds it — that process may be sending replies this very moment, and
only the installation that shares the sent-replies ledger may safely be handed them again. A socket of the *same*
installation takes over at once (the old socket is a half-dead leftover of a network blip or a restart): every
older socket of the agent is told to close by an `agent.replaced` event carrying the new generation.
"""

import re
from dataclasses import dataclass

from django.conf import settings

from apps.core import redis

INSTANCE_HEADER = b"x-agent-instance"
_INSTANCE = re.compile(r"[A-Za-z0-9_-]{8,64}")
UNNAMED = "unnamed"  # shorter than a valid name: no agent can claim to be it

_CLAIM = """
local current = redis.call('GET', KEYS[1])
if current and string.match(current, '^[^|]*|([^|]*)|') ~= ARGV[1] then return 0 end
local generation = redis.call('INCR', KEYS[2])
redis.call('SET', KEYS[1], generation .. '|' .. ARGV[1] .. '|' .. ARGV[2], 'PX', ARGV[3])
return generation
"""
# Renew our lease; one that expired meanwhile (a Redis outage longer than the TTL) is taken back if free.
_RENEW = """
local current = redis.call('GET', KEYS[1])
if current == ARGV[1] then return redis.call('PEXPIRE', KEYS[1], ARGV[2]) end
if not current then redis.call('SET', KEYS[1], ARGV[1], 'PX', ARGV[2]) return 1 end
return 0
"""
_RELEASE = """
if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('DEL', KEYS[1]) end
return 0
"""


@dataclass(frozen=True)
class Lease:
    agent_id: str
    generation: int
    value: str


def installation(headers: dict[bytes, bytes]) -> str:
    """The agent installation a handshake names (`X-Agent-Instance`). Sockets without a valid one (an agent that
    predates the header) count as one installation, "unnamed": the newest takes over, as such an agent reconnects."""
    raw = (headers.get(INSTANCE_HEADER) or b"").decode("latin-1")
    return raw if _INSTANCE.fullmatch(raw) else UNNAMED


def _keys(agent_id: str) -> list[str]:
    return [redis.key("agent-socket", agent_id), redis.key("agent-socket-generation", agent_id)]


def _ttl_ms() -> int:
    return int(settings.AGENT_SOCKET_LEASE_SECONDS * 1000)


async def claim(agent_id: str, instance: str, channel_name: str) -> Lease | None:
    """The lease for this socket, or None while a socket of another installation holds it."""
    generation = int(await redis.script(_CLAIM, _keys(agent_id), [instance, channel_name, _ttl_ms()]))
    if not generation:
        return None
    return Lease(agent_id, generation, f"{generation}|{instance}|{channel_name}")


async def renew(lease: Lease) -> bool:
    """False: another socket holds the agent's lease now (this one must close)."""
    return bool(await redis.script(_RENEW, _keys(lease.agent_id)[:1], [lease.value, _ttl_ms()]))


async def release(lease: Lease) -> None:
    await redis.script(_RELEASE, _keys(lease.agent_id)[:1], [lease.value])
