"""Ingest: the one way a customer message enters the platform, for REST (`POST /api/v1/messages`) and the
agent's WebSocket (`message` / `messages` frames) alike: throttle, store, queue for a decision.

The throttle: an agent may send INGEST_RATE_LIMIT messages per fixed INGEST_RATE_WINDOW-second window, counted
in Redis across every web process. The request that uses the window up is still accepted; from then on each web
process that has seen it used up refuses the agent's requests whole (429 / a `throttled` error frame, with the
seconds until the window ends) without storing or counting anything. So a window takes at most one request more
than the limit per web process. The count rides on the same Redis round trip as the queueing (a separate check
before the insert would cost ≈ 0.3 ms of CPU per request: bench/README.md, issue 14).

A Redis outage never fails ingest: the message is stored and acknowledged as usual; the Redis round trip is
given up after REDIS_OPTIONAL_TIMEOUT seconds, the new messages are held and queued by this process as soon
as Redis answers again (apps.messages.queue.hold), and the throttle fails open (nothing is counted while Redis
is away: a throttle outage must not stop every agent's ingest).
"""

import asyncio
import logging
import time
from dataclasses import dataclass

from django.conf import settings

from apps.core import redis
from apps.messages import queue
from apps.messages.store import Accepted, store
from apps.messages.validation import InboundMessage

logger = logging.getLogger("wxcs.ingest")


@dataclass
class Throttled(Exception):
    limit: int
    window: int
    retry_after: int

    def __str__(self) -> str:
        return f"rate limit of {self.limit} messages per {self.window}s exceeded"


_used_up: dict[str, int] = {}  # agent id → when (epoch s) its used-up window ends: refused here until then


def _refuse_when_used_up(agent_id: str) -> None:
    ends = _used_up.get(agent_id)
    if ends is None:
        return
    now = int(time.time())
    if now >= ends:
        del _used_up[agent_id]
        return
    raise Throttled(settings.INGEST_RATE_LIMIT, settings.INGEST_RATE_WINDOW, ends - now)


async def _count_and_queue(agent_id: str, count: int, entries: list[queue.Entry]) -> None:
    """Count the request against the agent's window and queue its new messages: one Redis round trip."""
    limit, window = settings.INGEST_RATE_LIMIT, settings.INGEST_RATE_WINDOW
    if not limit:
        await queue.enqueue(entries)
        return
    now = int(time.time())
    key = redis.key("ingest-rate", agent_id, now // window)
    used, *_ = await asyncio.gather(
        redis.batched("INCRBY", key, count), redis.batched("EXPIRE", key, window + 1), queue.enqueue(entries)
    )
    if used >= limit:
        _used_up[agent_id] = (now // window + 1) * window


async def ingest(agent_id: str, items: list[InboundMessage], *, announce: bool = False) -> list[Accepted]:
    """Store validated messages (a repeated client id is answered with the stored message) and queue the new
    ones for a decision. `announce`: someone waits for the decision (`?wait=N`)."""
    _refuse_when_used_up(agent_id)
    accepted = await store().insert_messages(agent_id, items)
    new = [queue.Entry(a.message_id, a.conversation_id, announce) for a in accepted if a.created]
    try:
        async with asyncio.timeout(settings.REDIS_OPTIONAL_TIMEOUT):
            await _count_and_queue(agent_id, len(items), new)
    except Exception as exc:  # stored, so not lost: queued from here once Redis answers again
        logger.warning("%d stored messages not counted or queued (%r); held until Redis answers", len(new), exc)
        queue.hold(new)
    return accepted
