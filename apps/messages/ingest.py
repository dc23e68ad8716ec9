"""Ingest: the one way a customer message enters the platform, for REST (`POST /api/v1/messages`) and the
agent's WebSocket (`message` / `messages` frames) alike: throttle, store, enqueue for a decision.

The throttle's semantics: at most INGEST_RATE_LIMIT messages per agent per fixed INGEST_RATE_WINDOW-second
window, counted in Redis across every web process. A request whose messages would cross the limit is
refused whole (429 / a `throttled` error frame, with the seconds until the window ends); nothing of it is
stored, and it still counts. A Redis outage lets messages through (ingest never stops for the throttle).
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


async def throttle(agent_id: str, count: int) -> None:
    """Count `count` messages against the agent's window; `Throttled` when that crosses the limit."""
    limit, window = settings.INGEST_RATE_LIMIT, settings.INGEST_RATE_WINDOW
    if not limit:
        return
    now = int(time.time())
    key = redis.key("ingest-rate", agent_id, now // window)
    try:
        used, _ = await asyncio.gather(redis.batched("INCRBY", key, count), redis.batched("EXPIRE", key, window + 1))
    except Exception:
        logger.warning("ingest throttle unavailable; letting messages through", exc_info=True)
        return
    if used > limit:
        raise Throttled(limit, window, max(1, (now // window + 1) * window - now))


async def ingest(agent_id: str, items: list[InboundMessage], *, announce: bool = False) -> list[Accepted]:
    """Store validated messages (a repeated client id is answered with the stored message) and queue the new
    ones for a decision. `announce`: someone waits for the decision (`?wait=N`)."""
    await throttle(agent_id, len(items))
    accepted = await store().insert_messages(agent_id, items)
    new = [queue.Entry(a.message_id, a.conversation_id, announce) for a in accepted if a.created]
    try:
        await queue.enqueue(new)
    except Exception:  # stored, so not lost: beat's sweep queues it once it has waited PIPELINE_SWEEP_AFTER
        logger.warning("%d stored messages not queued; the sweep will", len(new), exc_info=True)
    return accepted
