"""Configuration that every process keeps in memory: a versioned cache with an explicit bump.

The one way a configuration change (rules, knowledge, engine switch, providers, prices, budgets, …)
reaches every web and worker process:

    RULES = VersionedCache("rules", load=compile_ruleset, check_seconds=lambda: settings.RULES_CHECK_SECONDS)

    ruleset = await RULES.get()       # readers: in memory; the Redis version key at most every check_seconds
    RULES.bump()                      # the service that wrote: this process reloads on its next read, the
                                      # others after the transaction commits (within check_seconds)

`load(version)` is a sync function that reads the database (run on `apps.core.db.run_db`). Concurrent
readers of a stale value share one load. `serve_stale(value)` may say that a value is too big to rebuild
while a reader waits (the knowledge index at 10,000 entries): that reader gets the previous value and the
load runs in the background. With Redis down the current value keeps being served and the version is
asked again at the next check; a process with no value yet loads one.
"""

import asyncio
import logging
import time
import uuid
from collections.abc import Callable
from typing import Generic, TypeVar

from django.conf import settings
from django.db import connection, transaction

from apps.core import redis
from apps.core.db import run_db

logger = logging.getLogger(__name__)

T = TypeVar("T")
UNKNOWN_VERSION = "unknown"


class VersionedCache(Generic[T]):
    def __init__(
        self,
        name: str,
        load: Callable[[str], T],
        *,
        check_seconds: Callable[[], float],
        serve_stale: Callable[[T], bool] = lambda value: False,
    ):
        self.name = name
        self._load = load
        self._check_seconds = check_seconds
        self._serve_stale = serve_stale
        self._value: T | None = None
        self._version: str | None = None
        self._checked_at = 0.0
        self._dirty = True
        self._unpublished = False  # a bump that could not reach Redis: published again on the next check
        self._loading: dict[asyncio.AbstractEventLoop, asyncio.Task] = {}

    @property
    def version_key(self) -> str:
        return redis.key("version", self.name)

    def peek(self) -> T | None:
        """The value in memory, if any, without I/O (may be stale)."""
        return self._value

    async def get(self, *, fresh: bool = False) -> T:
        """The value; `fresh`: ask Redis for the version now instead of trusting the last check for
        check_seconds (a reader that has seen evidence of a newer version)."""
        value = self._value
        recent = time.monotonic() - self._checked_at < self._check_seconds()
        if value is not None and not self._dirty and recent and not fresh:
            return value
        self._checked_at = time.monotonic()  # one check at a time: readers meanwhile take the value in memory
        version = await self._remote_version()
        if value is not None and not self._dirty and version in (self._version, UNKNOWN_VERSION):
            return value
        self._dirty = False
        task = self._load_task(version)
        if value is not None and self._serve_stale(value):
            return value
        return await asyncio.shield(task)

    def _load_task(self, version: str) -> asyncio.Task:
        loop = asyncio.get_running_loop()
        task = self._loading.get(loop)
        if task is None or task.done():
            task = self._loading[loop] = loop.create_task(self._reload(version))
            task.add_done_callback(self._log_failure)
        return task

    def _log_failure(self, task: asyncio.Task) -> None:
        if not task.cancelled() and task.exception() is not None:
            logger.error("loading %s failed", self.name, exc_info=task.exception())

    async def _reload(self, version: str) -> T:
        try:
            value = await run_db(self._load, version)
        except BaseException:
            self._dirty = True  # the next reader tries again
            raise
        finally:
            self._loading.pop(asyncio.get_running_loop(), None)
        self._value, self._version = value, version
        return value

    async def _remote_version(self) -> str:
        try:
            async with asyncio.timeout(settings.REDIS_OPTIONAL_TIMEOUT):  # a hung Redis must not hold the reader
                return await self._ask_version()
        except Exception:
            logger.warning("version check of %s failed; serving what this process has", self.name, exc_info=True)
            return UNKNOWN_VERSION

    async def _ask_version(self) -> str:
        if self._unpublished:
            await redis.batched("SET", self.version_key, uuid.uuid4().hex)
            self._unpublished = False
        version = await redis.batched("GET", self.version_key)
        if version is None:  # first use, or Redis was flushed: every process must reload
            await redis.batched("SET", self.version_key, uuid.uuid4().hex, "NX")
            version = await redis.batched("GET", self.version_key)
        return version or UNKNOWN_VERSION

    def bump(self) -> None:
        """The data changed (sync code that wrote it): reload here on the next read, and everywhere once the
        transaction commits."""
        self._dirty = True
        if connection.in_atomic_block:
            transaction.on_commit(self._publish)
        else:
            self._publish()

    def _publish(self) -> None:
        self._dirty = True
        try:
            redis.client().set(self.version_key, uuid.uuid4().hex)
        except Exception:
            self._unpublished = True
            logger.warning("could not publish a new version of %s; trying again at the next check", self.name)

    def forget(self) -> None:
        """Drop this process's value (the next read loads)."""
        self._value, self._version, self._dirty = None, None, True
