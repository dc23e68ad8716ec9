"""Async Redis for the gateway and the cost tracker: one `redis.asyncio` client per event loop, on the
same Redis (and key prefix) as the Django cache. None when the cache is not Redis (tests without
services): callers then use their in-process fallback."""

import asyncio
import weakref

from django.conf import settings

_clients: "weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, object]" = weakref.WeakKeyDictionary()


def redis_url() -> str | None:
    cache = settings.CACHES["default"]
    return cache["LOCATION"] if "django_redis" in cache["BACKEND"] else None


def client():
    url = redis_url()
    if url is None:
        return None
    loop = asyncio.get_running_loop()
    redis = _clients.get(loop)
    if redis is None:
        from redis.asyncio import BlockingConnectionPool, Redis

        # Blocking pool: hundreds of concurrent calls queue for a connection instead of failing.
        pool = BlockingConnectionPool.from_url(
            url, decode_responses=True, socket_timeout=5.0, socket_connect_timeout=5.0, max_connections=64, timeout=10
        )
        redis = Redis(connection_pool=pool)
        _clients[loop] = redis
    return redis


def sync_client():
    """The Django cache's (sync) Redis connection, for admin pages, reports and commands."""
    if redis_url() is None:
        return None
    from django_redis import get_redis_connection

    return get_redis_connection("default")


_shas: dict[str, str] = {}  # script source → sha (the same on every Redis)
_batches: "weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, list]" = weakref.WeakKeyDictionary()


def _sha(source: str) -> str:
    sha = _shas.get(source)
    if sha is None:
        import hashlib

        sha = _shas[source] = hashlib.sha1(source.encode()).hexdigest()  # noqa: S324 - Redis's script id
    return sha


async def script(source: str, keys: list, args: list):
    """Run a Lua script. Calls made in the same event-loop turn (hundreds of concurrent LLM calls) share
    one pipeline: one write, one read, instead of a round trip and a connection checkout each."""
    loop = asyncio.get_running_loop()
    future = loop.create_future()
    batch = _batches.get(loop)
    if batch is None:
        batch = _batches[loop] = []
        loop.call_soon(_flush, loop)
    batch.append((source, keys, args, future))
    return await future


def _flush(loop) -> None:
    batch = _batches.pop(loop, None)
    if batch:
        loop.create_task(_run(batch))


async def _run(batch: list) -> None:
    from redis.exceptions import NoScriptError

    redis = client()
    try:
        pipe = redis.pipeline(transaction=False)
        for source, keys, args, _f in batch:
            pipe.evalsha(_sha(source), len(keys), *keys, *args)
        results = await pipe.execute(raise_on_error=False)
        for (source, keys, args, future), result in zip(batch, results, strict=True):
            if isinstance(result, NoScriptError):  # Redis restarted or flushed its scripts: load, run again
                await redis.script_load(source)
                result = await redis.evalsha(_sha(source), len(keys), *keys, *args)
            if future.done():
                continue
            if isinstance(result, Exception):
                future.set_exception(result)
            else:
                future.set_result(result)
    except Exception as exc:  # noqa: BLE001 - every waiter gets the failure
        for *_rest, future in batch:
            if not future.done():
                future.set_exception(exc)


def key(*parts: object) -> str:
    return f"{settings.CACHE_KEY_PREFIX}:llm:" + ":".join(str(p) for p in parts)


def reset() -> None:
    _clients.clear()
    _batches.clear()
