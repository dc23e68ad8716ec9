"""Database work from async code.

- `run_db(fn, *args)`: a sync ORM function on a small dedicated thread pool (DB_THREADS), handing the
  thread's connection back to Django's pool afterwards: executor threads have no request cycle that would
  do it, and a plain `sync_to_async` keeps one pooled connection per thread that ever touched the database.
  Bounded, so hundreds of coroutines awaiting an LLM never hold more than DB_THREADS connections.
- `pg()`: a connection from this event loop's psycopg `AsyncConnectionPool` (PostgreSQL only;
  autocommit, server-side prepared statements): the message path's few hot statements, one round trip
  each and no thread hop (bench/README.md, issue 14).
"""

import asyncio
import threading
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from contextlib import asynccontextmanager
from typing import Any, TypeVar

from django.conf import settings
from django.db import close_old_connections, connection

T = TypeVar("T")

_executor: ThreadPoolExecutor | None = None
_executor_lock = threading.Lock()
_pools: dict[asyncio.AbstractEventLoop, asyncio.Task] = {}


def _db_executor() -> ThreadPoolExecutor:
    global _executor
    with _executor_lock:
        if _executor is None:
            _executor = ThreadPoolExecutor(settings.DB_THREADS, thread_name_prefix="wxcs-db")
        return _executor


def _job(fn: Callable[..., T], args, kwargs) -> T:
    close_old_connections()
    try:
        return fn(*args, **kwargs)
    finally:
        if not connection.in_atomic_block:
            connection.close()


async def run_db(fn: Callable[..., T], *args: Any, **kwargs: Any) -> T:
    return await asyncio.get_running_loop().run_in_executor(_db_executor(), _job, fn, args, kwargs)


def is_postgres() -> bool:
    return connection.vendor == "postgresql"


def _conninfo() -> str:
    from psycopg.conninfo import make_conninfo

    db = connection.settings_dict
    params = {
        "dbname": db["NAME"],
        "user": db.get("USER") or None,
        "password": db.get("PASSWORD") or None,
        "host": db.get("HOST") or None,
        "port": str(db["PORT"]) if db.get("PORT") else None,
    }
    return make_conninfo(**{name: value for name, value in params.items() if value})


async def _pool():
    """This loop's pool; concurrent first callers share one opening."""
    loop = asyncio.get_running_loop()
    opening = _pools.get(loop)
    if opening is None:
        opening = _pools[loop] = loop.create_task(_open_pool())
    try:
        return await asyncio.shield(opening)
    except Exception:
        _pools.pop(loop, None)  # the next caller tries again
        raise


async def _open_pool():
    from psycopg_pool import AsyncConnectionPool

    pool = AsyncConnectionPool(
        _conninfo(),
        min_size=1,
        max_size=settings.DB_ASYNC_POOL_MAX,
        timeout=settings.DB_POOL_TIMEOUT,
        open=False,
        kwargs={"autocommit": True},
        name="wxcs-async",
    )
    await pool.open()
    return pool


@asynccontextmanager
async def pg():
    """An autocommit psycopg `AsyncConnection` from this loop's pool (PostgreSQL only)."""
    pool = await _pool()
    async with pool.connection() as conn:
        yield conn


async def close_loop_pool() -> None:
    """Close the running loop's pool (a process keeps it for its lifetime; tests close theirs)."""
    opening = _pools.pop(asyncio.get_running_loop(), None)
    if opening is not None and not opening.cancelled() and opening.done() and opening.exception() is None:
        await opening.result().close()
