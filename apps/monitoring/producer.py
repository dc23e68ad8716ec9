"""The one dashboard producer: a snapshot every DASHBOARD_INTERVAL seconds to every viewer.

Each web process starts an asyncio task when its first viewer connects and stops it when its last
viewer leaves. Of all those tasks (one per web process with viewers) only the holder of a Redis lock
(TTL a few intervals, extended every round) builds the snapshot; it sends it once to the channel-layer
group every viewer of every process is in, and keeps the latest in Redis for newcomers. When the
leader's viewers leave or its process dies, the lock lapses and another process with viewers takes over.
"""

import asyncio
import json
import logging
import time

from channels.layers import get_channel_layer
from django.conf import settings
from redis.exceptions import LockError, RedisError

from apps.core import redis
from apps.core.db import run_db
from apps.monitoring import services

logger = logging.getLogger(__name__)

GROUP = "monitoring.dashboard"
LOCK_KEY = "monitoring:dashboard:producer"
SNAPSHOT_KEY = "monitoring:dashboard:snapshot"


def build_snapshot_text() -> str:
    """Build the snapshot as JSON text (sync: the database readings; run on `run_db`)."""
    return json.dumps(services.dashboard_snapshot(), ensure_ascii=False, default=str)


async def cached_snapshot_text() -> str | None:
    """The latest snapshot, for a viewer who just connected (None: wait for the next round)."""
    try:
        return await redis.batched("GET", redis.key(SNAPSHOT_KEY))
    except RedisError:
        return None


class Producer:
    def __init__(self):
        self.viewers = 0
        self.task: asyncio.Task | None = None
        self.lock = None

    def viewer_joined(self) -> None:
        self.viewers += 1
        if self.task is None or self.task.done():
            self.task = asyncio.get_running_loop().create_task(self.run(), name="dashboard-producer")

    def viewer_left(self) -> None:
        self.viewers = max(0, self.viewers - 1)

    async def run(self) -> None:
        layer = get_channel_layer()
        interval = settings.DASHBOARD_INTERVAL
        try:
            while self.viewers > 0:
                started = time.monotonic()
                try:
                    if await self.hold_lock():
                        await self.produce(layer)
                except Exception:  # keep producing: one bad round (DB blip) must not stop the dashboard
                    logger.exception("dashboard producer round failed")
                await asyncio.sleep(max(0.05, interval - (time.monotonic() - started)))
        finally:
            await self.release_lock()

    async def produce(self, layer) -> None:
        text = await run_db(build_snapshot_text)
        await layer.group_send(GROUP, {"type": "dashboard.snapshot", "text": text})
        ttl = max(10, int(settings.DASHBOARD_INTERVAL * 10))
        await redis.batched("SET", redis.key(SNAPSHOT_KEY), text, "EX", ttl)

    async def hold_lock(self) -> bool:
        """True while this process is the producer: extend the lock we hold, or try to take it."""
        ttl = max(3.0, settings.DASHBOARD_INTERVAL * 3)
        if self.lock is None:
            self.lock = redis.aclient().lock(redis.key(LOCK_KEY), timeout=ttl, thread_local=False)
        try:
            if self.lock.local.token is not None:
                try:
                    await self.lock.extend(ttl, replace_ttl=True)
                    return True
                except LockError:  # it lapsed and another process may hold it now
                    self.lock.local.token = None
            return bool(await self.lock.acquire(blocking=False))
        except RedisError:
            logger.warning("dashboard producer: Redis lock unavailable", exc_info=True)
            return False

    async def release_lock(self) -> None:
        lock, self.lock = self.lock, None  # the next run takes a lock on its own event loop's client
        if lock is not None and lock.local.token is not None:
            try:
                await lock.release()
            except (LockError, RedisError):
                pass


producer = Producer()
