"""Database work for async gateway code: a small dedicated thread pool (the ORM is sync), each job
returning its connection to the pool when done, so the event loop never blocks on the database and
no connection is held while LLM calls are in flight."""

import asyncio
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from django.db import close_old_connections, connection

_executor = ThreadPoolExecutor(max_workers=2, thread_name_prefix="llmgw-db")


def _job(fn: Callable, args, kwargs):
    try:
        return fn(*args, **kwargs)
    finally:
        if not connection.in_atomic_block:
            connection.close()
        close_old_connections()


async def run_db(fn: Callable, *args: Any, **kwargs: Any) -> Any:
    return await asyncio.get_running_loop().run_in_executor(_executor, _job, fn, args, kwargs)


class CachedLoad:
    """A value loaded from the database by `load()` (sync), cached for `ttl()` seconds.

    Async readers never stampede: while a value exists they get it at once (a stale one triggers one
    background refresh); only the very first read (or one after `invalidate()` / a `token()` change, e.g.
    a test overriding settings) waits, and concurrent first reads share a single load."""

    def __init__(self, load: Callable, ttl: Callable[[], float], token: Callable[[], Any] = lambda: None):
        import threading

        self._load, self._ttl, self._token = load, ttl, token
        self._value: Any = None
        self._at = 0.0
        self._value_token: Any = None
        self._inflight: dict = {}
        self._lock = threading.Lock()

    def _store(self, value, token) -> Any:
        import time

        with self._lock:
            self._value, self._at, self._value_token = value, time.monotonic(), token
        return value

    def _state(self) -> tuple[Any, bool]:
        """(usable value or None, fresh?)"""
        import time

        if self._value is None or self._value_token != self._token():
            return None, False
        return self._value, time.monotonic() - self._at < self._ttl()

    async def get(self) -> Any:
        value, fresh = self._state()
        if value is not None and fresh:
            return value
        loop = asyncio.get_running_loop()
        task = self._inflight.get(loop)
        if task is None:
            token = self._token()

            async def refresh():
                try:
                    return self._store(await run_db(self._load), token)
                finally:
                    self._inflight.pop(loop, None)

            task = self._inflight[loop] = loop.create_task(refresh())
        if value is not None:
            return value  # stale but usable: the refresh runs in the background
        return await asyncio.shield(task)

    def get_sync(self) -> Any:
        value, fresh = self._state()
        if value is not None and fresh:
            return value
        return self._store(self._load(), self._token())

    def invalidate(self, *args, **kwargs) -> None:
        with self._lock:
            self._value, self._at, self._value_token = None, 0.0, None
