"""Every way the project reaches Redis, in one place.

- `client()`: the Django cache's connection (django-redis, sync), for sync code: admin, commands, beat;
- `aclient()`: a `redis.asyncio` client on the same Redis, one per event loop (`decode_responses`);
- `abroker()`: a `redis.asyncio` client on the Celery broker's Redis (the ingest path's enqueue);
- `key(*parts)`: a key under CACHE_KEY_PREFIX;
- `batched(command, *args)`: commands issued in one event-loop turn share one pipeline, i.e. one write
  and one read for hundreds of concurrent callers instead of a round trip and a connection checkout each;
- `script(source, keys, args)`: a Lua script through `batched` (EVALSHA, loaded on first NOSCRIPT).

There is always a Redis: production's, the embedded one `make run` starts, or under pytest the
machine's or an embedded one (see conftest). Callers handle Redis being *down* (an outage), never absent.
"""

import asyncio
import hashlib
import weakref
from typing import Any

from django.conf import settings

_async_clients: "weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, dict[str, Any]]" = weakref.WeakKeyDictionary()
_batches: "weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, list]" = weakref.WeakKeyDictionary()
_shas: dict[str, str] = {}


def key(*parts: object) -> str:
    return f"{settings.CACHE_KEY_PREFIX}:" + ":".join(str(part) for part in parts)


def client():
    """The Django cache's (sync) Redis connection."""
    from django_redis import get_redis_connection

    return get_redis_connection("default")


def cache_url() -> str:
    return settings.CACHES["default"]["LOCATION"]


def broker_url() -> str:
    return settings.CELERY_BROKER_URL


def aclient():
    """`redis.asyncio` client on the cache's Redis for the running event loop."""
    return _async_client(cache_url())


def abroker():
    """`redis.asyncio` client on the Celery broker's Redis for the running event loop."""
    return _async_client(broker_url())


def _async_client(url: str):
    loop = asyncio.get_running_loop()
    clients = _async_clients.setdefault(loop, {})
    redis = clients.get(url)
    if redis is None:
        from redis.asyncio import BlockingConnectionPool, Redis

        # Blocking pool: hundreds of concurrent callers queue for a connection instead of failing.
        pool = BlockingConnectionPool.from_url(
            redis_py_url(url),
            decode_responses=True,
            socket_timeout=settings.REDIS_ASYNC_SOCKET_TIMEOUT,
            socket_connect_timeout=settings.REDIS_CONNECT_TIMEOUT,
            max_connections=settings.REDIS_ASYNC_MAX_CONNECTIONS,
            timeout=10,
        )
        redis = clients[url] = Redis(connection_pool=pool)
    return redis


def redis_py_url(url: str) -> str:
    """The redis-py form of a redis://, rediss://, unix:// or kombu's redis+socket:// URL."""
    if url.startswith("redis+socket://"):  # kombu's form: redis+socket:///path?virtual_host=N
        path, _, query = url[len("redis+socket://") :].partition("?")
        params = dict(part.split("=", 1) for part in query.split("&") if "=" in part)
        return f"unix://{path}?db={params.get('virtual_host') or 0}"
    return url


async def close_loop_clients() -> None:
    """Close the running loop's clients (a process keeps them for its lifetime; tests close theirs)."""
    for redis in (_async_clients.pop(asyncio.get_running_loop(), None) or {}).values():
        await redis.aclose()


# --- one pipeline per event-loop turn ----------------------------------------------------------------
async def batched(command: str, *args: Any) -> Any:
    """Run one Redis command on the cache's Redis; every command issued in the same event-loop turn goes
    out in one pipeline. Raises the command's own error, or the connection's."""
    loop = asyncio.get_running_loop()
    future = loop.create_future()
    batch = _batches.get(loop)
    if batch is None:
        batch = _batches[loop] = []
        loop.call_soon(_flush, loop)
    batch.append((command, args, future))
    return await future


def _flush(loop: asyncio.AbstractEventLoop) -> None:
    batch = _batches.pop(loop, None)
    if batch:
        loop.create_task(_execute(batch))


async def _execute(batch: list) -> None:
    try:
        if len(batch) == 1:  # alone in its turn: a plain command costs a third less CPU than a pipeline of one
            command, args, _future = batch[0]
            results = [await aclient().execute_command(command, *args)]
        else:
            pipe = aclient().pipeline(transaction=False)
            for command, args, _future in batch:
                pipe.execute_command(command, *args)
            results = await pipe.execute(raise_on_error=False)
    except Exception as exc:  # noqa: BLE001 - the connection failed, or a lone command's own error
        results = [exc] * len(batch)
    for (_command, _args, future), result in zip(batch, results, strict=True):
        if future.done():
            continue
        if isinstance(result, Exception):
            future.set_exception(result)
        else:
            future.set_result(result)


def _sha(source: str) -> str:
    sha = _shas.get(source)
    if sha is None:
        sha = _shas[source] = hashlib.sha1(source.encode()).hexdigest()  # noqa: S324 - Redis's script id
    return sha


async def script(source: str, keys: list, args: list) -> Any:
    """Run a Lua script (batched with the loop turn's other commands)."""
    from redis.exceptions import NoScriptError

    try:
        return await batched("EVALSHA", _sha(source), len(keys), *keys, *args)
    except NoScriptError:  # first use on this Redis, or Redis restarted / flushed its scripts
        await aclient().script_load(source)
        return await batched("EVALSHA", _sha(source), len(keys), *keys, *args)
