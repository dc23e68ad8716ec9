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
        from redis.asyncio import Redis

        redis = Redis.from_url(
            url, decode_responses=True, socket_timeout=2.0, socket_connect_timeout=2.0, max_connections=200
        )
        _clients[loop] = redis
    return redis


def sync_client():
    """The Django cache's (sync) Redis connection, for admin pages, reports and commands."""
    if redis_url() is None:
        return None
    from django_redis import get_redis_connection

    return get_redis_connection("default")


_shas: dict[tuple[int, str], str] = {}


async def evalsha(redis, source: str, keys: list, args: list, pipe=None):
    """EVALSHA of `source` (loaded once per client). With `pipe`: queued there (redis-py's Script objects
    would add a SCRIPT EXISTS round trip to every pipeline). Without: reloads on NOSCRIPT."""
    from redis.exceptions import NoScriptError

    sha = _shas.get((id(redis), source))
    if sha is None:
        sha = _shas[(id(redis), source)] = await redis.script_load(source)
    if pipe is not None:
        pipe.evalsha(sha, len(keys), *keys, *args)
        return None
    try:
        return await redis.evalsha(sha, len(keys), *keys, *args)
    except NoScriptError:
        _shas[(id(redis), source)] = await redis.script_load(source)
        return await redis.evalsha(_shas[(id(redis), source)], len(keys), *keys, *args)


async def execute(redis, pipe) -> list:
    """pipe.execute(), reloading the scripts once if Redis lost them (restart, SCRIPT FLUSH)."""
    from redis.exceptions import NoScriptError

    try:
        return await pipe.execute()
    except NoScriptError:
        for client_id, source in [k for k in _shas if k[0] == id(redis)]:
            _shas[(client_id, source)] = await redis.script_load(source)
        raise


def key(*parts: object) -> str:
    return f"{settings.CACHE_KEY_PREFIX}:llm:" + ":".join(str(p) for p in parts)


def reset() -> None:
    _clients.clear()
    _shas.clear()
