"""The one dashboard producer: a snapshot every DASHBOARD_INTERVAL seconds to every viewer.

Each web process starts an asyncio task when its first viewer connects and stops it when its last
viewer leaves. Of all those tasks (one per web process with viewers) only the holder of a Redis lock
(TTL a few intervals, extended every round) builds the snapshot; it sends it once to the channel-layer
group every viewer of every process is in, and keeps the latest in the cache for newcomers. When the
leader's viewers leave or its process dies, the lock lapses and another process with viewers takes over.
"""

import asyncio
import json
import logging
import time
import uuid

from channels.layers import get_channel_layer
from django.conf import settings
from django.core.cache import cache
from django.db import close_old_connections
from redis.exceptions import LockError, RedisError

from apps.core.db import run_db
from apps.monitoring import services
from apps.monitoring.tracing import redis_client

logger = logging.getLogger(__name__)

GROUP = "monitoring.dashboard"
LOCK_KEY = "monitoring:dashboard:producer"
SNAPSHOT_KEY = "monitoring:dashboard:snapshot"


def build_snapshot_text() -> str:
    """Build, cache and return the snapshot as JSON text (runs in a worker thread)."""
    close_old_connections()
    try:
        text = json.dumps(services.dashboard_snapshot(), ensure_ascii=False, default=str)
    finally:
        close_old_connections()
    cache.set(SNAPSHOT_KEY, text, timeout=max(10, int(settings.DASHBOARD_INTERVAL * 10)))
    return text


def cached_snapshot_text() -> str | None:
    return cache.get(SNAPSHOT_KEY)


class Producer:
    def __init__(self):
        self.viewers = 0
        self.task: asyncio.Task | None = None
        self.lock = None
        self.token = uuid.uuid4().hex
        self.rounds = 0
        self.busy_seconds = 0.0

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
                    if await run_db(self.hold_lock):
                        text = await run_db(build_snapshot_text)
                        await layer.group_send(GROUP, {"type": "dashboard.snapshot", "text": text})
                        self.rounds += 1
                        self.busy_seconds += time.monotonic() - started
                except Exception:  # keep producing: one bad round (DB blip) must not stop the dashboard
                    logger.exception("dashboard producer round failed")
                await asyncio.sleep(max(0.05, interval - (time.monotonic() - started)))
        finally:
            await run_db(self.release_lock)

    def hold_lock(self) -> bool:
        """True while this process is the producer: extend the lock we hold, or try to take it."""
        client = redis_client()
        if client is None:  # in-process cache: no other process can be producing
            return True
        ttl = max(3.0, settings.DASHBOARD_INTERVAL * 3)
        if self.lock is None:
            self.lock = client.lock(cache.make_key(LOCK_KEY), timeout=ttl, thread_local=False)
        if self.lock.local.token is not None:
            try:
                self.lock.extend(ttl, replace_ttl=True)
                return True
            except LockError:
                self.lock.local.token = None
        try:
            return bool(self.lock.acquire(blocking=False))
        except RedisError:
            logger.warning("dashboard producer: Redis lock unavailable", exc_info=True)
            return False

    def release_lock(self) -> None:
        if self.lock is not None and self.lock.local.token is not None:
            try:
                self.lock.release()
            except (LockError, RedisError):
                pass


producer = Producer()
