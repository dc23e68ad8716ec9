"""Fixed-window attempt counters in Redis (login throttling) and the client address they are keyed by.

    limits = [Limit("agent-login:id", agent_id, 5, 300), Limit("agent-login:addr", address, 20, 300)]
    retry_after = hit(limits)     # one round trip: counts the attempt under every key
    if retry_after:               # some key is over its limit: refuse, the client may retry after that
        ...

An attempt is counted before the work it guards, so a burst of concurrent requests cannot all slip under the
limit; `forgive(limits)` takes a successful attempt back. With Redis down nothing is throttled (logged): a
throttle outage must not lock every agent out.
"""

import asyncio
import logging
from dataclasses import dataclass

from django.conf import settings

from apps.core import redis

logger = logging.getLogger(__name__)

# Count, and start the window on the first hit (EXPIRE NX needs Redis 7; the embedded Redis is 6.2).
_HIT = """
local out = {}
for i, key in ipairs(KEYS) do
  local n = redis.call('INCR', key)
  if n == 1 then redis.call('EXPIRE', key, ARGV[i]) end
  local ttl = redis.call('TTL', key)
  if ttl < 0 then redis.call('EXPIRE', key, ARGV[i]); ttl = tonumber(ARGV[i]) end
  out[i] = {n, ttl}
end
return out
"""


@dataclass(frozen=True)
class Limit:
    scope: str
    subject: str
    limit: int
    window: int  # seconds

    @property
    def key(self) -> str:
        return redis.key("ratelimit", self.scope, self.subject)


def hit(limits: list[Limit]) -> int:
    """Count one attempt under every limit; seconds until the attempt would be allowed (0: allowed now)."""
    limits = [limit for limit in limits if limit.limit > 0]
    if not limits:
        return 0
    try:
        counts = redis.client().eval(
            _HIT, len(limits), *(limit.key for limit in limits), *(limit.window for limit in limits)
        )
    except Exception:
        logger.warning("login throttle unavailable (Redis); not throttling", exc_info=True)
        return 0
    over = [int(ttl) for limit, (count, ttl) in zip(limits, counts, strict=True) if int(count) > limit.limit]
    return max(1, max(over)) if over else 0


def forgive(limits: list[Limit]) -> None:
    """Take back one counted attempt (it succeeded)."""
    try:
        pipe = redis.client().pipeline(transaction=False)
        for limit in limits:
            pipe.decr(limit.key)
        pipe.execute()
    except Exception:
        logger.warning("could not take back a throttled attempt", exc_info=True)


async def retry_after(limit: Limit) -> int:
    """Seconds until `limit` lets an attempt through again (0: now), without counting one: for a cheap refusal
    in front of the code that counts."""
    if limit.limit <= 0:
        return 0
    try:
        count, ttl = await asyncio.gather(redis.batched("GET", limit.key), redis.batched("TTL", limit.key))
    except Exception:
        return 0  # the counting path decides (and logs the outage)
    return max(1, int(ttl)) if count is not None and int(count) >= limit.limit and int(ttl) > 0 else 0


def client_address(request) -> str | None:
    """The client's address of a Django request (see `address`). Also axes' AXES_CLIENT_IP_CALLABLE, so admin
    and agent logins are throttled by the same address."""
    return address(request.META.get("REMOTE_ADDR"), request.META.get("HTTP_X_FORWARDED_FOR", ""))


def address(remote_addr: str | None, forwarded_for: str) -> str | None:
    """REMOTE_ADDR, or behind CLIENT_IP_PROXY_COUNT trusted reverse proxies the address the outermost of them
    saw (X-Forwarded-For, counted from the right: what the client wrote itself is not trusted)."""
    proxies = settings.CLIENT_IP_PROXY_COUNT
    if proxies > 0:
        hops = [part.strip() for part in forwarded_for.split(",") if part.strip()]
        if len(hops) >= proxies:
            return hops[-proxies]
    return remote_addr or None
